#include "load_run.hpp"

#include <array>
#include <cstdio>
#include <cctype>
#include <span>
#include <memory>
#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "daemon.hpp"
#include "daemon_json.hpp"
#include "http_client.hpp"
#include "pattern.hpp"
#include "proc_stats.hpp"
#include "script_requests.hpp"
#include "sse_subscribers.hpp"
#include "status_probe.hpp"
#include "watchdog.hpp"

namespace memd::load {
namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
using Clock = std::chrono::steady_clock;
constexpr Millis kPoll{20};
constexpr std::size_t kSlowChunk = 16 * 1024;
constexpr std::size_t kSlowBufferLimit = 32 * 1024;
// The event script (script_requests.hpp): a pause between its requests (so
// it spreads through the load instead of one burst), and how long
// subscribers get after it for the last events to arrive.
constexpr Millis kScriptPace{10};
constexpr Millis kDeliveryGrace{10'000};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::uint64_t big_seed(std::size_t k) { return 0xB16B00B5ull * 0x10001ull + k; }
std::uint64_t cycle_seed(std::size_t client, std::uint64_t n) {
  return pattern_word(0xC1C1Eull, (static_cast<std::uint64_t>(client) << 40) ^ n);
}

struct IdleConn {
  explicit IdleConn(const asio::any_io_executor& ex) : conn(ex) {}
  Connection conn;
  bool watching = false;
};

struct SlowReader {
  SlowReader(const asio::any_io_executor& ex) : conn(ex, kSlowBufferLimit), timer(ex) {}
  Connection conn;
  asio::steady_timer timer;
  std::size_t big = 0;
  std::uint64_t offset = 0, length = 0;
  std::string target;
  std::optional<http::response_parser<http::buffer_body>> parser;
  std::array<std::byte, kSlowChunk> chunk{};
  bool streaming = false;
};

class LoadRun {
 public:
  LoadRun(const LoadOptions& o, Daemon& d)
      : o_(o),
        daemon_(d),
        endpoint_(asio::ip::make_address(o.host), static_cast<unsigned short>(d.port())),
        watchdog_(d, stop_, o.rss_limit, o.min_available) {}

  RunReport run();

 private:
  bool halted() const { return stop_.stopped(); }
  bool quiet() const { return halted() || closing_; }  // errors from here on are not counted
  asio::any_io_executor ex() { return ioc_.get_executor(); }

  void count(const std::string& part, const Reply& r) {
    if (quiet() || r.failure == Failure::aborted) return;
    const std::string kind = r.failure == Failure::status ? "status_" + std::to_string(r.status)
                                                          : failure_name(r.failure);
    report_.errors.add(part + "." + kind, r.detail);
  }
  // True when r is a success with the status wanted; otherwise counts it.
  bool expect(const std::string& part, Reply& r, unsigned status) {
    if (r.failure == Failure::none && r.status != status) {
      r.failure = Failure::status;
      r.detail = r.body.substr(0, 200);
    }
    if (r.failure == Failure::none) return true;
    count(part, r);
    return false;
  }

  template <class Awaitable>
  void spawn(Awaitable&& a) {
    asio::co_spawn(ioc_, std::forward<Awaitable>(a), count_throw(report_.errors));
  }

  // Polls `done` every 20 ms for at most `limit`; returns early on a stop
  // unless told not to.
  template <class Pred>
  asio::awaitable<void> wait_until(const Pred& done, Millis limit, bool stop_early = true) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    const auto end = Clock::now() + limit;
    while (!done() && !(stop_early && halted()) && Clock::now() < end) {
      t.expires_after(kPoll);
      co_await t.async_wait(kTuple);
    }
  }
  asio::awaitable<void> sleep(Millis d) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(d);
    co_await t.async_wait(kTuple);
  }

  asio::awaitable<Reply> call(Connection& conn, const RequestSpec& spec, std::uint64_t* reconnects = nullptr) {
    if (!conn.is_open()) {
      if (reconnects && conn.connects() > 0) ++*reconnects;
      Reply r;
      r.failure = co_await conn.connect(endpoint_, o_.request_timeout);
      if (r.failure != Failure::none) co_return r;
    }
    co_return co_await conn.request(spec, o_.request_timeout);
  }

