#include "sse_subscribers.hpp"

#include <array>
#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "protocol/sse.hpp"

namespace memd::load {
namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kChunk = 4 * 1024;         // read per call; a thousand streams hold 4 MiB
constexpr std::size_t kMaxLine = 64 * 1024;      // an event line longer than this is the daemon's fault
constexpr std::uint32_t kHeaderLimit = 16 * 1024;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct SseSubscribers::Subscriber {
  Subscriber(const asio::any_io_executor& ex, const ScriptSpec& spec) : conn(ex), reader(kMaxLine), check(spec) {}
  Connection conn;
  memd::SseReader reader;
  ScriptCheck check;
  std::optional<http::response_parser<http::buffer_body>> parser;
  std::array<char, kChunk> chunk{};
  std::vector<memd::SseMessage> messages;
  bool connected = false, broken = false, finished = false;
};

SseSubscribers::SseSubscribers(SubscriberOptions options)
    : options_(std::move(options)), sent_ns_(options_.script.count) {
  subs_.reserve(options_.count);
  for (std::uint64_t k = 0; k < options_.count; ++k)
    subs_.push_back(std::make_unique<Subscriber>(ioc_.get_executor(), options_.script));
}

SseSubscribers::~SseSubscribers() { stop(); }

void SseSubscribers::start() {
  if (thread_.joinable()) return;
  work_.emplace(ioc_.get_executor());
  const auto launchers = std::min<std::uint64_t>(std::max<std::uint64_t>(1, options_.concurrency), options_.count);
  for (std::uint64_t w = 0; w < launchers; ++w) asio::co_spawn(ioc_, launcher(), asio::detached);
  thread_ = std::thread([this] { ioc_.run(); });
}

void SseSubscribers::note_sent(std::uint64_t i) {
  if (i < sent_ns_.size()) sent_ns_[i].store(now_ns(), std::memory_order_relaxed);
}

void SseSubscribers::stop() {
  if (!thread_.joinable()) return;
  asio::post(ioc_, [this] {
    stopping_ = true;
    for (auto& s : subs_) s->conn.close();
  });
  work_.reset();
  thread_.join();
}

asio::awaitable<void> SseSubscribers::launcher() {
  while (!stopping_ && next_ < subs_.size()) {
    Subscriber& s = *subs_[next_++];
    co_await open(s);
  }
}

asio::awaitable<void> SseSubscribers::open(Subscriber& s) {
  auto fail = [&](std::string why) {
    if (first_failure_.empty()) first_failure_ = std::move(why);
    s.conn.close();
    ++failed_;
  };
  const Failure f = co_await s.conn.connect(options_.endpoint, options_.timeout);
  if (f != Failure::none) {
    fail(fmt::format("connect: {}", failure_name(f)));
    co_return;
  }
  http::request<http::empty_body> req{http::verb::get, options_.target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::user_agent, "memd-load");
  req.set(http::field::accept, "text/event-stream");
  req.set("X-Memd-Owner", "memd-load");
  req.keep_alive(true);
  auto& stream = s.conn.stream();
  stream.expires_after(options_.timeout);
  {
    auto [ec, n] = co_await http::async_write(stream, req, kTuple);
    if (ec) {
      fail(fmt::format("request: {}", ec.message()));
      co_return;
    }
  }
  s.parser.emplace();
  s.parser->header_limit(kHeaderLimit);
  s.parser->body_limit(boost::none);  // a stream: as long as the run
  {
    auto [ec, n] = co_await http::async_read_header(stream, s.conn.buffer(), *s.parser, kTuple);
    if (ec) {
      fail(fmt::format("response header: {}", ec.message()));
      co_return;
    }
  }
  const auto& head = s.parser->get();
  if (head.result_int() != 200) {
    unsigned none = 0;
    refused_status_.compare_exchange_strong(none, head.result_int());
    fail(fmt::format("GET {} answered {}", options_.target, head.result_int()));
    co_return;
  }
  if (!head[http::field::content_type].starts_with("text/event-stream")) {
    fail(fmt::format("GET {} answered {} content", options_.target, std::string(head[http::field::content_type])));
    co_return;
  }
  s.connected = true;
  ++connected_;
  stream.expires_never();
  asio::co_spawn(ioc_, this->stream(s), asio::detached);
}

asio::awaitable<void> SseSubscribers::stream(Subscriber& s) {
  auto& parser = *s.parser;
  while (!stopping_ && !parser.is_done()) {
    parser.get().body().data = s.chunk.data();
    parser.get().body().size = s.chunk.size();
    auto [ec, n] = co_await http::async_read_some(s.conn.stream(), s.conn.buffer(), parser, kTuple);
    if (ec == http::error::need_buffer) ec = {};
    const std::size_t took = s.chunk.size() - parser.get().body().size;
    if (took > 0) {
      const auto at = now_ns();
      s.messages.clear();
      auto fed = s.reader.feed(std::string_view(s.chunk.data(), took), s.messages);
      for (const auto& m : s.messages) s.check.on_message(m.id, m.event, m.data, at);
      if (!fed) {
        s.check.stream_error(fed.error().message);
        break;
      }
      if (s.check.complete()) finish(s);
    }
    if (ec) break;
  }
  if (!stopping_) s.broken = true;
  finish(s);
  s.conn.close();
}

void SseSubscribers::finish(Subscriber& s) {
  if (s.finished) return;
  s.finished = true;
  ++finished_;
}

SseSummary SseSubscribers::summary() const {
  std::vector<SubscriberOutcome> outcomes;
  outcomes.reserve(subs_.size());
  for (const auto& s : subs_) outcomes.push_back({s->connected ? &s->check : nullptr, s->broken});
  std::vector<std::int64_t> sent;
  sent.reserve(sent_ns_.size());
  for (const auto& t : sent_ns_) sent.push_back(t.load(std::memory_order_relaxed));
  SseSummary out = summarize_subscribers(outcomes, options_.script.count, sent);
  out.refused_status = refused_status_.load();
  if (!first_failure_.empty()) out.problems.insert(out.problems.begin(), "connecting: " + first_failure_);
  return out;
}

}  // namespace memd::load
