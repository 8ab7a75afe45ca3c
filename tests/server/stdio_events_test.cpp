// memory_subscribe / memory_unsubscribe on the stdio doors: the answer, event
// lines between responses (each line whole), a second subscribe replacing
// the filter, unsubscribe, the lost line, hostile parameters; and the same
// through the bridge (memd stdio --connect).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "server/daemon.hpp"
#include "server/event_test_support.hpp"

namespace memd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

std::vector<std::string> stdio_args(std::vector<std::string> extra = {}) {
  std::vector<std::string> args{MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "--monitor-interval", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), {"stdio", "--owner", "host"});
  return args;
}

json request(const std::string& id, const std::string& action, json params = json::object()) {
  return {{"id", id}, {"action", action}, {"params", std::move(params)}};
}

// An allocation the device cannot hold: an out_of_memory answer and one
// allocation_failed event.
json too_big(const std::string& id) { return request(id, "memory_allocate", {{"sizeBytes", "1GiB"}}); }

TEST(StdioEvents, SubscribeAnswersThenEventLinesArriveBetweenResponses) {
  StdioSession memd(stdio_args());
  auto answer = memd.call(request("1", "memory_subscribe", {{"kinds", "allocation_failed"}, {"deviceId", "host:0"}}));
  ASSERT_TRUE(answer);
  ASSERT_TRUE(answer->value("ok", false)) << answer->dump();
  const auto& r = (*answer)["result"];
  EXPECT_EQ(r["subscribed"], true);
  EXPECT_EQ(r["kinds"], json::array({"allocation_failed"}));
  EXPECT_EQ(r["deviceId"], "host:0");
  EXPECT_TRUE(r["lastSequence"].is_number_unsigned());

  auto failed = memd.call(too_big("2"));
  ASSERT_TRUE(failed);
  EXPECT_EQ((*failed)["error"]["code"], "out_of_memory");
  const auto& events = memd.events(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["event"], "allocation_failed");
  EXPECT_EQ(events[0]["deviceId"], "host:0");
  EXPECT_GT(events[0]["sequence"].get<std::uint64_t>(), r["lastSequence"].get<std::uint64_t>());
  EXPECT_TRUE(events[0].contains("time") && events[0]["data"].is_object());
  memd.process().close_stdin();
  EXPECT_EQ(memd.process().wait(), 0);
}

TEST(StdioEvents, ASecondSubscribeReplacesTheFilterAndUnsubscribeStopsTheLines) {
  StdioSession memd(stdio_args());
  ASSERT_TRUE(memd.call(request("1", "memory_subscribe", {{"kinds", "model_loaded"}}))->value("ok", false));
  ASSERT_TRUE(memd.call(too_big("2")));  // not asked for
  ASSERT_TRUE(memd.call(request("3", "memory_subscribe", {{"kinds", "allocation_failed,limit_reached"}}))
                  ->value("ok", false));
  ASSERT_TRUE(memd.call(too_big("4")));
  const auto& events = memd.events(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["event"], "allocation_failed");
  auto off = memd.call(request("5", "memory_unsubscribe"));
  ASSERT_TRUE(off);
  EXPECT_EQ(*off, (json{{"id", "5"}, {"ok", true}, {"result", {{"subscribed", false}}}}));
  ASSERT_TRUE(memd.call(too_big("6")));
  ASSERT_TRUE(memd.call(request("7", "memory_health")));
  EXPECT_EQ(memd.events(2, 300ms).size(), 1u) << "an event line after memory_unsubscribe";
  // Unsubscribing again is a no-op, answered the same.
  EXPECT_TRUE(memd.call(request("8", "memory_unsubscribe"))->value("ok", false));
  memd.process().close_stdin();
  EXPECT_EQ(memd.process().wait(), 0);
}