  asio::awaitable<void> orchestrate();
  asio::awaitable<void> guard_deadline();
  asio::awaitable<void> progress();
  asio::awaitable<bool> wait_healthy();
  asio::awaitable<bool> setup();
  asio::awaitable<void> teardown();
  asio::awaitable<void> idle_ramp_worker();
  asio::awaitable<void> idle_watch(IdleConn& c);
  asio::awaitable<void> slow_ramp_worker();
  asio::awaitable<bool> slow_request(SlowReader& r);
  asio::awaitable<void> slow_stream(SlowReader& r);
  asio::awaitable<void> cycle_client(std::size_t client);
  asio::awaitable<void> sse_ramp();
  asio::awaitable<void> sse_script();
  asio::awaitable<void> run_script();
  asio::awaitable<bool> set_script_limit(Connection& conn, bool set);
  void close_everything();

  const LoadOptions& o_;
  Daemon& daemon_;
  tcp::endpoint endpoint_;
  StopSignal stop_;
  Watchdog watchdog_;
  asio::io_context ioc_{1};
  RunReport report_;
  bool closing_ = false;
  bool done_ = false;
  std::optional<asio::steady_timer> deadline_timer_;
  asio::steady_timer* progress_timer_ = nullptr;
  const char* phase_ = "set-up";

  std::vector<std::string> big_ids_;
  std::vector<std::string> leftover_ids_;  // cycle allocations whose DELETE failed
  std::vector<std::unique_ptr<IdleConn>> idle_;
  std::vector<std::unique_ptr<SlowReader>> slow_;
  std::vector<Connection*> cycle_conns_;
  std::size_t idle_next_ = 0, slow_next_ = 0, ramp_workers_ = 0, idle_watching_ = 0, slow_streaming_ = 0,
              cycles_live_ = 0, reuse_pending_ = 0;
  bool ramp_over_ = false, reuse_phase_ = false, cycles_stop_ = false;
  std::unique_ptr<StatusProbe> probe_;
  const ScriptSpec script_;  // owner, kind and sizes of the event script
  std::unique_ptr<SseSubscribers> subs_;
  bool script_done_ = false, script_limit_set_ = false;
};

asio::awaitable<bool> LoadRun::wait_healthy() {
  Connection conn(ex());
  RequestSpec health;
  health.target = "/healthz";
  const auto end = Clock::now() + (daemon_.spawned() ? Millis(30'000) : o_.request_timeout);
  Reply last;
  while (!halted() && Clock::now() < end) {
    last = co_await call(conn, health);
    if (last.failure == Failure::none && last.status == 200) co_return true;
    co_await sleep(Millis(100));
  }
  stop_.request(fmt::format("the daemon did not answer GET /healthz with 200 ({}{})", failure_name(last.failure),
                            last.status ? fmt::format(", status {}", last.status) : ""));
  co_return false;
}

asio::awaitable<bool> LoadRun::setup() {
  Connection conn(ex());
  for (std::size_t k = 0; k < o_.big_count && !halted(); ++k) {
    const std::string body = fmt::format(R"({{"sizeBytes":{},"deviceId":"{}","name":"memd-load-big-{}"}})",
                                         o_.big_size, o_.device, k);
    RequestSpec alloc;
    alloc.method = http::verb::post;
    alloc.target = "/api/memory/allocations";
    alloc.body = body;
    alloc.content_type = "application/json";
    Reply r = co_await call(conn, alloc);
    if (!expect("setup.allocate", r, 201)) co_return false;
    auto id = allocation_id(r.body);
    if (!id) {
      report_.errors.add("setup.allocate.body", r.body.substr(0, 200));
      co_return false;
    }
    big_ids_.push_back(*id);
  }
  std::string piece(std::min<std::uint64_t>(o_.fill_piece, o_.big_size), '\0');
  for (std::size_t k = 0; k < big_ids_.size() && !halted(); ++k) {
    for (std::uint64_t at = 0; at < o_.big_size && !halted(); at += piece.size()) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(piece.size(), o_.big_size - at));
      fill_pattern(big_seed(k), at, std::as_writable_bytes(std::span(piece.data(), n)));
      const std::string target = fmt::format("/api/memory/allocations/{}/data?offset={}", big_ids_[k], at);
      RequestSpec put;
      put.method = http::verb::put;
      put.target = target;
      put.body = std::string_view(piece.data(), n);
      put.content_type = "application/octet-stream";
      Reply r = co_await call(conn, put);
      if (r.failure == Failure::none && r.status / 100 == 2) r.status = 200;
      if (!expect("setup.write", r, 200)) co_return false;
    }
  }
  RequestSpec status;
  status.target = "/api/memory/status";
  status.body_limit = 16 << 20;
  Reply r = co_await call(conn, status);
  if (!expect("setup.status", r, 200)) co_return false;
  const auto allocated = allocated_bytes(r.body);
  if (!allocated) {
    report_.errors.add("setup.status.body", r.body.substr(0, 200));
    co_return false;
  }
  report_.allocated_after_setup = *allocated;
  co_return !halted();
}

