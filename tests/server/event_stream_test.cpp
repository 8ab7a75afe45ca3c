// GET /api/memory/events: server-sent events from the bus, their filter,
// resumption, the lost notice, keep-alives, the stream cap, disconnects and
// shutdown; and hostile subscriptions answered with clear errors while the
// daemon keeps serving.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "server/event_test_support.hpp"
#include "server/http/http_server.hpp"
#include "server/http_test_support.hpp"
#include "service/memory_service.hpp"

namespace memd::testing {
namespace {

using namespace std::chrono_literals;

// A daemon in this process with the event options the tests need.
class EventServer {
 public:
  explicit EventServer(HttpOptions http = {}, std::size_t ring = kDefaultEventRing) {
    ServiceOptions options;
    options.backends.host_device_sizes = {64 * kMiB};
    options.backends.enable_cuda = false;
    options.monitor.interval = std::chrono::milliseconds(0);
    options.event_ring = ring;
    auto service = MemoryService::create(options);
    if (!service) return;
    service_ = std::move(*service);
    http.host = "127.0.0.1";
    http.port = 0;
    server_ = std::make_unique<HttpServer>(*service_, http);
    auto port = server_->bind();
    if (!port) return;
    port_ = *port;
    thread_ = std::thread([this] { EXPECT_TRUE(server_->run()); });
  }
  ~EventServer() {
    if (server_) server_->stop();
    join();
    server_.reset();
  }
  int port() const { return port_; }
  MemoryService& service() { return *service_; }
  HttpServer& http() { return *server_; }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  EventPtr publish(EventKind kind, std::string_view device = "host:0") {
    return service_->events().publish(kind, *DeviceId::parse(device), {{"n", ++published_}});
  }
  std::uint64_t subscribers() { return service_->events().stats().subscribers; }
  // Waits until the bus has `n` subscribers (a stream subscribes before its header).
  bool wait_subscribers(std::uint64_t n, std::chrono::milliseconds timeout = 3s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (subscribers() != n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

 private:
  std::unique_ptr<MemoryService> service_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  int port_ = 0;
  int published_ = 0;
};

TEST(EventStream, AnswersEventStreamHeadersAndTheFilteredEventsInOrder) {
  EventServer server;
  SseConnection sse(server.port(), "/api/memory/events?kinds=pressure_changed,model_loaded");
  auto header = sse.header();
  ASSERT_TRUE(header);
  EXPECT_TRUE(header->starts_with("HTTP/1.1 200")) << *header;
  const std::string lower = Socket::lowercase(*header);
  EXPECT_NE(lower.find("content-type: text/event-stream"), std::string::npos) << *header;
  EXPECT_NE(lower.find("cache-control: no-cache"), std::string::npos) << *header;
  EXPECT_NE(lower.find("transfer-encoding: chunked"), std::string::npos) << *header;
  ASSERT_TRUE(server.wait_subscribers(1));

  auto a = server.publish(EventKind::pressure_changed);
  server.publish(EventKind::transfer_completed);  // not asked for
  auto c = server.publish(EventKind::model_loaded);
  const auto& got = sse.messages(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, std::to_string(a->sequence));
  EXPECT_EQ(got[0].event, "pressure_changed");
  EXPECT_EQ(got[0].data, a->line);  // the bus's encoding, byte for byte
  EXPECT_EQ(got[1].id, std::to_string(c->sequence));
  EXPECT_EQ(got[1].event, "model_loaded");
  EXPECT_EQ(got[1].data, c->line);
}

TEST(EventStream, DeviceFilterKeepsMachineWideEvents) {
  EventServer server;
  SseConnection sse(server.port(), "/api/memory/events?deviceId=host:0");
  ASSERT_TRUE(sse.header());
  ASSERT_TRUE(server.wait_subscribers(1));
  server.publish(EventKind::health_changed, "cpu");  // another device: filtered out
  auto mine = server.publish(EventKind::health_changed, "host:0");
  auto global = server.service().events().publish(EventKind::limit_reached, std::nullopt, {{"x", 1}});
  const auto& got = sse.messages(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].data, mine->line);
  EXPECT_EQ(got[1].data, global->line);
}

TEST(EventStream, ResumesFromLastEventIdAndSaysWhatFellOffTheRing) {
  EventServer server({}, 16);
  for (int i = 0; i < 40; ++i) server.publish(EventKind::transfer_completed);
  // 40 published, the ring keeps 25..40: a resume after 2 lost 3..24.
  SseConnection sse(server.port(), "/api/memory/events", "Last-Event-ID: 2\r\n");
  const auto& got = sse.messages(17);
  ASSERT_EQ(got.size(), 17u);
  EXPECT_EQ(got[0].event, "lost");
  EXPECT_EQ(nlohmann::json::parse(got[0].data), (nlohmann::json{{"lost", 22}, {"resumeFrom", 25}}));
  EXPECT_EQ(got[1].id, "25");
  EXPECT_EQ(got[16].id, "40");
  bool commented = false;
  for (const auto& c : sse.comments()) commented = commented || c == "lost 22 events";
  EXPECT_TRUE(commented);

  // Within the ring: exactly what follows, and the query parameter works too.
  SseConnection resume(server.port(), "/api/memory/events?lastEventId=38");
  const auto& tail = resume.messages(2);
  ASSERT_EQ(tail.size(), 2u);
  EXPECT_EQ(tail[0].id, "39");
  EXPECT_EQ(tail[1].id, "40");
  // The header wins over the query (EventSource reconnects with the header).
  SseConnection both(server.port(), "/api/memory/events?lastEventId=10", "Last-Event-ID: 39\r\n");
  const auto& last = both.messages(1);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].id, "40");
}

TEST(EventStream, SendsKeepAliveCommentsWhenQuiet) {
  HttpOptions http;
  http.event_keepalive = 50ms;
  EventServer server(http);
  SseConnection sse(server.port(), "/api/memory/events");
  ASSERT_TRUE(sse.header());
  sse.messages(1, 400ms);  // none come; comments do
  ASSERT_FALSE(sse.comments().empty());
  EXPECT_EQ(sse.comments().front(), "keep-alive");
}

TEST(EventStream, HostileSubscriptionsAreRefusedAndTheDaemonKeepsServing) {
  EventServer server;
  struct Case {
    std::string target, headers, needle;
  };
  const std::vector<Case> cases = {
      {"/api/memory/events?kinds=pressure_changed,bogus", "", "'bogus' is not an event kind"},
      {"/api/memory/events?kinds=", "", "kinds"},
      {"/api/memory/events?kinds=,", "", "kinds"},
      {"/api/memory/events?deviceId=gpu:7", "", "deviceId"},
      {"/api/memory/events?deviceId=", "", "deviceId"},
      {"/api/memory/events?lastEventId=-1", "", "lastEventId"},
      {"/api/memory/events?lastEventId=abc", "", "lastEventId"},
      {"/api/memory/events?lastEventId=99999999999999999999999", "", "lastEventId"},
      {"/api/memory/events", "Last-Event-ID: abc\r\n", "Last-Event-ID"},
      {"/api/memory/events", "Last-Event-ID: 99999999999999999999999\r\n", "Last-Event-ID"},
      {"/api/memory/events", "Last-Event-ID: -5\r\n", "Last-Event-ID"},
      {"/api/memory/events", "Last-Event-ID: \r\n", "Last-Event-ID"},
  };
  for (const auto& c : cases) {
    SseConnection sse(server.port(), c.target, c.headers);
    auto header = sse.header();
    ASSERT_TRUE(header) << c.target;
    EXPECT_TRUE(header->starts_with("HTTP/1.1 400")) << c.target << c.headers << "\n" << *header;
    std::string body = sse.rest(300ms);
    EXPECT_NE(body.find("invalid_argument"), std::string::npos) << c.target << ": " << body;
    EXPECT_NE(body.find(c.needle), std::string::npos) << c.target << ": " << body;
  }
  EXPECT_EQ(server.subscribers(), 0u);
  // POST on the route: 405 with Allow.
  Socket post(server.port());
  ASSERT_TRUE(post.send("POST /api/memory/events HTTP/1.1\r\nHost: memd\r\nContent-Length: 0\r\n\r\n"));
  auto refused = post.response();
  ASSERT_TRUE(refused);
  EXPECT_TRUE(refused->starts_with("HTTP/1.1 405")) << *refused;
  // Still serving: a good subscription gets its event.
  SseConnection good(server.port(), "/api/memory/events");
  ASSERT_TRUE(good.header());
  ASSERT_TRUE(server.wait_subscribers(1));
  auto e = server.publish(EventKind::model_evicted);
  const auto& got = good.messages(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, e->line);
}

TEST(EventStream, TooManyStreamsAre503UntilOneCloses) {
  HttpOptions http;
  http.max_event_streams = 2;
  EventServer server(http);
  auto a = std::make_unique<SseConnection>(server.port(), "/api/memory/events");
  SseConnection b(server.port(), "/api/memory/events");
  ASSERT_TRUE(a->header());
  ASSERT_TRUE(b.header());
  SseConnection c(server.port(), "/api/memory/events");
  auto header = c.header();
  ASSERT_TRUE(header);
  EXPECT_TRUE(header->starts_with("HTTP/1.1 503")) << *header;
  const std::string body = c.rest(300ms);
  EXPECT_NE(body.find("unavailable"), std::string::npos) << body;
  EXPECT_NE(body.find("--max-event-streams"), std::string::npos) << body;
  // One goes: its place is free again.
  a.reset();
  ASSERT_TRUE(server.wait_subscribers(1));
  std::optional<std::string> again;
  for (int i = 0; i < 50; ++i) {  // the slot is released as its coroutine ends
    SseConnection d(server.port(), "/api/memory/events");
    again = d.header();
    if (again && again->starts_with("HTTP/1.1 200")) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->starts_with("HTTP/1.1 200")) << *again;
}

TEST(EventStream, ClientDisconnectEndsTheSubscription) {
  EventServer server;
  {
    SseConnection a(server.port(), "/api/memory/events");
    SseConnection b(server.port(), "/api/memory/events?kinds=model_loaded");
    ASSERT_TRUE(a.header());
    ASSERT_TRUE(b.header());
    ASSERT_TRUE(server.wait_subscribers(2));
  }
  // No event has to be written for the server to notice: the socket's close does.
  EXPECT_TRUE(server.wait_subscribers(0, 2s)) << server.subscribers();
  server.publish(EventKind::model_loaded);  // nobody left; nothing breaks
}

TEST(EventStream, ShutdownClosesOpenStreamsAtOnce) {
  HttpOptions http;
  http.shutdown_grace = std::chrono::milliseconds(10'000);
  EventServer server(http);
  std::vector<std::unique_ptr<SseConnection>> streams;
  for (int i = 0; i < 5; ++i) {
    streams.push_back(std::make_unique<SseConnection>(server.port(), "/api/memory/events"));
    ASSERT_TRUE(streams.back()->header());
  }
  ASSERT_TRUE(server.wait_subscribers(5));
  const auto start = std::chrono::steady_clock::now();
  server.http().shutdown();
  server.join();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, 2s) << "the graceful drain waited on event streams";
  for (auto& s : streams) EXPECT_TRUE(s->ended_within(1s));
  EXPECT_EQ(server.subscribers(), 0u);
}

TEST(EventStream, ManySubscribersEachGetEveryEventInOrder) {
  EventServer server;
  constexpr int kSubscribers = 50;
  constexpr int kEvents = 300;
  std::vector<std::unique_ptr<SseConnection>> streams;
  for (int i = 0; i < kSubscribers; ++i) {
    streams.push_back(std::make_unique<SseConnection>(server.port(), "/api/memory/events"));
    ASSERT_TRUE(streams.back()->header());
  }
  ASSERT_TRUE(server.wait_subscribers(kSubscribers));
  std::thread publisher([&] {
    for (int i = 0; i < kEvents; ++i) server.publish(EventKind::transfer_completed);
  });
  publisher.join();
  for (auto& s : streams) {
    const auto& got = s->messages(kEvents, 10s);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(kEvents));
    for (int i = 0; i < kEvents; ++i) ASSERT_EQ(got[static_cast<std::size_t>(i)].id, std::to_string(i + 1));
  }
}

}  // namespace
}  // namespace memd::testing
