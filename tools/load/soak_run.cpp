#include "soak_run.hpp"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <span>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "daemon.hpp"
#include "daemon_json.hpp"
#include "http_client.hpp"
#include "pattern.hpp"
#include "proc_stats.hpp"
#include "script_requests.hpp"
#include "sse_subscribers.hpp"

namespace memd::load {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr Millis kPoll{5};           // transfer and model polling
constexpr Millis kDeliveryGrace{10'000};
// Sizes from one byte to several MiB, odd ones included, so pool classes,
// huge blocks and unaligned tails all take part.
constexpr std::uint64_t kSizes[] = {1, 7, 4096 + 13, 65536 + 1, 1 << 20, (3 << 20) + 5, 8 << 20};
// Two model files: clients of even index load the first, of odd index the
// second, so identical components are shared between models.
constexpr std::uint64_t kModelFiles = 2;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
std::uint64_t model_seed(std::uint64_t file) { return 0x50A4'0000ull + file; }

struct Place {
  std::string device, type;
  std::string name() const { return device + "/" + type; }
};

// What a client must give back if a scenario breaks off.
struct Held {
  std::vector<std::string> allocations;
  std::string session;
  std::string model;
};

struct Client {
  Client(const asio::any_io_executor& ex, std::size_t i, std::uint64_t seed)
      : conn(ex), index(i), owner(fmt::format("memd-load-soak-{}", i)), rng(seed) {}
  Connection conn;
  std::size_t index;
  std::string owner;
  SoakRandom rng;
  std::uint64_t n = 0;  // scenarios started
  Held held;
};

class SoakRun {
 public:
  SoakRun(const LoadOptions& o, Daemon& d, std::string model_root)
      : o_(o),
        daemon_(d),
        model_root_(std::move(model_root)),
        endpoint_(asio::ip::make_address(o.host), static_cast<unsigned short>(d.port())) {}
  SoakReport run();

 private:
  bool halted() const { return stop_.stopped(); }

  template <class Awaitable>
  void spawn(Awaitable&& a) {
    asio::co_spawn(ioc_, std::forward<Awaitable>(a), count_throw(report_.errors, &stop_));
  }
  asio::awaitable<void> sleep(Millis d) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(d);
    co_await t.async_wait(kTuple);
  }
  template <class Pred>
  asio::awaitable<void> wait_until(const Pred& done, Millis limit) {
    const auto end = Clock::now() + limit;
    while (!done() && !halted() && Clock::now() < end) co_await sleep(Millis(20));
  }

  void error(const std::string& key, const std::string& detail) {
    if (!halted()) report_.errors.add(key, detail);
  }
  // One request; true when it was answered with `want`. Anything else is an
  // error of `op`, with the answer's first bytes.
  //
  // g++ 12 destroys some temporaries of a co_await expression twice
  // (http_client.hpp): every argument here is a view or a named variable, so
  // callers build targets in named strings first.
  asio::awaitable<bool> ask(Connection& conn, std::string_view op, const RequestSpec& spec, unsigned want,
                            Reply& r) {
    if (!conn.is_open()) {
      r = Reply{};
      r.failure = co_await conn.connect(endpoint_, o_.request_timeout);
      if (r.failure != Failure::none) {
        error(fmt::format("{}.connect", op), r.detail);
        co_return false;
      }
    }
    r = co_await conn.request(spec, o_.request_timeout);
    ++report_.requests;
    if (r.failure == Failure::none && r.status == want) {
      ++report_.ops[std::string(op)];
      co_return true;
    }
    if (r.failure == Failure::none)
      error(fmt::format("{}.status_{}", op, r.status), fmt::format("{} {}: {}", http::to_string(spec.method),
                                                                   spec.target, r.body.substr(0, 240)));
    else
      error(fmt::format("{}.{}", op, failure_name(r.failure)), fmt::format("{}: {}", spec.target, r.detail));
    co_return false;
  }
  // A JSON answer's body, or null (counted as a body error of `op`).
  json body_of(std::string_view op, const Reply& r) {
    auto doc = json::parse(r.body, nullptr, false);
    if (!doc.is_object()) {
      error(fmt::format("{}.body", op), r.body.substr(0, 240));
      return json();
    }
    return doc;
  }
  bool bad_body(std::string_view op, const std::string& why) {
    error(fmt::format("{}.body", op), why);
    return false;
  }

  // The spec views target and body: both must outlive the request.
  static RequestSpec json_request(http::verb method, std::string_view target, std::string_view body,
                                  const Client& c) {
    RequestSpec s;
    s.method = method;
    s.target = target;
    s.body = body;
    s.content_type = "application/json";
    s.owner = c.owner;
    return s;
  }
  static RequestSpec plain(http::verb method, std::string_view target, const Client& c) {
    RequestSpec s;
    s.method = method;
    s.target = target;
    s.owner = c.owner;
    s.body_limit = 64 << 20;
    return s;
  }

  // The steps scenarios are made of; each false on an error (counted).
  asio::awaitable<std::optional<std::string>> allocate(Client& c, const Place& p, std::uint64_t size,
                                                       bool exportable = false, const std::string& session = {});
  asio::awaitable<bool> write(Client& c, const std::string& id, std::uint64_t seed, std::uint64_t size);
  asio::awaitable<bool> read_check(Client& c, const std::string& id, std::uint64_t offset, std::uint64_t length,
                                   std::uint64_t seed, std::uint64_t seed_offset, bool admin = false);
  asio::awaitable<bool> free(Client& c, const std::string& id);
  asio::awaitable<bool> wait_transfer(Client& c, std::string_view op, const json& started);

  asio::awaitable<bool> rw(Client& c);
  asio::awaitable<bool> transfer(Client& c);
  asio::awaitable<bool> move(Client& c);
  asio::awaitable<bool> copy(Client& c);
  asio::awaitable<bool> exportable(Client& c);
  asio::awaitable<bool> status(Client& c);
  asio::awaitable<bool> model(Client& c);
  asio::awaitable<bool> session(Client& c);
  asio::awaitable<void> give_back(Client& c);
  asio::awaitable<void> client(std::size_t index);

  asio::awaitable<bool> discover();
  asio::awaitable<std::optional<DaemonHoldings>> holdings();
  asio::awaitable<void> list_leftovers();
  asio::awaitable<bool> set_script_limit(Connection& conn, bool set);
  asio::awaitable<void> script();
  asio::awaitable<void> monitor();
  asio::awaitable<void> orchestrate();

  const Place& any_place(Client& c) { return places_[c.rng.below(places_.size())]; }
  // Another place than `p` (another device when there is one).
  const Place& other_place(Client& c, const Place& p) {
    std::vector<const Place*> others;
    for (const auto& q : places_)
      if (q.device != p.device) others.push_back(&q);
    if (others.empty())
      for (const auto& q : places_)
        if (q.type != p.type) others.push_back(&q);
    if (others.empty()) return p;
    return *others[c.rng.below(others.size())];
  }
  std::uint64_t any_size(Client& c) { return kSizes[c.rng.below(std::size(kSizes))]; }
  std::uint64_t seed_of(const Client& c, std::uint64_t k) const {
    return pattern_word(o_.seed ^ 0x50A6'0000'0000ull, (static_cast<std::uint64_t>(c.index) << 40) ^ (c.n << 4) ^ k);
  }

  const LoadOptions& o_;
  Daemon& daemon_;
  const std::string model_root_;
  tcp::endpoint endpoint_;
  asio::io_context ioc_{1};
  StopSignal stop_;
  SoakReport report_;
  std::vector<Place> places_;
  std::string exportable_device_;  // a host device: exportable allocations there are memfds
  bool clients_stop_ = false, done_ = false, script_done_ = false, script_limit_set_ = false;
  std::size_t clients_live_ = 0;
  const ScriptSpec script_spec_{};
  std::unique_ptr<SseSubscribers> subs_;
  std::vector<std::uint8_t> model_scratch_;
};

// ---- steps -----------------------------------------------------------------

asio::awaitable<std::optional<std::string>> SoakRun::allocate(Client& c, const Place& p, std::uint64_t size,
                                                              bool exportable, const std::string& session) {
  const std::string body =
      fmt::format(R"({{"sizeBytes":{},"deviceId":"{}","memoryType":"{}","name":"soak-{}-{}"{}}})", size, p.device,
                  p.type, c.index, c.n, exportable ? R"(,"exportable":true)" : "");
  auto spec = json_request(http::verb::post, "/api/memory/allocations", body, c);
  spec.session = session;
  Reply r;
  if (!co_await ask(c.conn, "allocate", spec, 201, r)) co_return std::nullopt;
  auto id = allocation_id(r.body);
  const json doc = body_of("allocate", r);
  if (!id || doc.is_null() || doc.value("sizeBytes", json()) != size || doc.value("deviceId", json()) != p.device ||
      doc.value("memoryType", json()) != p.type || doc.value("owner", json()) != c.owner) {
    bad_body("allocate", fmt::format("asked {} bytes on {} for {}: {}", size, p.name(), c.owner, r.body.substr(0, 240)));
    // Whatever it made is not ours to trust: give it back if it has an id.
    if (id) c.held.allocations.push_back(*id);
    co_return std::nullopt;
  }
  c.held.allocations.push_back(*id);
  co_return id;
}

asio::awaitable<bool> SoakRun::write(Client& c, const std::string& id, std::uint64_t seed, std::uint64_t size) {
  std::string payload(size, '\0');
  fill_pattern(seed, 0, std::as_writable_bytes(std::span(payload)));
  const std::string target = fmt::format("/api/memory/allocations/{}/data?offset=0", id);
  auto spec = plain(http::verb::put, target, c);
  spec.body = payload;
  spec.content_type = "application/octet-stream";
  Reply r;
  if (!co_await ask(c.conn, "write", spec, 200, r)) co_return false;
  const json doc = body_of("write", r);
  if (doc.is_null() || doc.value("bytesWritten", json()) != size)
    co_return bad_body("write", fmt::format("{} bytes sent: {}", size, r.body.substr(0, 240)));
  co_return true;
}

asio::awaitable<bool> SoakRun::read_check(Client& c, const std::string& id, std::uint64_t offset,
                                          std::uint64_t length, std::uint64_t seed, std::uint64_t seed_offset,
                                          bool admin) {
  const std::string target = fmt::format("/api/memory/allocations/{}/data?offset={}&length={}", id, offset, length);
  auto spec = plain(http::verb::get, target, c);
  spec.admin = admin;
  Reply r;
  if (!co_await ask(c.conn, "read", spec, 200, r)) co_return false;
  if (r.body.size() != length)
    co_return bad_body("read", fmt::format("{}: {} bytes for {} asked", target, r.body.size(), length));
  if (const auto bad = find_mismatch(seed, seed_offset, std::as_bytes(std::span(r.body)))) {
    ++report_.mismatches;
    error("read.mismatch", fmt::format("{}: byte {} differs", target, *bad));
    co_return false;
  }
  report_.bytes_checked += length;
  co_return true;
}

asio::awaitable<bool> SoakRun::free(Client& c, const std::string& id) {
  Reply r;
  const std::string target = "/api/memory/allocations/" + id;
  const bool ok = co_await ask(c.conn, "free", plain(http::verb::delete_, target, c), 200, r);
  if (ok) std::erase(c.held.allocations, id);
  co_return ok;
}

// Polls a transfer (the answer that started it) until it ends; true when it
// ended Completed with every byte done.
asio::awaitable<bool> SoakRun::wait_transfer(Client& c, std::string_view op, const json& started) {
  const auto id = started.value("transferId", json());
  if (!id.is_string() || !is_guid(id.get<std::string>()))
    co_return bad_body(op, "no transferId: " + started.dump().substr(0, 240));
  const std::string target = "/api/memory/transfers/" + id.get<std::string>();
  const std::string status_op = fmt::format("{}_status", op);
  const auto end = Clock::now() + o_.request_timeout;
  while (Clock::now() < end) {
    Reply r;
    if (!co_await ask(c.conn, status_op, plain(http::verb::get, target, c), 200, r)) co_return false;
    const json doc = body_of(status_op, r);
    if (doc.is_null()) co_return false;
    const auto st = doc.value("status", std::string());
    if (st == "Completed") {
      if (doc.value("bytesDone", json()) != doc.value("sizeBytes", json()))
        co_return bad_body(status_op, "Completed short: " + r.body.substr(0, 240));
      co_return true;
    }
    if (st != "Pending" && st != "InProgress")
      co_return bad_body(status_op, "ended " + st + ": " + r.body.substr(0, 240));
    co_await sleep(kPoll);
  }
  error(status_op + ".timeout", target + " did not complete within --request-timeout");
  co_return false;
}

// ---- scenarios ---------------------------------------------------------------

asio::awaitable<bool> SoakRun::rw(Client& c) {
  const Place& p = any_place(c);
  const std::uint64_t size = any_size(c), seed = seed_of(c, 0);
  auto id = co_await allocate(c, p, size);
  if (!id || !co_await write(c, *id, seed, size)) co_return false;
  // The whole, then a piece from an odd offset.
  if (!co_await read_check(c, *id, 0, size, seed, 0)) co_return false;
  if (size > 3) {
    const std::uint64_t at = size / 3, len = size - at - 1;
    if (!co_await read_check(c, *id, at, len, seed, at)) co_return false;
  }
  co_return co_await free(c, *id);
}

asio::awaitable<bool> SoakRun::transfer(Client& c) {
  const Place& from = any_place(c);
  const Place& to = other_place(c, from);
  const std::uint64_t size = any_size(c), seed = seed_of(c, 1), at = c.rng.below(4097);
  auto a = co_await allocate(c, from, size);
  if (!a || !co_await write(c, *a, seed, size)) co_return false;
  auto b = co_await allocate(c, to, size + at);
  if (!b) co_return false;
  const std::string body =
      fmt::format(R"({{"sourceAllocationId":"{}","destinationAllocationId":"{}","destinationOffset":{}}})", *a, *b, at);
  Reply r;
  if (!co_await ask(c.conn, "transfer", json_request(http::verb::post, "/api/memory/transfers", body, c), 202, r))
    co_return false;
  const json doc = body_of("transfer", r);
  if (doc.is_null() || doc.value("sizeBytes", json()) != size)
    co_return bad_body("transfer", "sizeBytes: " + r.body.substr(0, 240));
  if (!co_await wait_transfer(c, "transfer", doc)) co_return false;
  if (!co_await read_check(c, *b, at, size, seed, 0)) co_return false;
  co_return co_await free(c, *a) && co_await free(c, *b);
}

asio::awaitable<bool> SoakRun::move(Client& c) {
  const Place& from = any_place(c);
  const Place& to = other_place(c, from);
  if (to.device == from.device && to.type == from.type) co_return co_await rw(c);  // nowhere to go
  const std::uint64_t size = any_size(c), seed = seed_of(c, 2);
  auto id = co_await allocate(c, from, size);
  if (!id || !co_await write(c, *id, seed, size)) co_return false;
  const std::string body = fmt::format(R"({{"deviceId":"{}","memoryType":"{}"}})", to.device, to.type);
  Reply r;
  const std::string one = "/api/memory/allocations/" + *id, target = one + "/move";
  if (!co_await ask(c.conn, "move", json_request(http::verb::post, target, body, c), 202, r)) co_return false;
  const json doc = body_of("move", r);
  if (doc.is_null() || !co_await wait_transfer(c, "move", doc)) co_return false;
  if (!co_await ask(c.conn, "details", plain(http::verb::get, one, c), 200, r))
    co_return false;
  const json details = body_of("details", r);
  if (details.is_null() || details.value("deviceId", json()) != to.device ||
      details.value("memoryType", json()) != to.type)
    co_return bad_body("details", fmt::format("moved to {}: {}", to.name(), r.body.substr(0, 240)));
  if (!co_await read_check(c, *id, 0, size, seed, 0)) co_return false;
  co_return co_await free(c, *id);
}

asio::awaitable<bool> SoakRun::copy(Client& c) {
  const Place& from = any_place(c);
  const Place& to = c.rng.below(2) ? any_place(c) : other_place(c, from);
  const std::uint64_t size = std::max<std::uint64_t>(any_size(c), 2), seed = seed_of(c, 3);
  const std::uint64_t src_at = c.rng.below(size / 2), dst_at = c.rng.below(4097);
  const std::uint64_t n = 1 + c.rng.below(size - src_at);
  auto a = co_await allocate(c, from, size);
  if (!a || !co_await write(c, *a, seed, size)) co_return false;
  auto b = co_await allocate(c, to, dst_at + n);
  if (!b) co_return false;
  const std::string body = fmt::format(
      R"({{"sourceAllocationId":"{}","destinationAllocationId":"{}","sourceOffset":{},"destinationOffset":{},"sizeBytes":{}}})",
      *a, *b, src_at, dst_at, n);
  Reply r;
  if (!co_await ask(c.conn, "copy", json_request(http::verb::post, "/api/memory/copy", body, c), 200, r))
    co_return false;
  const json doc = body_of("copy", r);
  if (doc.is_null() || doc.value("bytesCopied", json()) != n)
    co_return bad_body("copy", fmt::format("bytesCopied for {}: {}", n, r.body.substr(0, 240)));
  if (!co_await read_check(c, *b, dst_at, n, seed, src_at)) co_return false;
  co_return co_await free(c, *a) && co_await free(c, *b);
}

asio::awaitable<bool> SoakRun::exportable(Client& c) {
  if (exportable_device_.empty()) co_return co_await rw(c);
  const std::uint64_t size = any_size(c), seed = seed_of(c, 4);
  const Place place{exportable_device_, "VRAM"};
  auto id = co_await allocate(c, place, size, true);
  if (!id || !co_await write(c, *id, seed, size)) co_return false;
  const std::string base = fmt::format("/api/memory/allocations/{}/export", *id);
  const std::string body = fmt::format(R"({{"owners":["{}"]}})", c.owner);
  Reply r;
  if (!co_await ask(c.conn, "export", json_request(http::verb::post, base, body, c), 201, r)) co_return false;
  const json doc = body_of("export", r);
  const auto eid = doc.is_null() ? json() : doc.value("exportId", json());
  if (!eid.is_string() || !is_guid(eid.get<std::string>()) || doc.value("allocationId", json()) != *id ||
      doc.value("released", json()) != false)
    co_return bad_body("export", r.body.substr(0, 240));
  const std::string release = base + "/" + eid.get<std::string>();
  if (!co_await ask(c.conn, "export_release", plain(http::verb::delete_, release, c), 200, r)) co_return false;
  const json rel = body_of("export_release", r);
  if (rel.is_null() || rel.value("released", json()) != true)
    co_return bad_body("export_release", r.body.substr(0, 240));
  // A second release: the export is gone.
  if (!co_await ask(c.conn, "export_release_again", plain(http::verb::delete_, release, c), 404, r))
    co_return false;
  if (r.body.find("\"not_found\"") == std::string::npos)
    co_return bad_body("export_release_again", r.body.substr(0, 240));
  if (!co_await read_check(c, *id, 0, size, seed, 0)) co_return false;
  co_return co_await free(c, *id);
}

asio::awaitable<bool> SoakRun::status(Client& c) {
  Reply r;
  struct Read {
    const char* op;
    const char* target;
    const char* key;
  };
  static constexpr Read kReads[] = {{"status", "/api/memory/status", "devices"},
                                    {"usage", "/api/memory/usage", "total"},
                                    {"sessions", "/api/sessions", "sessions"},
                                    {"allocations", "/api/memory/allocations?limit=20", "items"},
                                    {"devices", "/api/memory/devices", "devices"}};
  for (const auto& read : kReads) {
    if (!co_await ask(c.conn, read.op, plain(http::verb::get, read.target, c), 200, r)) co_return false;
    const json doc = body_of(read.op, r);
    if (doc.is_null() || !doc.contains(read.key))
      co_return bad_body(read.op, fmt::format("no '{}': {}", read.key, r.body.substr(0, 240)));
  }
  co_return true;
}

asio::awaitable<bool> SoakRun::model(Client& c) {
  if (model_root_.empty()) co_return co_await rw(c);
  const std::uint64_t file = c.index % kModelFiles;
  const std::string name = fmt::format("soak-{}", c.index);
  // A GPU-like device (models land in VRAM; cpu holds none).
  std::vector<const Place*> gpus;
  for (const auto& q : places_)
    if (q.device != "cpu" && q.type == "VRAM") gpus.push_back(&q);
  if (gpus.empty()) co_return co_await rw(c);
  const Place& p = *gpus[c.rng.below(gpus.size())];
  const std::string body = fmt::format(R"({{"name":"{}","path":"soak-{}.safetensors","deviceId":"{}"}})", name, file,
                                       p.device);
  Reply r;
  c.held.model = name;
  if (!co_await ask(c.conn, "model_load", json_request(http::verb::post, "/api/memory/models", body, c), 202, r))
    co_return false;
  const std::string one = "/api/memory/models/" + name;
  const auto end = Clock::now() + o_.request_timeout;
  json doc;
  while (true) {
    if (!co_await ask(c.conn, "model_status", plain(http::verb::get, one, c), 200, r)) co_return false;
    doc = body_of("model_status", r);
    if (doc.is_null()) co_return false;
    const auto state = doc.value("state", std::string());
    if (state == "Loaded") break;
    if (state != "Loading") co_return bad_body("model_status", "state " + state + ": " + r.body.substr(0, 240));
    if (Clock::now() > end) {
      error("model_status.timeout", name + " still Loading after --request-timeout");
      co_return false;
    }
    co_await sleep(kPoll);
  }
  const auto components = doc.value("components", json());
  if (!components.is_array() || components.size() != 1 || !components[0].is_object())
    co_return bad_body("model_status", "components: " + r.body.substr(0, 240));
  const auto aid = components[0].value("allocationId", json());
  if (!aid.is_string() || !is_guid(aid.get<std::string>()) ||
      components[0].value("sizeBytes", json()) != o_.model_size)
    co_return bad_body("model_status", "component: " + components[0].dump().substr(0, 240));
  // The weight as it landed: the component's bytes are the tensor's (the
  // admin reads memd:models' allocation).
  const std::string weight = aid.get<std::string>();
  if (!co_await read_check(c, weight, 0, o_.model_size, model_seed(file), 0, true)) co_return false;
  if (!co_await ask(c.conn, "model_unload", plain(http::verb::delete_, one, c), 200, r)) co_return false;
  c.held.model.clear();
  co_return true;
}

asio::awaitable<bool> SoakRun::session(Client& c) {
  Reply r;
  if (!co_await ask(c.conn, "session_open",
                    json_request(http::verb::post, "/api/sessions", R"({"ttlSeconds":600})", c), 201, r))
    co_return false;
  const json doc = body_of("session_open", r);
  const auto sid = doc.is_null() ? json() : doc.value("sessionId", json());
  if (!sid.is_string() || !is_guid(sid.get<std::string>()) || doc.value("owner", json()) != c.owner)
    co_return bad_body("session_open", r.body.substr(0, 240));
  c.held.session = sid.get<std::string>();
  const std::uint64_t size = any_size(c), seed = seed_of(c, 5);
  auto id = co_await allocate(c, any_place(c), size, false, c.held.session);
  if (!id || !co_await write(c, *id, seed, size) || !co_await read_check(c, *id, 0, size, seed, 0)) co_return false;
  const std::string close = "/api/sessions/" + c.held.session;
  if (!co_await ask(c.conn, "session_close", plain(http::verb::delete_, close, c), 200, r)) co_return false;
  c.held.session.clear();
  const json closed = body_of("session_close", r);
  const auto ids = closed.is_null() ? json() : closed.value("allocationIds", json());
  if (closed.value("releasedAllocations", json()) != 1 || !ids.is_array() || ids.size() != 1 || ids[0] != *id ||
      closed.value("releasedBytes", json()) != size)
    co_return bad_body("session_close", r.body.substr(0, 240));
  std::erase(c.held.allocations, *id);
  // Closing freed it.
  const std::string one = "/api/memory/allocations/" + *id;
  if (!co_await ask(c.conn, "freed_by_session", plain(http::verb::get, one, c), 404, r)) co_return false;
  co_return true;
}

// After a scenario broke off: give back what it held (a 404 is fine: the
// failed request may have been served).
asio::awaitable<void> SoakRun::give_back(Client& c) {
  Held held = std::move(c.held);
  c.held = {};
  Reply r;
  if (!held.model.empty()) {
    const std::string target = "/api/memory/models/" + held.model;
    for (int i = 0; i < 50 && !daemon_.exited(); ++i) {  // a load still running answers conflict
      if (!c.conn.is_open() && co_await c.conn.connect(endpoint_, o_.request_timeout) != Failure::none) break;
      auto spec = plain(http::verb::delete_, target, c);
      r = co_await c.conn.request(spec, o_.request_timeout);
      if (r.failure != Failure::none || r.status != 409) break;
      co_await sleep(Millis(100));
    }
  }
  if (!held.session.empty() && !daemon_.exited()) {
    if (c.conn.is_open() || co_await c.conn.connect(endpoint_, o_.request_timeout) == Failure::none) {
      const std::string target = "/api/sessions/" + held.session;
      auto spec = plain(http::verb::delete_, target, c);
      r = co_await c.conn.request(spec, o_.request_timeout);
    }
  }
  for (const auto& id : held.allocations) {
    if (daemon_.exited()) break;
    if (!c.conn.is_open() && co_await c.conn.connect(endpoint_, o_.request_timeout) != Failure::none) break;
    const std::string target = "/api/memory/allocations/" + id;
    auto spec = plain(http::verb::delete_, target, c);
    r = co_await c.conn.request(spec, o_.request_timeout);
  }
}

asio::awaitable<void> SoakRun::client(std::size_t index) {
  Client c(ioc_.get_executor(), index, o_.seed + index);
  while (!clients_stop_ && !halted()) {
    const Scenario s = pick_scenario(o_.mix, c.rng.below(o_.mix.total()));
    ++c.n;
    bool ok = false;
    switch (s) {
      case Scenario::rw: ok = co_await rw(c); break;
      case Scenario::transfer: ok = co_await transfer(c); break;
      case Scenario::move: ok = co_await move(c); break;
      case Scenario::copy: ok = co_await copy(c); break;
      case Scenario::exportable: ok = co_await exportable(c); break;
      case Scenario::status: ok = co_await status(c); break;
      case Scenario::model: ok = co_await model(c); break;
      case Scenario::session: ok = co_await session(c); break;
    }
    if (ok) {
      ++report_.scenarios[scenario_name(s)];
    } else {
      co_await give_back(c);
      co_await sleep(Millis(100));
    }
  }
  c.conn.close();
  --clients_live_;
}

// ---- the daemon ----------------------------------------------------------------

// Where allocations may go: every device and memory type the daemon lists.
asio::awaitable<bool> SoakRun::discover() {
  Connection conn(ioc_.get_executor());
  Client admin(ioc_.get_executor(), 0, 0);
  Reply r;
  for (int i = 0; i < 300 && !halted(); ++i) {  // up to 30 s for a daemon that is starting
    if (conn.is_open() || co_await conn.connect(endpoint_, o_.request_timeout) == Failure::none) {
      RequestSpec health;
      health.target = "/healthz";
      r = co_await conn.request(health, o_.request_timeout);
      if (r.failure == Failure::none && r.status == 200) break;
    }
    co_await sleep(Millis(100));
  }
  if (!co_await ask(conn, "devices", plain(http::verb::get, "/api/memory/devices", admin), 200, r)) co_return false;
  const json doc = body_of("devices", r);
  const auto devices = doc.is_null() ? json() : doc.value("devices", json());
  if (!devices.is_array()) co_return bad_body("devices", r.body.substr(0, 240));
  for (const auto& d : devices) {
    const auto id = d.value("deviceId", json());
    const auto types = d.value("memoryTypes", json());
    if (!id.is_string() || !types.is_array()) co_return bad_body("devices", d.dump().substr(0, 240));
    for (const auto& t : types)
      if (t.is_string()) places_.push_back({id.get<std::string>(), t.get<std::string>()});
    if (exportable_device_.empty() && id.get<std::string>().starts_with("host:")) exportable_device_ = id.get<std::string>();
  }
  conn.close();
  if (places_.empty()) co_return bad_body("devices", "no device with a memory type");
  for (const auto& p : places_) report_.places.push_back(p.name());
  co_return true;
}

asio::awaitable<std::optional<DaemonHoldings>> SoakRun::holdings() {
  Connection conn(ioc_.get_executor());
  Client admin(ioc_.get_executor(), 0, 0);
  std::string bodies[4];
  const char* targets[] = {"/api/memory/status", "/api/memory/usage", "/api/sessions", "/api/memory/models"};
  for (int i = 0; i < 4; ++i) {
    auto spec = plain(http::verb::get, targets[i], admin);
    spec.admin = true;  // every owner's sessions
    spec.owner = "memd-load-soak";
    Reply r;
    if (!co_await ask(conn, "holdings", spec, 200, r)) co_return std::nullopt;
    bodies[i] = std::move(r.body);
  }
  conn.close();
  std::string why;
  auto h = parse_holdings(bodies[0], bodies[1], bodies[2], bodies[3], why);
  if (!h) error("holdings.body", why);
  co_return h;
}

// For the report: what is still allocated (every owner's, newest first).
asio::awaitable<void> SoakRun::list_leftovers() {
  Connection conn(ioc_.get_executor());
  RequestSpec list;
  list.target = "/api/memory/allocations?limit=20";
  list.admin = true;
  list.body_limit = 16 << 20;
  Reply r;
  if (!co_await ask(conn, "leftovers", list, 200, r)) co_return;
  conn.close();
  const json doc = body_of("leftovers", r);
  const auto items = doc.is_null() ? json() : doc.value("items", json());
  if (!items.is_array()) co_return;
  for (const auto& a : items) {
    if (!a.is_object()) continue;
    report_.leftovers.push_back(fmt::format("{} owner {} name '{}' {} bytes on {} {} created {}",
                                            a.value("allocationId", ""), a.value("owner", ""), a.value("name", ""),
                                            a.value("sizeBytes", json()).dump(), a.value("deviceId", ""),
                                            a.value("memoryType", ""), a.value("createdAt", "")));
  }
}

asio::awaitable<bool> SoakRun::set_script_limit(Connection& conn, bool set) {
  std::string body;
  const RequestSpec limit = script_limit_request(script_spec_, set, body);
  Reply r;
  const bool ok = co_await ask(conn, set ? "script_limit" : "script_unlimit", limit, 200, r);
  if (ok) script_limit_set_ = set;
  co_return ok;
}

// The event script, spread over the run: K allocations over the limit, each
// refused with quota_exceeded (one limit_reached event each).
asio::awaitable<void> SoakRun::script() {
  Connection conn(ioc_.get_executor());
  const std::uint64_t k = o_.sse_script;
  // Event i is due at (i + 1) / (k + 1) of the run, from the start, so the
  // requests' own time does not push the script past the clients' end.
  const auto t0 = Clock::now();
  if (co_await set_script_limit(conn, true)) {
    for (std::uint64_t i = 0; i < k && !halted(); ++i) {
      const auto due = t0 + o_.duration * static_cast<std::int64_t>(i + 1) / static_cast<std::int64_t>(k + 1);
      if (const auto now = Clock::now(); due > now)
        co_await sleep(std::chrono::duration_cast<Millis>(due - now));
      std::string body;
      const RequestSpec alloc = script_allocation_request(script_spec_, i, places_.front().device, body);
      subs_->note_sent(i);
      ++report_.script_sent;
      Reply r;
      if (co_await ask(conn, "script_allocate", alloc, 507, r)) {
        if (r.body.find("\"quota_exceeded\"") != std::string::npos) ++report_.script_refused;
        else error("script_allocate.code", r.body.substr(0, 240));
      } else if (r.failure == Failure::none && r.status == 201) {
        if (const auto id = allocation_id(r.body)) {  // the limit did not hold: give it back
          RequestSpec del;
          del.method = http::verb::delete_;
          const std::string target = "/api/memory/allocations/" + *id;
          del.target = target;
          del.owner = script_spec_.owner;
          co_await ask(conn, "script_free", del, 200, r);
        }
      }
    }
    co_await set_script_limit(conn, false);
  }
  conn.close();
  script_done_ = true;
}

// RSS every second, and a progress line every --progress.
asio::awaitable<void> SoakRun::monitor() {
  const auto t0 = Clock::now();
  auto next_progress = t0 + o_.progress_interval;
  while (!done_) {
    co_await sleep(Millis(1'000));
    if (done_) break;
    const auto mem = read_proc_memory(daemon_.pid());
    if (!mem) {
      stop_.request("the daemon is gone");
      break;
    }
    report_.rss_peak = std::max({report_.rss_peak, mem->rss_bytes, mem->hwm_bytes});
    if (o_.progress_interval.count() > 0 && Clock::now() >= next_progress) {
      next_progress += o_.progress_interval;
      std::uint64_t scenarios = 0;
      for (const auto& [k, v] : report_.scenarios) scenarios += v;
      std::fprintf(stderr, "memd-load soak: %7.1f s  scenarios %llu  requests %llu  errors %llu  daemon RSS %s\n",
                   seconds_since(t0), static_cast<unsigned long long>(scenarios),
                   static_cast<unsigned long long>(report_.requests),
                   static_cast<unsigned long long>(report_.errors.total()), format_size(mem->rss_bytes).c_str());
    }
  }
}

asio::awaitable<void> SoakRun::orchestrate() {
  const auto t_start = Clock::now();
  if (!co_await discover()) {
    stop_.request("could not read the daemon's devices (see errors)");
  } else if (auto start = co_await holdings(); !start) {
    stop_.request("could not read the daemon's holdings at the start (see errors)");
  } else {
    report_.start = start;
    if (const auto mem = read_proc_memory(daemon_.pid())) report_.rss_start = mem->rss_bytes;
    if (o_.sse_subscribers > 0) {
      subs_ = std::make_unique<SseSubscribers>(script_subscribers(o_, endpoint_, script_spec_));
      subs_->start();
      auto settled = [this] { return subs_->settled(); };
      co_await wait_until(settled, o_.ramp_timeout);
      if (subs_->connected() < o_.sse_subscribers)
        stop_.request(fmt::format("{} of {} event subscribers connected", subs_->connected(), o_.sse_subscribers));
    }
    const auto t = Clock::now();
    if (!halted()) {
      clients_live_ = o_.clients;
      for (std::size_t k = 0; k < o_.clients; ++k) spawn(client(k));
      if (subs_) spawn(script());
      auto never = [] { return false; };
      co_await wait_until(never, o_.duration);
      if (subs_) {
        auto script_over = [this] { return script_done_; };
        co_await wait_until(script_over, o_.request_timeout * 2);
        auto delivered = [this] { return subs_->finished() >= subs_->connected(); };
        co_await wait_until(delivered, kDeliveryGrace);
      }
    }
    clients_stop_ = true;
    auto stopped = [this] { return clients_live_ == 0; };
    const auto end = Clock::now() + 8 * o_.request_timeout;
    while (clients_live_ > 0 && Clock::now() < end) co_await sleep(Millis(20));
    report_.duration_s = seconds_since(t);
    (void)stopped;
    if (clients_live_ > 0) stop_.request(fmt::format("{} clients did not stop", clients_live_));
    if (subs_) subs_->stop();
    if (script_limit_set_ && !daemon_.exited()) {
      Connection conn(ioc_.get_executor());
      co_await set_script_limit(conn, false);
    }
    // Transfers and model loads end on the daemon's threads; give them a
    // moment before the leak check, then read until it holds (or 5 s).
    if (!halted()) {
      for (int i = 0; i < 50; ++i) {
        report_.end = co_await holdings();
        if (!report_.end || compare_holdings(*report_.start, *report_.end).empty()) break;
        co_await sleep(Millis(100));
      }
      if (report_.end && !compare_holdings(*report_.start, *report_.end).empty()) co_await list_leftovers();
      if (const auto mem = read_proc_memory(daemon_.pid())) {
        report_.rss_end = mem->rss_bytes;
        report_.rss_peak = std::max({report_.rss_peak, mem->rss_bytes, mem->hwm_bytes});
      }
    }
  }
  report_.total_s = seconds_since(t_start);
  done_ = true;
}

SoakReport SoakRun::run() {
  report_.daemon = fmt::format("{} pid {} on port {}", daemon_.spawned() ? "spawned" : "attached", daemon_.pid(),
                               daemon_.port());
  report_.clients = o_.clients;
  report_.subscribers = o_.sse_subscribers;
  report_.mix = format_soak_mix(o_.mix);
  report_.seed = o_.seed;
  spawn(monitor());
  spawn(orchestrate());
  ioc_.run();
  if (subs_) {
    subs_->stop();
    report_.sse = subs_->summary();
  }
  if (stop_.stopped()) report_.stop_reason = stop_.reason();

  auto& f = report_.failures;
  if (!report_.stop_reason.empty()) f.push_back("stopped: " + report_.stop_reason);
  if (report_.errors.total() > 0) f.push_back(fmt::format("{} errors", report_.errors.total()));
  if (report_.mismatches > 0) f.push_back(fmt::format("{} byte mismatches", report_.mismatches));
  if (o_.clients > 0 && report_.scenarios.empty()) f.push_back("no scenario completed");
  if (report_.start && report_.end) {
    report_.leaks = compare_holdings(*report_.start, *report_.end);
    report_.leaked_bytes = static_cast<std::int64_t>(report_.end->allocated_bytes) -
                           static_cast<std::int64_t>(report_.start->allocated_bytes);
    for (const auto& l : report_.leaks) f.push_back("leak: " + l);
  } else if (report_.stop_reason.empty()) {
    f.push_back("the daemon's holdings could not be read at the end");
  }
  if (report_.sse) script_failures(*report_.sse, report_.script_refused, o_.sse_script, f);
  if (o_.max_rss_growth > 0 && report_.rss_end > report_.rss_start + o_.max_rss_growth)
    f.push_back(fmt::format("daemon RSS grew {} (over --max-rss-growth {})",
                            format_size(report_.rss_end - report_.rss_start), format_size(o_.max_rss_growth)));
  return report_;
}

// ---- the report ------------------------------------------------------------------

json holdings_json(const std::optional<DaemonHoldings>& h) {
  if (!h) return nullptr;
  return {{"allocations", h->allocations},          {"allocatedBytes", h->allocated_bytes},
          {"poolAllocatedBytes", h->pool_bytes},    {"usageAllocations", h->usage_allocations},
          {"requestedBytes", h->requested_bytes},   {"sessions", h->sessions},
          {"transfersOpen", h->transfers_open},     {"modelsHolding", h->models_holding},
          {"modelCacheBytes", h->model_cache_bytes}, {"stagingBuffersInUse", h->staging_in_use},
          {"stagingIdleBuffers", h->staging_idle}};
}

std::uint64_t scenario_total(const SoakReport& r) {
  std::uint64_t n = 0;
  for (const auto& [k, v] : r.scenarios) n += v;
  return n;
}

}  // namespace

SoakReport run_soak(const LoadOptions& options, Daemon& daemon, const std::string& model_root) {
  SoakRun run(options, daemon, model_root);
  return run.run();
}

std::string soak_report_text(const LoadOptions&, const SoakReport& r) {
  std::string out;
  auto line = [&](const std::string& s) { out += s + "\n"; };
  line(fmt::format("memd-load soak: {} clients, {} event subscribers, {:.1f} s, daemon {}", r.clients,
                   r.subscribers, r.duration_s, r.daemon));
  line(fmt::format("  mix {}  seed {}  places {}", r.mix, r.seed, fmt::join(r.places, ", ")));
  const double secs = r.duration_s > 0 ? r.duration_s : 1;
  line(fmt::format("  scenarios {} ({:.1f}/s), requests {} ({:.1f}/s), bytes checked {}", scenario_total(r),
                   static_cast<double>(scenario_total(r)) / secs, r.requests, static_cast<double>(r.requests) / secs,
                   format_size(r.bytes_checked)));
  std::string s;
  for (const auto& [k, v] : r.scenarios) s += fmt::format(" {}={}", k, v);
  line("  scenarios by kind:" + s);
  s.clear();
  for (const auto& [k, v] : r.ops) s += fmt::format(" {}={}", k, v);
  line("  operations:" + s);
  line(fmt::format("  errors {}  mismatches {}", r.errors.total(), r.mismatches));
  for (const auto& e : r.errors.examples) line("    " + e);
  if (r.start && r.end)
    line(fmt::format("  holdings start/end: allocations {}/{}  allocated {}/{}  pool {}/{}  sessions {}/{}  "
                     "transfers open {}/{}  models holding {}/{}  staging in use {}/{} (idle, a cache: {}/{})  "
                     "leaked bytes {}",
                     r.start->allocations, r.end->allocations, r.start->allocated_bytes, r.end->allocated_bytes,
                     r.start->pool_bytes, r.end->pool_bytes, r.start->sessions, r.end->sessions,
                     r.start->transfers_open, r.end->transfers_open, r.start->models_holding, r.end->models_holding,
                     r.start->staging_in_use, r.end->staging_in_use, r.start->staging_idle, r.end->staging_idle,
                     r.leaked_bytes));
  for (const auto& l : r.leftovers) line("    left: " + l);
  line(fmt::format("  daemon RSS start {}  peak {}  end {}  (end - start {:+} bytes)", format_size(r.rss_start),
                   format_size(r.rss_peak), format_size(r.rss_end),
                   static_cast<std::int64_t>(r.rss_end) - static_cast<std::int64_t>(r.rss_start)));
  if (r.sse)
    line(fmt::format("  events: {} of {} subscribers with all {} script events in order ({} sent, {} refused), "
                     "{} other events, {} lost, delivery p99 {:.2f} ms",
                     r.sse->complete, r.sse->wanted, r.sse->expected, r.script_sent, r.script_refused,
                     r.sse->other_events, r.sse->lost, r.sse->delivery.p99_ms));
  if (!r.daemon_end.empty()) line("  daemon ended: " + r.daemon_end);
  line(r.ok() ? "PASS" : "FAIL");
  for (const auto& f : r.failures) line("  " + f);
  return out;
}

std::string soak_report_json(const LoadOptions&, const SoakReport& r) {
  json doc;
  doc["mode"] = "soak";
  doc["ok"] = r.ok();
  doc["failures"] = r.failures;
  doc["daemon"] = r.daemon;
  doc["daemonEnd"] = r.daemon_end;
  doc["stopReason"] = r.stop_reason;
  doc["clients"] = r.clients;
  doc["subscribers"] = r.subscribers;
  doc["mix"] = r.mix;
  doc["seed"] = r.seed;
  doc["places"] = r.places;
  doc["durationSeconds"] = r.duration_s;
  doc["totalSeconds"] = r.total_s;
  doc["scenarios"] = r.scenarios;
  doc["scenariosTotal"] = scenario_total(r);
  doc["operations"] = r.ops;
  doc["requests"] = r.requests;
  const double secs = r.duration_s > 0 ? r.duration_s : 1;
  doc["requestsPerSecond"] = static_cast<double>(r.requests) / secs;
  doc["scenariosPerSecond"] = static_cast<double>(scenario_total(r)) / secs;
  doc["bytesChecked"] = r.bytes_checked;
  doc["mismatches"] = r.mismatches;
  doc["errors"] = {{"total", r.errors.total()}, {"byKind", r.errors.by_kind}, {"examples", r.errors.examples}};
  doc["holdingsStart"] = holdings_json(r.start);
  doc["holdingsEnd"] = holdings_json(r.end);
  doc["leaks"] = r.leaks;
  doc["leakedBytes"] = r.leaked_bytes;
  doc["leftovers"] = r.leftovers;
  doc["rss"] = {{"startBytes", r.rss_start}, {"peakBytes", r.rss_peak}, {"endBytes", r.rss_end},
                {"growthBytes", static_cast<std::int64_t>(r.rss_end) - static_cast<std::int64_t>(r.rss_start)}};
  if (r.sse) {
    const auto& e = *r.sse;
    doc["events"] = {{"subscribers", e.wanted},     {"connected", e.connected}, {"complete", e.complete},
                     {"expected", e.expected},      {"missing", e.missing},     {"misordered", e.misordered},
                     {"broken", e.broken},          {"lost", e.lost},           {"otherEvents", e.other_events},
                     {"scriptSent", r.script_sent}, {"scriptRefused", r.script_refused},
                     {"deliveryP99Ms", e.delivery.p99_ms}, {"problems", e.problems}};
  }
  return doc.dump(2) + "\n";
}

}  // namespace memd::load