// Frees the big allocations and any a cycle client could not free, even
// after a stop (an attached daemon should not keep them); a cycle's may
// already be gone (its DELETE timed out but was served).
asio::awaitable<void> LoadRun::teardown() {
  Connection conn(ex());
  if (script_limit_set_ && !daemon_.exited()) co_await set_script_limit(conn, false);
  std::vector<std::pair<std::string, bool>> ids;  // id, may be gone already
  for (const auto& id : big_ids_) ids.emplace_back(id, false);
  for (const auto& id : leftover_ids_) ids.emplace_back(id, true);
  for (const auto& [id, may_be_gone] : ids) {
    if (daemon_.exited()) break;
    const std::string target = "/api/memory/allocations/" + id;
    RequestSpec del;
    del.method = http::verb::delete_;
    del.target = target;
    Reply r = co_await call(conn, del);
    if (may_be_gone && r.failure == Failure::none && r.status == 404) continue;
    expect("teardown.free", r, 200);
  }
  conn.close();
}

// ---- idle connections ------------------------------------------------------

asio::awaitable<void> LoadRun::idle_ramp_worker() {
  RequestSpec health;
  health.target = "/healthz";
  while (!ramp_over_ && !halted() && idle_next_ < o_.idle) {
    ++idle_next_;
    idle_.push_back(std::make_unique<IdleConn>(ex()));
    IdleConn& c = *idle_.back();
    Reply r;
    r.failure = co_await c.conn.connect(endpoint_, o_.request_timeout);
    if (r.failure == Failure::none) r = co_await c.conn.request(health, o_.request_timeout);
    if (r.failure == Failure::none && r.status == 200 && !r.keep_alive) {
      r.failure = Failure::closed;
      r.detail = "the server closed it after /healthz";
    }
    if (expect("idle", r, 200)) {
      ++report_.idle_opened;
      c.conn.buffer().clear();
      c.conn.buffer().shrink_to_fit();
      c.watching = true;
      ++idle_watching_;
      spawn(idle_watch(c));
    } else {
      ++report_.idle_failed;
      c.conn.close();
    }
  }
  --ramp_workers_;
}

asio::awaitable<void> LoadRun::idle_watch(IdleConn& c) {
  char byte = 0;
  c.conn.stream().expires_never();
  auto [ec, n] = co_await c.conn.stream().async_read_some(asio::buffer(&byte, 1), kTuple);
  // Every watcher still running when the reuse phase starts is counted in
  // reuse_pending_, whatever ended its read.
  const bool in_reuse = reuse_phase_;
  if (in_reuse && ec == asio::error::operation_aborted && !quiet()) {
    RequestSpec health;
    health.target = "/healthz";
    Reply r = co_await c.conn.request(health, o_.request_timeout);
    if (expect("idle.reuse", r, 200)) ++report_.idle_reuse_ok;
    else if (!quiet()) ++report_.idle_reuse_failed;
  } else if (!quiet()) {
    if (ec) {
      ++report_.idle_closed_by_server;
      report_.errors.add("idle.closed_by_server", ec.message());
    } else {
      report_.errors.add("idle.unexpected_data", "bytes on an idle connection with no request");
    }
  }
  if (in_reuse) --reuse_pending_;
  c.conn.close();
  c.watching = false;
  --idle_watching_;
}

// ---- slow readers ----------------------------------------------------------

