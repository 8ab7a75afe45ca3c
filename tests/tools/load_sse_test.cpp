// memd-load's event subscribers (issue 14): the script check under hostile
// and out-of-order streams, and the subscribers against a fake event stream
// (a plain socket server in this test that writes SSE frames, chunked or
// read to the end), so the client side is proven without the daemon's
// GET /api/memory/events. The end-to-end run is the `load_sse` ctest.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "load_options.hpp"
#include "sse_script.hpp"
#include "sse_subscribers.hpp"

namespace memd::load {
namespace {

using namespace std::chrono_literals;

ScriptSpec spec(std::uint64_t count) {
  ScriptSpec s;
  s.count = count;
  return s;
}

// One event as the daemon frames it (event.hpp's wire object).
std::string frame(std::uint64_t sequence, const std::string& kind, const std::string& owner, std::uint64_t size) {
  nlohmann::json data = {{"event", kind},
                         {"sequence", sequence},
                         {"deviceId", "host:0"},
                         {"time", "2026-12-06T21:04:02.123Z"},
                         {"data",
                          {{"owner", owner},
                           {"name", "x"},
                           {"sizeBytes", size},
                           {"code", "quota_exceeded"},
                           {"message", "over"},
                           {"deviceId", "host:0"}}}};
  return fmt::format("id: {}\nevent: {}\ndata: {}\n\n", sequence, kind, data.dump());
}
std::string script_frame(std::uint64_t sequence, std::uint64_t i) {
  return frame(sequence, "limit_reached", "memd-load-script", (2ull << 20) + i);
}

// Feeds one frame's fields to a check, as the reader would hand them over.
void feed(ScriptCheck& c, std::uint64_t sequence, const std::string& kind, const std::string& owner,
          std::uint64_t size, std::int64_t at = 1) {
  const std::string f = frame(sequence, kind, owner, size);
  const auto data = f.substr(f.find("data: ") + 6);
  c.on_message(std::to_string(sequence), kind, data.substr(0, data.size() - 2), at);
}

TEST(LoadSseCheck, TheScriptInOrderAmongOtherEventsPasses) {
  const auto s = spec(5);
  ScriptCheck c(s);
  std::uint64_t seq = 10;
  for (std::uint64_t i = 0; i < 5; ++i) {
    feed(c, seq++, "allocation_failed", "memd-load-script", (2ull << 20) + i);  // another kind
    feed(c, seq++, "limit_reached", "someone-else", (2ull << 20) + i);          // another owner
    feed(c, seq++, "limit_reached", "memd-load-script", (2ull << 20) + i, 100 + static_cast<std::int64_t>(i));
  }
  EXPECT_TRUE(c.complete());
  EXPECT_TRUE(c.ok()) << c.first_problem();
  EXPECT_EQ(c.seen(), 5u);
  EXPECT_EQ(c.others(), 10u);
  EXPECT_EQ(c.receipt_ns()[4], 104);
}

TEST(LoadSseCheck, GapsRepeatsAndSwapsAreFound) {
  const auto s = spec(4);
  {
    ScriptCheck c(s);  // event 2 never comes: short, not misordered
    for (std::uint64_t i : {0, 1, 3}) feed(c, 10 + i, "limit_reached", s.owner, s.base_size + i);
    EXPECT_FALSE(c.complete());
    EXPECT_FALSE(c.misordered());
    EXPECT_FALSE(c.ok());
    EXPECT_EQ(c.seen(), 3u);
  }
  {
    ScriptCheck c(s);  // 2 after 3: all there, out of order
    std::uint64_t seq = 1;
    for (std::uint64_t i : {0, 1, 3, 2}) feed(c, seq++, "limit_reached", s.owner, s.base_size + i);
    EXPECT_TRUE(c.complete());
    EXPECT_TRUE(c.misordered());
    EXPECT_FALSE(c.ok());
  }
  {
    ScriptCheck c(s);  // a repeat
    std::uint64_t seq = 1;
    for (std::uint64_t i : {0, 1, 1, 2, 3}) feed(c, seq++, "limit_reached", s.owner, s.base_size + i);
    EXPECT_TRUE(c.misordered());
    EXPECT_EQ(c.received(), 5u);
    EXPECT_EQ(c.seen(), 4u);
    EXPECT_NE(c.first_problem().find("twice"), std::string::npos) << c.first_problem();
  }
  {
    ScriptCheck c(s);  // sequences going back, on any kind
    feed(c, 7, "pressure_changed", "x", 0);
    feed(c, 7, "pressure_changed", "x", 0);
    EXPECT_TRUE(c.misordered());
    EXPECT_NE(c.first_problem().find("sequence 7 after 7"), std::string::npos) << c.first_problem();
  }
}

TEST(LoadSseCheck, LostEventsAreCounted) {
  const auto s = spec(2);
  ScriptCheck c(s);
  feed(c, 1, "limit_reached", s.owner, s.base_size);
  c.on_message("1", "lost", R"({"lost":3,"oldestSequence":9})", 5);
  feed(c, 9, "limit_reached", s.owner, s.base_size + 1);
  EXPECT_TRUE(c.complete());
  EXPECT_EQ(c.lost(), 3u);
  EXPECT_FALSE(c.ok());
  ScriptCheck d(s);
  d.on_message("", "lost", "not json", 5);  // still a loss, and a problem
  EXPECT_EQ(d.lost(), 1u);
  EXPECT_FALSE(d.first_problem().empty());
}

TEST(LoadSseCheck, HostileFramesAreProblemsNeverThrows) {
  const auto s = spec(3);
  const std::string good = R"({"event":"limit_reached","sequence":5,"data":{"owner":"memd-load-script","sizeBytes":2097152}})";
  struct Case {
    std::string id, event, data, says;
  };
  const std::vector<Case> cases = {
      {"5", "limit_reached", "", "not a JSON object"},
      {"5", "limit_reached", "[1,2]", "not a JSON object"},
      {"5", "limit_reached", "{\"event\":", "not a JSON object"},
      {"x5", "limit_reached", good, "not a sequence"},
      {"", "limit_reached", good, "not a sequence"},
      {"99999999999999999999999", "limit_reached", good, "not a sequence"},
      {"6", "limit_reached", good, "not its id"},
      {"5", "allocation_failed", good, "another kind"},
      {"5", "limit_reached", R"({"event":"limit_reached","sequence":-5})", "not its id"},
      {"5", "limit_reached", R"({"event":"limit_reached","sequence":5.5})", "not its id"},
      {"5", "limit_reached", R"({"event":7,"sequence":5})", "another kind"},
      {"5", "limit_reached", R"({"event":"limit_reached","sequence":5,"data":{"owner":"memd-load-script"}})",
       "without sizeBytes"},
      {"5", "limit_reached",
       R"({"event":"limit_reached","sequence":5,"data":{"owner":"memd-load-script","sizeBytes":"2MiB"}})",
       "without sizeBytes"},
      {"5", "limit_reached",
       R"({"event":"limit_reached","sequence":5,"data":{"owner":"memd-load-script","sizeBytes":-1}})",
       "without sizeBytes"},
      {"5", "limit_reached",
       R"({"event":"limit_reached","sequence":5,"data":{"owner":"memd-load-script","sizeBytes":18446744073709551615}})",
       "not one the script asked for"},
      {"5", "limit_reached",
       R"({"event":"limit_reached","sequence":5,"data":{"owner":"memd-load-script","sizeBytes":2097151}})",
       "not one the script asked for"},
      {"5", "limit_reached",
       R"({"event":"limit_reached","sequence":5,"data":{"owner":"memd-load-script","sizeBytes":2097155}})",
       "not one the script asked for"},
  };
  for (const auto& k : cases) {
    ScriptCheck c(s);
    c.on_message(k.id, k.event, k.data, 1);
    EXPECT_FALSE(c.ok());
    EXPECT_EQ(c.seen(), 0u) << k.data;
    EXPECT_NE(c.first_problem().find(k.says), std::string::npos) << k.data << " → " << c.first_problem();
  }
  // An owner of another type, or none, is simply not the script's.
  ScriptCheck c(s);
  c.on_message("5", "limit_reached", R"({"event":"limit_reached","sequence":5,"data":{"owner":7}})", 1);
  c.on_message("6", "limit_reached", R"({"event":"limit_reached","sequence":6,"data":[]})", 1);
  EXPECT_EQ(c.others(), 2u);
  EXPECT_TRUE(c.first_problem().empty()) << c.first_problem();
}

TEST(LoadSseCheck, TheSummaryCountsSubscribersAndLatency) {
  const auto s = spec(2);
  ScriptCheck good(s), shortc(s), swapped(s);
  feed(good, 1, "limit_reached", s.owner, s.base_size, 1'000'000);
  feed(good, 2, "limit_reached", s.owner, s.base_size + 1, 3'000'000);
  feed(shortc, 1, "limit_reached", s.owner, s.base_size, 2'000'000);
  feed(swapped, 2, "limit_reached", s.owner, s.base_size + 1, 4'000'000);
  feed(swapped, 3, "limit_reached", s.owner, s.base_size, 5'000'000);
  const std::vector<SubscriberOutcome> subs = {
      {&good, false}, {&shortc, true}, {&swapped, false}, {nullptr, false}};
  const auto sum = summarize_subscribers(subs, 2, {500'000, 2'500'000});
  EXPECT_EQ(sum.wanted, 4u);
  EXPECT_EQ(sum.connected, 3u);
  EXPECT_EQ(sum.connect_failed, 1u);
  EXPECT_EQ(sum.complete, 1u);
  EXPECT_EQ(sum.missing, 1u);
  EXPECT_EQ(sum.misordered, 1u);
  EXPECT_EQ(sum.broken, 1u);
  EXPECT_EQ(sum.received_min, 1u);
  EXPECT_EQ(sum.received_max, 2u);
  EXPECT_FALSE(sum.ok());
  EXPECT_EQ(sum.delivery.count, 5u);  // 2 + 1 + 2
  EXPECT_DOUBLE_EQ(sum.delivery.max_ms, 4.5);  // swapped's event 0: 5 ms − 0.5 ms
  EXPECT_EQ(sum.problems.size(), 2u);
  // Unknown send times give no latency; an all-good tally passes.
  const auto one = summarize_subscribers({{&good, false}}, 2, {0, 0});
  EXPECT_TRUE(one.ok());
  EXPECT_EQ(one.delivery.count, 0u);
}

TEST(LoadSseCheck, KindsFlagIsCheckedAndRefusedWithItsName) {
  EXPECT_EQ(check_event_kinds("limit_reached", "limit_reached"), "");
  EXPECT_EQ(check_event_kinds("allocation_failed,limit_reached", "limit_reached"), "");
  for (const char* bad : {"", ",", "limit_reached,", ",limit_reached", "limit_reached,,x", "LIMIT_REACHED",
                          "limit reached", "limit_reached;rm", "allocation_failed", "limit_reached\n"})
    EXPECT_NE(check_event_kinds(bad, "limit_reached"), "") << bad;
  std::string many = "limit_reached";
  for (int i = 0; i < 32; ++i) many += ",x";
  EXPECT_NE(check_event_kinds(many, "limit_reached"), "");
  EXPECT_NE(check_event_kinds(std::string(65, 'a') + ",limit_reached", "limit_reached"), "");

  auto parse = [](std::vector<std::string> args) {
    args.insert(args.begin(), {"memd-load", "--spawn", "memd"});
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    return parse_load_flags(static_cast<int>(argv.size()), argv.data());
  };
  for (const auto& [args, says] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--sse-subscribers", "-1"}, "--sse-subscribers"},
           {{"--sse-subscribers", "60001"}, "--sse-subscribers"},
           {{"--sse-subscribers", "ten"}, "--sse-subscribers"},
           {{"--sse-script", "0"}, "--sse-script"},
           {{"--sse-script", "100001"}, "--sse-script"},
           {{"--sse-kinds", "pressure_changed"}, "--sse-kinds"},
           {{"--sse-kinds", "limit_reached&deviceId=x"}, "--sse-kinds"}}) {
    const auto p = parse(args);
    EXPECT_FALSE(p.options) << args[0] << " " << args[1];
    EXPECT_EQ(p.exit_code, 2);
    EXPECT_NE(p.message.find(says), std::string::npos) << p.message;
  }
  const auto ok = parse({"--sse-subscribers", "1000", "--sse-script", "100", "--idle", "0", "--slow", "0"});
  ASSERT_TRUE(ok.options) << ok.message;
  EXPECT_EQ(ok.options->sse_subscribers, 1000u);
  EXPECT_EQ(ok.options->sse_kinds, "limit_reached");
  EXPECT_EQ(ok.options->descriptors_needed(), 1000u + 16 + 64);
}

// ---- the subscribers against a fake event stream ---------------------------

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// Accepts `expect` connections, reads each request's head, answers with
// `head` and keeps the socket for the test to write frames into (each write
// one chunk when chunked).
class FakeSseServer {
 public:
  FakeSseServer(std::size_t expect, std::string head, bool chunked)
      : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), chunked_(chunked) {
    thread_ = std::thread([this, expect, head = std::move(head)] {
      for (std::size_t k = 0; k < expect; ++k) {
        tcp::socket s(ioc_);
        boost::system::error_code ec;
        acceptor_.accept(s, ec);
        if (ec) return;
        asio::streambuf buf;
        asio::read_until(s, buf, "\r\n\r\n", ec);
        if (ec) continue;
        const std::string request(asio::buffers_begin(buf.data()), asio::buffers_end(buf.data()));
        asio::write(s, asio::buffer(head), ec);
        std::lock_guard lock(mu_);
        targets_.push_back(request.substr(0, request.find("\r\n")));
        socks_.push_back(std::move(s));
        cv_.notify_all();
      }
    });
  }
  ~FakeSseServer() {
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);  // wakes a blocked accept
    thread_.join();
    for (auto& s : socks_) {
      boost::system::error_code ec;
      s.close(ec);
    }
  }
  tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }
  bool wait_accepted(std::size_t n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, 20s, [&] { return socks_.size() >= n; });
  }
  std::vector<std::string> targets() {
    std::lock_guard lock(mu_);
    return targets_;
  }
  // raw: the bytes as they are, whatever the framing (to break it).
  void send(std::size_t k, const std::string& bytes, bool raw = false) {
    std::lock_guard lock(mu_);
    const std::string out = chunked_ && !raw ? fmt::format("{:x}\r\n{}\r\n", bytes.size(), bytes) : bytes;
    boost::system::error_code ec;
    asio::write(socks_.at(k), asio::buffer(out), ec);
  }
  void broadcast(const std::string& bytes) {
    for (std::size_t k = 0; k < count(); ++k) send(k, bytes);
  }
  void close(std::size_t k) {
    std::lock_guard lock(mu_);
    boost::system::error_code ec;
    socks_.at(k).shutdown(tcp::socket::shutdown_both, ec);
    socks_.at(k).close(ec);
  }
  std::size_t count() {
    std::lock_guard lock(mu_);
    return socks_.size();
  }

 private:
  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  bool chunked_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<tcp::socket> socks_;
  std::vector<std::string> targets_;
};