TEST(StdioEvents, AResumeOlderThanTheRingStartsWithALostLine) {
  StdioSession memd(stdio_args({"--event-ring", "16"}));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(memd.call(too_big("f" + std::to_string(i))));  // 20 events
  auto answer = memd.call(request("s", "memory_subscribe", {{"lastEventId", 0}}));
  ASSERT_TRUE(answer && answer->value("ok", false)) << answer->dump();
  const std::uint64_t last = (*answer)["result"]["lastSequence"];
  ASSERT_GE(last, 20u);  // one allocation_failed each, at least
  const auto& events = memd.events(17);
  ASSERT_EQ(events.size(), 17u);
  // The ring keeps the newest 16: last-15 .. last.
  EXPECT_EQ(events[0], (json{{"event", "lost"}, {"data", {{"lost", last - 16}, {"resumeFrom", last - 15}}}}));
  EXPECT_EQ(events[1]["sequence"], last - 15);
  EXPECT_EQ(events[16]["sequence"], last);
  memd.process().close_stdin();
  EXPECT_EQ(memd.process().wait(), 0);
}

TEST(StdioEvents, HostileParametersAreRefusedAndTheHostKeepsItsSubscription) {
  StdioSession memd(stdio_args());
  ASSERT_TRUE(memd.call(request("ok", "memory_subscribe", {{"kinds", "allocation_failed"}}))->value("ok", false));
  const std::vector<json> bad = {
      {{"kinds", "nope"}},         {{"kinds", ""}},          {{"kinds", 5}},
      {{"kinds", json::array()}},  {{"kinds", "allocation_failed,"}},
      {{"deviceId", "gpu:0"}},     {{"deviceId", 7}},        {{"lastEventId", -1}},
      {{"lastEventId", "abc"}},    {{"lastEventId", 1.5}},   {{"lastEventId", "99999999999999999999999"}},
      {{"kinds", nullptr}},
  };
  int n = 0;
  for (const auto& params : bad) {
    auto answer = memd.call(request("b" + std::to_string(++n), "memory_subscribe", params));
    ASSERT_TRUE(answer) << params.dump();
    EXPECT_EQ((*answer)["ok"], false) << params.dump();
    EXPECT_EQ((*answer)["error"]["code"], "invalid_argument") << params.dump() << " " << answer->dump();
  }
  // The refused requests did not replace the good subscription.
  ASSERT_TRUE(memd.call(too_big("x")));
  const auto& events = memd.events(1);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["event"], "allocation_failed");
  memd.process().close_stdin();
  EXPECT_EQ(memd.process().wait(), 0);
}

TEST(StdioEvents, TheBridgeRelaysTheDaemonsStreamAsTheSameLines) {
  Daemon daemon({"--monitor-interval", "0"});
  ASSERT_FALSE(daemon.url().empty());
  StdioSession bridge({MEMD_BINARY, "stdio", "--connect", daemon.url(), "--owner", "bridged"});
  auto answer = bridge.call(request("1", "memory_subscribe", {{"kinds", "allocation_failed"}}));
  ASSERT_TRUE(answer && answer->value("ok", false)) << (answer ? answer->dump() : "none");
  EXPECT_EQ((*answer)["result"]["kinds"], json::array({"allocation_failed"}));
  // Hostile parameters: the daemon's refusal, through the bridge.
  auto refused = bridge.call(request("2", "memory_subscribe", {{"kinds", "bogus"}}));
  ASSERT_TRUE(refused);
  EXPECT_EQ((*refused)["error"]["code"], "invalid_argument");
  ASSERT_TRUE(bridge.call(too_big("3")));
  ASSERT_TRUE(bridge.call(too_big("4")));
  const auto& events = bridge.events(2);
  ASSERT_EQ(events.size(), 2u);
  for (const auto& e : events) {
    EXPECT_EQ(e["event"], "allocation_failed");
    EXPECT_TRUE(e.contains("sequence") && e.contains("time") && e.contains("data")) << e.dump();
  }
  EXPECT_EQ(events[1]["sequence"].get<std::uint64_t>(), events[0]["sequence"].get<std::uint64_t>() + 1);
  auto off = bridge.call(request("5", "memory_unsubscribe"));
  ASSERT_TRUE(off);
  EXPECT_EQ((*off)["result"], (json{{"subscribed", false}}));
  ASSERT_TRUE(bridge.call(too_big("6")));
  ASSERT_TRUE(bridge.call(request("7", "memory_health")));
  EXPECT_EQ(bridge.events(3, 300ms).size(), 2u) << "an event line after memory_unsubscribe";
  bridge.process().close_stdin();
  EXPECT_EQ(bridge.process().wait(), 0);
}

}  // namespace
}  // namespace memd::testing