asio::awaitable<bool> LoadRun::slow_request(SlowReader& r) {
  http::request<http::empty_body> req{http::verb::get, r.target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::user_agent, "memd-load");
  req.set("X-Memd-Owner", "memd-load");
  req.keep_alive(true);
  auto& stream = r.conn.stream();
  stream.expires_after(o_.request_timeout);
  Reply fail;
  {
    auto [ec, n] = co_await http::async_write(stream, req, kTuple);
    if (ec) {
      fail.failure = classify(ec);
      fail.detail = ec.message();
    }
  }
  if (fail.failure == Failure::none) {
    r.parser.emplace();
    r.parser->header_limit(16 * 1024);
    r.parser->body_limit(r.length);
    auto [ec, n] = co_await http::async_read_header(stream, r.conn.buffer(), *r.parser, kTuple);
    if (ec) {
      fail.failure = classify(ec);
      fail.detail = ec.message();
    } else if (r.parser->get().result_int() != 200) {
      fail.failure = Failure::status;
      fail.status = r.parser->get().result_int();
    } else if (const auto length = r.parser->content_length(); length && *length != r.length) {
      fail.failure = Failure::body;
      fail.detail = fmt::format("Content-Length {} for {} bytes asked", *length, r.length);
    }
  }
  if (fail.failure == Failure::none) co_return true;
  count("slow", fail);
  r.conn.close();
  co_return false;
}

asio::awaitable<void> LoadRun::slow_ramp_worker() {
  while (!ramp_over_ && !halted() && slow_next_ < o_.slow) {
    const std::size_t i = slow_next_++;
    slow_.push_back(std::make_unique<SlowReader>(ex()));
    SlowReader& r = *slow_.back();
    // Reader i reads big allocation i % K from an offset of its own (not
    // word-aligned, so the pattern check covers every phase) to the end.
    r.big = i % big_ids_.size();
    r.offset = (static_cast<std::uint64_t>(i) * (4 * kMiB + 4099)) % (o_.big_size / 2);
    r.length = o_.big_size - r.offset;
    r.target = fmt::format("/api/memory/allocations/{}/data?offset={}&length={}", big_ids_[r.big], r.offset,
                           r.length);
    Reply c;
    c.failure = co_await r.conn.connect(endpoint_, o_.request_timeout, static_cast<int>(o_.slow_rcvbuf));
    bool ok = c.failure == Failure::none;
    if (!ok) count("slow", c);
    if (ok) ok = co_await slow_request(r);
    if (ok) {
      ++report_.slow_opened;
      r.streaming = true;
      ++slow_streaming_;
      spawn(slow_stream(r));
    } else {
      ++report_.slow_failed;
    }
  }
  --ramp_workers_;
}

asio::awaitable<void> LoadRun::slow_stream(SlowReader& r) {
  const double rate = static_cast<double>(o_.slow_rate);
  auto t0 = Clock::now();
  std::uint64_t got = 0;
  while (!quiet()) {
    if (r.parser->is_done()) {
      ++report_.slow_completed;
      if (!r.parser->keep_alive()) break;
      const bool again = co_await slow_request(r);
      if (!again) break;
      t0 = Clock::now();
      got = 0;
      continue;
    }
    // Stay under the rate: wait until the bytes taken so far are due.
    const double due = rate * seconds_since(t0);
    if (static_cast<double>(got) >= due) {
      const double wait_ms = (static_cast<double>(got) - due) / rate * 1000.0 + 1.0;
      r.timer.expires_after(Millis(static_cast<std::int64_t>(std::min(wait_ms, 200.0))));
      co_await r.timer.async_wait(kTuple);
      continue;
    }
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(r.chunk.size(), r.length - got));
    auto& body = r.parser->get().body();
    body.data = r.chunk.data();
    body.size = want;
    body.more = true;
    r.conn.stream().expires_after(o_.request_timeout);
    auto [ec, n] = co_await http::async_read_some(r.conn.stream(), r.conn.buffer(), *r.parser, kTuple);
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t took = want - r.parser->get().body().size;
    if (took > 0) {
      if (const auto bad = find_mismatch(big_seed(r.big), r.offset + got, std::span(r.chunk.data(), took))) {
        if (!quiet()) {
          ++report_.mismatches;
          report_.errors.add("slow.mismatch", fmt::format("allocation {} byte {}", r.big, r.offset + got + *bad));
        }
        break;
      }
      got += took;
      report_.slow_bytes += took;
    }
    if (ec) {
      if (!quiet()) {
        ++report_.slow_broken;
        Reply f;
        f.failure = classify(ec);
        f.detail = ec.message();
        count("slow", f);
      }
      break;
    }
  }
  r.conn.close();
  r.streaming = false;
  --slow_streaming_;
}

// ---- cycle clients ---------------------------------------------------------