const std::string kStreamHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n";
const std::string kChunkedHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

SubscriberOptions options(const FakeSseServer& server, std::uint64_t count, std::uint64_t events) {
  SubscriberOptions o;
  o.endpoint = server.endpoint();
  o.target = "/api/memory/events?kinds=limit_reached";
  o.count = count;
  o.concurrency = 8;
  o.timeout = Millis(10'000);
  o.script.count = events;
  return o;
}

TEST(LoadSseSubscribers, EverySubscriberGetsTheScriptInOrderChunkedOrNot) {
  for (const bool chunked : {true, false}) {
    SCOPED_TRACE(chunked ? "chunked" : "read to the end");
    constexpr std::size_t kSubs = 40, kEvents = 10;
    FakeSseServer server(kSubs, chunked ? kChunkedHead : kStreamHead, chunked);
    SseSubscribers subs(options(server, kSubs, kEvents));
    subs.start();
    ASSERT_TRUE(eventually([&] { return subs.settled(); }));
    EXPECT_EQ(subs.connected(), kSubs);
    ASSERT_TRUE(server.wait_accepted(kSubs));
    EXPECT_EQ(server.targets().front(), "GET /api/memory/events?kinds=limit_reached HTTP/1.1");
    server.broadcast(": keep-alive\n\n");
    std::uint64_t seq = 100;
    for (std::uint64_t i = 0; i < kEvents; ++i) {
      subs.note_sent(i);
      // The load's own traffic between the script's events, and one frame
      // cut at an odd place across two writes.
      server.broadcast(frame(seq++, "limit_reached", "memd-load", 4 << 20));
      const std::string f = script_frame(seq++, i);
      server.broadcast(f.substr(0, 7));
      server.broadcast(f.substr(7));
    }
    ASSERT_TRUE(eventually([&] { return subs.finished() == kSubs; }));
    subs.stop();
    const auto sum = subs.summary();
    EXPECT_TRUE(sum.ok()) << (sum.problems.empty() ? "" : sum.problems.front());
    EXPECT_EQ(sum.connected, kSubs);
    EXPECT_EQ(sum.complete, kSubs);
    EXPECT_EQ(sum.received_min, kEvents);
    EXPECT_EQ(sum.received_max, kEvents);
    EXPECT_EQ(sum.other_events, kSubs * kEvents);
    EXPECT_EQ(sum.broken, 0u);
    EXPECT_EQ(sum.delivery.count, kSubs * kEvents);
  }
}

TEST(LoadSseSubscribers, MissingSwappedLostAndEndedStreamsAreCounted) {
  constexpr std::size_t kSubs = 5, kEvents = 6;
  FakeSseServer server(kSubs, kChunkedHead, true);
  SseSubscribers subs(options(server, kSubs, kEvents));
  subs.start();
  ASSERT_TRUE(eventually([&] { return subs.settled(); }));
  ASSERT_TRUE(server.wait_accepted(kSubs));
  const std::vector<std::vector<std::uint64_t>> orders = {
      {0, 1, 2, 3, 4, 5},  // complete
      {0, 1, 2, 4, 5},     // 3 missing
      {0, 1, 2, 3, 5, 4},  // swapped
      {0, 1, 2, 3, 4, 5},  // complete, but a lost notice
      {0, 1},              // then the stream ends
  };
  for (std::size_t k = 0; k < kSubs; ++k) {
    std::uint64_t seq = 1;
    for (auto i : orders[k]) {
      // Subscriber 3 is told two events were dropped (before its last, so
      // it has the notice once it finishes).
      if (k == 3 && i == 5) server.send(k, "id: 5\nevent: lost\ndata: {\"lost\":2}\n\n");
      server.send(k, script_frame(seq++, i));
    }
  }
  server.close(4);
  // Three complete, one ended early: four finished; the one short of event 3
  // waits until stopped.
  ASSERT_TRUE(eventually([&] { return subs.finished() == 4; }));
  subs.stop();
  const auto sum = subs.summary();
  EXPECT_FALSE(sum.ok());
  EXPECT_EQ(sum.connected, kSubs);
  EXPECT_EQ(sum.complete, 1u);
  EXPECT_EQ(sum.missing, 2u);  // 3 missing, and the ended stream
  EXPECT_EQ(sum.misordered, 1u);
  EXPECT_EQ(sum.broken, 1u);
  EXPECT_EQ(sum.lost, 2u);
  EXPECT_EQ(sum.received_min, 2u);
  EXPECT_EQ(sum.received_max, kEvents);
}

TEST(LoadSseSubscribers, ANotFoundAnswerIsReportedNotWaitedOn) {
  constexpr std::size_t kSubs = 12;
  const std::string body = R"({"error":{"code":"not_found","message":"no route"}})";
  FakeSseServer server(kSubs,
                       fmt::format("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                                   "Content-Length: {}\r\n\r\n{}",
                                   body.size(), body),
                       false);
  SseSubscribers subs(options(server, kSubs, 3));
  subs.start();
  ASSERT_TRUE(eventually([&] { return subs.settled(); }));
  EXPECT_EQ(subs.connected(), 0u);
  EXPECT_EQ(subs.failed(), kSubs);
  EXPECT_EQ(subs.refused_status(), 404u);
  subs.stop();
  const auto sum = subs.summary();
  EXPECT_EQ(sum.connect_failed, kSubs);
  EXPECT_EQ(sum.refused_status, 404u);
  EXPECT_FALSE(sum.ok());
  ASSERT_FALSE(sum.problems.empty());
  EXPECT_NE(sum.problems.front().find("404"), std::string::npos) << sum.problems.front();
}

TEST(LoadSseSubscribers, HostileStreamsFailTheSubscriberNotTheProcess) {
  constexpr std::size_t kSubs = 3;
  FakeSseServer server(kSubs, kChunkedHead, true);
  SseSubscribers subs(options(server, kSubs, 2));
  subs.start();
  ASSERT_TRUE(eventually([&] { return subs.settled(); }));
  ASSERT_TRUE(server.wait_accepted(kSubs));
  server.send(0, "data: " + std::string(100'000, 'x'));  // a line past the reader's limit
  server.send(1, "id: 1\nevent: limit_reached\ndata: {not json\n\n");
  server.send(2, "HTTP/1.1 200 OK\r\n", /*raw=*/true);  // not a chunk size: the framing breaks
  ASSERT_TRUE(eventually([&] { return subs.finished() >= 2; }));  // 0 and 2 end; 1 waits
  subs.stop();
  const auto sum = subs.summary();
  EXPECT_FALSE(sum.ok());
  EXPECT_EQ(sum.connected, kSubs);
  EXPECT_EQ(sum.complete, 0u);
  EXPECT_EQ(sum.missing, kSubs);
  EXPECT_GE(sum.with_problems, 2u);  // the long line, the bad JSON
  EXPECT_GE(sum.broken, 1u);         // the broken framing
}

TEST(LoadSseSubscribers, NothingListeningFailsEveryConnect) {
  tcp::endpoint closed;
  {
    asio::io_context ioc;
    tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    closed = a.local_endpoint();
  }
  SubscriberOptions o;
  o.endpoint = closed;
  o.count = 5;
  o.timeout = Millis(2'000);
  SseSubscribers subs(o);
  subs.start();
  ASSERT_TRUE(eventually([&] { return subs.settled(); }));
  EXPECT_EQ(subs.failed(), 5u);
  subs.stop();
  EXPECT_EQ(subs.summary().connect_failed, 5u);
}

}  // namespace
}  // namespace memd::load
