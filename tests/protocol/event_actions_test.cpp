// memory_subscribe / memory_unsubscribe through dispatch, with hostile input
// (unknown and empty kinds, wrong types, bad devices, negative, fractional
// and huge lastEventId): each refusal is invalid_argument with a message
// naming the key, and the service answers the next good request.
#include <gtest/gtest.h>

#include "memd/size.hpp"
#include "protocol/action_table.hpp"
#include "protocol/actions/event_actions.hpp"
#include "protocol/params.hpp"
#include "protocol/sse.hpp"
#include "service/memory_service.hpp"
#include "dispatch_fixture.hpp"

namespace memd {
namespace {

using json = nlohmann::json;

class EventActionsTest : public test::DispatchTest {
 protected:
  void SetUp() override { start(64 * kMiB); }
};

TEST_F(EventActionsTest, SubscribeDescribesTheSubscription) {
  service_->events().publish(EventKind::model_loaded, std::nullopt, json::object());
  auto all = call("memory_subscribe", json::object());
  ASSERT_TRUE(all) << all.error().message;
  EXPECT_EQ((*all)["subscribed"], true);
  EXPECT_EQ((*all)["lastSequence"], service_->events().last_sequence());
  EXPECT_EQ((*all)["kinds"].size(), kEventKindCount);
  EXPECT_TRUE((*all)["deviceId"].is_null());
  auto some = call("memory_subscribe", {{"kinds", "model_loaded,pressure_changed"}, {"deviceId", "host:0"}, {"lastEventId", "7"}});
  ASSERT_TRUE(some) << some.error().message;
  EXPECT_EQ((*some)["kinds"], json::array({"pressure_changed", "model_loaded"}));  // table order
  EXPECT_EQ((*some)["deviceId"], "host:0");
  auto off = call("memory_unsubscribe", json::object());
  ASSERT_TRUE(off);
  EXPECT_EQ(*off, (json{{"subscribed", false}}));
}

TEST_F(EventActionsTest, SubscriptionRequestReadsTheSameParams) {
  const json params = {{"kinds", "transfer_failed"}, {"deviceId", "cpu"}, {"lastEventId", 12}};
  auto r = subscription_request(Params(params));
  ASSERT_TRUE(r);
  EventFilter expected;
  expected.add(EventKind::transfer_failed);
  EXPECT_EQ(r->filter.kinds, expected.kinds);
  EXPECT_EQ(r->filter.device->to_string(), "cpu");
  EXPECT_EQ(r->last_event_id, 12u);
  auto none = subscription_request(Params(json::object()));
  ASSERT_TRUE(none);
  EXPECT_EQ(none->filter.kinds, 0u);
  EXPECT_FALSE(none->last_event_id);
}

TEST_F(EventActionsTest, HostileParamsAreInvalidArgumentNamingTheKey) {
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"kinds", "nope"}}, "kinds"},
      {{{"kinds", ""}}, "kinds"},
      {{{"kinds", ","}}, "kinds"},
      {{{"kinds", "pressure_changed,"}}, "kinds"},
      {{{"kinds", " pressure_changed"}}, "kinds"},
      {{{"kinds", "PRESSURE_CHANGED"}}, "kinds"},
      {{{"kinds", std::string(100000, 'x')}}, "kinds"},
      {{{"kinds", 3}}, "kinds"},
      {{{"kinds", json::array({"pressure_changed"})}}, "kinds"},
      {{{"kinds", nullptr}}, "kinds"},
      {{{"deviceId", "gpu:0"}}, "deviceId"},
      {{{"deviceId", ""}}, "deviceId"},
      {{{"deviceId", true}}, "deviceId"},
      {{{"lastEventId", -1}}, "lastEventId"},
      {{{"lastEventId", 1.5}}, "lastEventId"},
      {{{"lastEventId", "abc"}}, "lastEventId"},
      {{{"lastEventId", "99999999999999999999999"}}, "lastEventId"},
      {{{"lastEventId", json::object()}}, "lastEventId"},
  };
  for (const auto& [params, key] : cases) {
    auto r = call("memory_subscribe", params);
    ASSERT_FALSE(r) << params.dump();
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << params.dump();
    EXPECT_NE(r.error().message.find(key), std::string::npos) << params.dump() << ": " << r.error().message;
    EXPECT_LT(r.error().message.size(), 1024u) << "the message echoes too much of the input";
  }
  EXPECT_TRUE(call("memory_subscribe", {{"kinds", "pressure_changed"}}));
}

TEST(EventParsers, LastEventIdIsADecimalSequence) {
  EXPECT_EQ(parse_last_event_id("0").value(), 0u);
  EXPECT_EQ(parse_last_event_id("18446744073709551615").value(), UINT64_MAX);
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "0x10", "18446744073709551616", "1e3", "abc"})
    EXPECT_EQ(parse_last_event_id(bad).error().code, ErrorCode::invalid_argument) << bad;
}

}  // namespace
}  // namespace memd