asio::awaitable<void> LoadRun::cycle_client(std::size_t client) {
  Connection conn(ex());
  cycle_conns_[client] = &conn;
  std::string payload(static_cast<std::size_t>(o_.cycle_size), '\0');
  const std::string alloc_body = fmt::format(R"({{"sizeBytes":{},"deviceId":"{}","name":"memd-load-cycle"}})",
                                             o_.cycle_size, o_.device);
  RequestSpec alloc;
  alloc.method = http::verb::post;
  alloc.target = "/api/memory/allocations";
  alloc.body = alloc_body;
  alloc.content_type = "application/json";
  for (std::uint64_t n = 0; !cycles_stop_ && !halted(); ++n) {
    Reply r = co_await call(conn, alloc, &report_.cycle_reconnects);
    std::optional<std::string> id;
    if (expect("cycle.allocate", r, 201)) {
      id = allocation_id(r.body);
      if (!id && !quiet()) report_.errors.add("cycle.allocate.body", r.body.substr(0, 200));
    }
    if (!id) {
      co_await sleep(Millis(100));
      continue;
    }
    const std::string one = "/api/memory/allocations/" + *id;
    const std::string data = one + "/data";
    const std::string put_target = data + "?offset=0";
    const std::uint64_t seed = cycle_seed(client, n);
    fill_pattern(seed, 0, std::as_writable_bytes(std::span(payload)));
    RequestSpec put;
    put.method = http::verb::put;
    put.target = put_target;
    put.body = payload;
    put.content_type = "application/octet-stream";
    r = co_await call(conn, put, &report_.cycle_reconnects);
    if (r.failure == Failure::none && r.status / 100 == 2) r.status = 200;
    bool ok = expect("cycle.write", r, 200);
    if (ok) {
      RequestSpec get;
      get.target = data;
      get.body_limit = o_.cycle_size;
      r = co_await call(conn, get, &report_.cycle_reconnects);
      ok = expect("cycle.read", r, 200);
      if (ok && r.body.size() != o_.cycle_size) {
        r.failure = Failure::body;
        r.detail = fmt::format("{} bytes read back, {} written", r.body.size(), o_.cycle_size);
        ok = expect("cycle.read", r, 200);
      }
      if (ok) {
        if (const auto bad = find_mismatch(seed, 0, std::as_bytes(std::span(r.body)))) {
          if (!quiet()) {
            ++report_.mismatches;
            report_.errors.add("cycle.mismatch", fmt::format("client {} cycle {} byte {}", client, n, *bad));
          }
          ok = false;
        }
      }
    }
    RequestSpec del;
    del.method = http::verb::delete_;
    del.target = one;
    r = co_await call(conn, del, &report_.cycle_reconnects);
    const bool freed = expect("cycle.free", r, 200);
    if (!freed) leftover_ids_.push_back(*id);
    if (ok && freed) {
      ++report_.cycles;
      report_.cycle_bytes += 2 * o_.cycle_size;
    } else {
      co_await sleep(Millis(100));
    }
  }
  conn.close();
  cycle_conns_[client] = nullptr;
  --cycles_live_;
}

// ---- event subscribers and the script --------------------------------------

asio::awaitable<void> LoadRun::sse_ramp() {
  subs_ = std::make_unique<SseSubscribers>(script_subscribers(o_, endpoint_, script_));
  subs_->start();
  auto settled = [this] { return subs_->settled(); };
  co_await wait_until(settled, o_.ramp_timeout);
  if (halted()) co_return;
  if (subs_->refused_status() == 404)
    stop_.request("GET /api/memory/events answered 404: this daemon has no event stream");
  else if (subs_->connected() < o_.sse_subscribers)
    stop_.request(fmt::format("{} of {} event subscribers connected within --ramp-timeout ({} failed{})",
                              subs_->connected(), o_.sse_subscribers, subs_->failed(),
                              subs_->refused_status() ? fmt::format(", status {}", subs_->refused_status()) : ""));
}

// Sets (or removes) the script owner's limit, as the admin.
asio::awaitable<bool> LoadRun::set_script_limit(Connection& conn, bool set) {
  std::string body;
  const RequestSpec limit = script_limit_request(script_, set, body);
  Reply r = co_await call(conn, limit);
  const bool ok = expect(set ? "sse.script.limit" : "sse.script.unlimit", r, 200);
  if (ok) script_limit_set_ = set;
  co_return ok;
}

asio::awaitable<void> LoadRun::sse_script() {
  co_await run_script();
  script_done_ = true;
}

// Each request asks for more than the limit, so the daemon refuses it with
// quota_exceeded and publishes one limit_reached event naming its size.
asio::awaitable<void> LoadRun::run_script() {
  // Into the load, not at its first instant.
  co_await sleep(std::min<Millis>(o_.duration / 4, Millis(2'000)));
  if (halted()) co_return;
  Connection conn(ex());
  if (!co_await set_script_limit(conn, true)) co_return;
  for (std::uint64_t i = 0; i < o_.sse_script && !halted(); ++i) {
    std::string body;
    const RequestSpec alloc = script_allocation_request(script_, i, o_.device, body);
    subs_->note_sent(i);
    Reply r = co_await call(conn, alloc);
    ++report_.script_sent;
    if (r.failure == Failure::none && r.status == 201) {
      // The limit did not hold: give the allocation back, and say so.
      if (!quiet()) report_.errors.add("sse.script.not_refused", r.body.substr(0, 200));
      if (const auto id = allocation_id(r.body)) {
        const std::string target = "/api/memory/allocations/" + *id;
        RequestSpec del;
        del.method = http::verb::delete_;
        del.target = target;
        del.owner = script_.owner;
        Reply d = co_await call(conn, del);
        expect("sse.script.free", d, 200);
      }
    } else if (expect("sse.script.allocate", r, 507)) {
      if (r.body.find("\"quota_exceeded\"") != std::string::npos) ++report_.script_refused;
      else if (!quiet()) report_.errors.add("sse.script.code", r.body.substr(0, 200));
    }
    co_await sleep(kScriptPace);
  }
  co_await set_script_limit(conn, false);
  conn.close();
}

// ---- orchestration ---------------------------------------------------------

void LoadRun::close_everything() {
  closing_ = true;
  for (auto& c : idle_) c->conn.close();
  for (auto& r : slow_) {
    r->conn.close();
    r->timer.cancel();
  }
  for (auto* c : cycle_conns_)
    if (c) c->close();
}

asio::awaitable<void> LoadRun::guard_deadline() {
  auto& t = deadline_timer_.emplace(ioc_);
  t.expires_after(o_.deadline);
  auto [ec] = co_await t.async_wait(kTuple);
  if (ec || done_) co_return;
  stop_.request(fmt::format("deadline: the run passed --deadline {} ms", o_.deadline.count()));
  close_everything();
  t.expires_after(Millis(15'000));
  auto [ec2] = co_await t.async_wait(kTuple);
  if (!ec2 && !done_) ioc_.stop();  // something ignored the close: give up on it
}

// A line on stderr every --progress-interval, so a long run shows where it is.
asio::awaitable<void> LoadRun::progress() {
  const auto t0 = Clock::now();
  asio::steady_timer t(ioc_);
  progress_timer_ = &t;
  while (!done_) {
    t.expires_after(o_.progress_interval);
    auto [ec] = co_await t.async_wait(kTuple);
    if (ec || done_) break;
    std::fprintf(stderr,
                 "memd-load: %6.1f s  %-9s idle %zu open / %llu failed  slow %zu reading / %llu failed  cycles %llu  "
                 "errors %llu  daemon RSS %s\n",
                 seconds_since(t0), phase_, idle_watching_, static_cast<unsigned long long>(report_.idle_failed),
                 slow_streaming_, static_cast<unsigned long long>(report_.slow_failed),
                 static_cast<unsigned long long>(report_.cycles),
                 static_cast<unsigned long long>(report_.errors.total()), format_size(watchdog_.last_rss()).c_str());
  }
  progress_timer_ = nullptr;
}

asio::awaitable<void> LoadRun::orchestrate() {
  const auto t_start = Clock::now();
  auto rss_now = [this] { return watchdog_.last_rss(); };
  bool ready = co_await wait_healthy();
  auto t = Clock::now();
  if (ready) {
    ready = co_await setup();
    if (!ready) stop_.request("set-up failed (see errors)");
  }
  report_.setup_s = seconds_since(t);
  co_await sleep(Millis(50));  // one watchdog read after set-up
  report_.rss_after_setup = rss_now();

  // Idle ramp, then slow ramp: each launches what it can within its timeout.
  auto ramps_done = [this] { return ramp_workers_ == 0; };
  if (ready && !halted() && o_.idle > 0) {
    phase_ = "idle ramp";
    t = Clock::now();
    ramp_over_ = false;
    const auto workers = std::min<std::uint64_t>(o_.connect_concurrency, o_.idle);
    ramp_workers_ = workers;
    for (std::uint64_t w = 0; w < workers; ++w) spawn(idle_ramp_worker());
    co_await wait_until(ramps_done, o_.ramp_timeout);
    ramp_over_ = true;
    if (halted()) close_everything();
    co_await wait_until(ramps_done, 2 * o_.request_timeout + Millis(1000), false);
    report_.idle_ramp_s = seconds_since(t);
    co_await sleep(Millis(50));
    report_.rss_after_idle = rss_now();
  }
  if (ready && !halted() && o_.slow > 0) {
    phase_ = "slow ramp";
    t = Clock::now();
    ramp_over_ = false;
    const auto workers = std::min<std::uint64_t>({o_.connect_concurrency, o_.slow, 64});
    ramp_workers_ = workers;
    for (std::uint64_t w = 0; w < workers; ++w) spawn(slow_ramp_worker());
    co_await wait_until(ramps_done, o_.ramp_timeout);
    ramp_over_ = true;
    if (halted()) close_everything();
    co_await wait_until(ramps_done, 2 * o_.request_timeout + Millis(1000), false);
    report_.slow_ramp_s = seconds_since(t);
    co_await sleep(Millis(50));
    report_.rss_after_slow = rss_now();
  }
  if (ready && !halted() && o_.sse_subscribers > 0) {
    phase_ = "sse ramp";
    t = Clock::now();
    co_await sse_ramp();
    report_.sse_ramp_s = seconds_since(t);
    co_await sleep(Millis(50));
    report_.rss_after_sse = rss_now();
  }
  report_.idle_not_attempted = o_.idle - idle_next_;
  report_.slow_not_attempted = o_.slow - slow_next_;

  // The load: cycles and the probe, with everything above held open.
  if (ready && !halted()) {
    phase_ = "load";
    t = Clock::now();
    probe_ = std::make_unique<StatusProbe>(endpoint_, o_.probe_interval, o_.request_timeout, daemon_.pid());
    probe_->start();
    cycle_conns_.assign(o_.clients, nullptr);
    cycles_live_ = o_.clients;
    for (std::size_t c = 0; c < o_.clients; ++c) spawn(cycle_client(c));
    if (subs_) spawn(sse_script());
    auto never = [] { return false; };
    co_await wait_until(never, o_.duration);
    if (subs_) {
      // The load goes on until the script has run and its events reached
      // every subscriber (or a grace passed: the missing are the finding).
      phase_ = "sse script";
      auto script_over = [this] { return script_done_; };
      co_await wait_until(script_over, o_.sse_script * (kScriptPace + o_.request_timeout) + Millis(1'000));
      auto delivered = [this] { return subs_->finished() >= subs_->connected(); };
      co_await wait_until(delivered, kDeliveryGrace);
      phase_ = "load";
    }
    report_.slow_open_at_load_end = slow_streaming_;
    report_.rss_at_load_end = rss_now();
    cycles_stop_ = true;
    auto cycles_done = [this] { return cycles_live_ == 0; };
    co_await wait_until(cycles_done, 4 * o_.request_timeout + Millis(1000));
    probe_->stop();
    report_.load_s = seconds_since(t);
  }
  // Every idle connection still open answers once more on the same socket.
  if (ready && !halted() && idle_watching_ > 0) {
    phase_ = "reuse";
    reuse_phase_ = true;
    reuse_pending_ = idle_watching_;
    for (auto& c : idle_)
      if (c->watching) c->conn.cancel();
    auto reused = [this] { return reuse_pending_ == 0; };
    co_await wait_until(reused, o_.request_timeout + Millis(1000));
  }
  phase_ = "closing";
  if (subs_) subs_->stop();  // before anything else closes: a stream ending now would be a finding
  close_everything();
  auto all_closed = [this] { return idle_watching_ == 0 && slow_streaming_ == 0 && cycles_live_ == 0; };
  co_await wait_until(all_closed, Millis(5'000), false);
  closing_ = false;  // teardown's own errors count (unless stopped)
  phase_ = "teardown";
  co_await teardown();
  closing_ = true;
  report_.total_s = seconds_since(t_start);
  done_ = true;
  if (deadline_timer_) deadline_timer_->cancel();
  if (progress_timer_) progress_timer_->cancel();
}

RunReport LoadRun::run() {
  report_.daemon = fmt::format("{} pid {} on port {}", daemon_.spawned() ? "spawned" : "attached", daemon_.pid(),
                               daemon_.port());
  report_.rss_limit = o_.rss_limit;
  idle_.reserve(o_.idle);
  slow_.reserve(o_.slow);
  watchdog_.start();
  spawn(guard_deadline());
  if (o_.progress_interval.count() > 0) spawn(progress());
  spawn(orchestrate());
  ioc_.run();
  if (probe_) probe_->stop();
  if (subs_) {
    subs_->stop();
    report_.sse = subs_->summary();
  }
  watchdog_.finish();

  report_.watchdog_tripped = watchdog_.tripped();
  report_.peak_rss = std::max(watchdog_.last_hwm(), watchdog_.max_rss());
  if (const auto mem = read_proc_memory(daemon_.pid())) report_.peak_rss = std::max(report_.peak_rss, mem->hwm_bytes);
  report_.min_mem_available = watchdog_.min_available_seen();
  report_.peak_rss_minus_allocated =
      static_cast<std::int64_t>(report_.peak_rss) - static_cast<std::int64_t>(report_.allocated_after_setup);
  if (probe_) {
    const auto& p = probe_->results();
    report_.keep_alive = summarize(p.keep_alive_ns);
    report_.fresh = summarize(p.fresh_ns);
    report_.errors.merge(p.errors);
    report_.probe_reconnects = p.reconnects;
    report_.allocated_max = p.allocated_max;
    report_.sampled_rss_minus_allocated = p.rss_minus_allocated_max;
    if (report_.fresh.p50_ms > 0) report_.ratio_p50 = report_.keep_alive.p50_ms / report_.fresh.p50_ms;
    if (report_.fresh.p99_ms > 0) report_.ratio_p99 = report_.keep_alive.p99_ms / report_.fresh.p99_ms;
  }
  if (stop_.stopped()) report_.stop_reason = stop_.reason();

  // Why the run failed, if it did.
  auto& f = report_.failures;
  if (!report_.stop_reason.empty()) f.push_back("stopped: " + report_.stop_reason);
  if (report_.errors.total() > 0) f.push_back(fmt::format("{} errors ({} timeouts)", report_.errors.total(),
                                                          report_.errors.timeouts()));
  if (report_.mismatches > 0) f.push_back(fmt::format("{} byte mismatches", report_.mismatches));
  if (report_.idle_opened < o_.idle)
    f.push_back(fmt::format("{} of {} idle connections opened", report_.idle_opened, o_.idle));
  if (report_.slow_opened < o_.slow)
    f.push_back(fmt::format("{} of {} slow readers opened", report_.slow_opened, o_.slow));
  if (o_.clients > 0 && report_.cycles == 0) f.push_back("no cycle completed");
  if (report_.keep_alive.count == 0 || report_.fresh.count == 0) f.push_back("the status probe got no answer");
  if (report_.sse) script_failures(*report_.sse, report_.script_refused, o_.sse_script, f);
  if (o_.max_status_p99_ms && report_.keep_alive.p99_ms > *o_.max_status_p99_ms)
    f.push_back(fmt::format("status p99 {:.2f} ms over --max-status-p99 {} ms", report_.keep_alive.p99_ms,
                            *o_.max_status_p99_ms));
  if (o_.max_overhead && report_.peak_rss_minus_allocated > static_cast<std::int64_t>(*o_.max_overhead))
    f.push_back(fmt::format("peak RSS - allocated {} over --max-overhead {}",
                            format_size(static_cast<std::uint64_t>(report_.peak_rss_minus_allocated)),
                            format_size(*o_.max_overhead)));
  if (o_.max_keepalive_ratio && report_.ratio_p99 > *o_.max_keepalive_ratio)
    f.push_back(fmt::format("keep-alive/fresh p99 {:.2f} over --max-keepalive-ratio {}", report_.ratio_p99,
                            *o_.max_keepalive_ratio));
  return report_;
}

}  // namespace

RunReport run_load(const LoadOptions& options, Daemon& daemon) {
  LoadRun run(options, daemon);
  return run.run();
}

}  // namespace memd::load
