// The event bus: sequences, the wire line, filters, resumption, the ring's
// bound and what a subscriber that fell behind is told, waking.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include <nlohmann/json.hpp>

#include "monitor/event_bus.hpp"

namespace memd {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

TEST(EventBus, PublishesInSequenceWithTheWireLineAndFrame) {
  EventBus bus;
  auto a = bus.publish(EventKind::pressure_changed, DeviceId::host(0), {{"level", "High"}});
  auto b = bus.publish(EventKind::transfer_completed, std::nullopt, {{"transferId", "x"}});
  EXPECT_EQ(a->sequence, 1u);
  EXPECT_EQ(b->sequence, 2u);
  const json line = json::parse(a->line);
  EXPECT_EQ(line["event"], "pressure_changed");
  EXPECT_EQ(line["sequence"], 1);
  EXPECT_EQ(line["deviceId"], "host:0");
  EXPECT_EQ(line["data"]["level"], "High");
  EXPECT_EQ(line["time"].get<std::string>().size(), 24u);  // 2026-12-06T21:04:02.123Z
  EXPECT_TRUE(json::parse(b->line)["deviceId"].is_null());
  EXPECT_EQ(a->sse_frame, "id: 1\nevent: pressure_changed\ndata: " + a->line + "\n\n");
  EXPECT_EQ(a->line.find('\n'), std::string::npos);
  EXPECT_EQ(bus.last_sequence(), 2u);
}

TEST(EventBus, ASubscriptionSeesOnlyWhatComesAfterIt) {
  EventBus bus;
  bus.publish(EventKind::pressure_changed, std::nullopt, json::object());
  auto sub = bus.subscribe({});
  EXPECT_TRUE(sub->poll().empty());
  bus.publish(EventKind::allocation_failed, std::nullopt, json::object());
  auto got = sub->poll();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->sequence, 2u);
  EXPECT_TRUE(sub->poll().empty());
  EXPECT_EQ(sub->cursor(), 2u);
}

TEST(EventBus, ResumesAfterALastEventId) {
  EventBus bus;
  for (int i = 0; i < 5; ++i) bus.publish(EventKind::limit_reached, std::nullopt, {{"i", i}});
  auto sub = bus.subscribe({}, 2);
  auto got = sub->poll();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got.front()->sequence, 3u);
  EXPECT_EQ(sub->take_gap(), 0u);
  // A sequence from the future reads from now on.
  auto ahead = bus.subscribe({}, 1000);
  EXPECT_EQ(ahead->cursor(), 5u);
}

TEST(EventBus, FiltersByKindAndDeviceAndLetsMachineWideEventsThrough) {
  EventBus bus;
  EventFilter filter;
  filter.add(EventKind::pressure_changed);
  filter.device = DeviceId::host(1);
  auto sub = bus.subscribe(filter);
  bus.publish(EventKind::pressure_changed, DeviceId::host(0), json::object());
  bus.publish(EventKind::pressure_changed, DeviceId::host(1), json::object());
  bus.publish(EventKind::allocation_failed, DeviceId::host(1), json::object());
  bus.publish(EventKind::pressure_changed, std::nullopt, json::object());
  auto got = sub->poll();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]->sequence, 2u);
  EXPECT_EQ(got[1]->sequence, 4u);
  EXPECT_EQ(sub->cursor(), 4u);  // skipped events are passed too
}

TEST(EventBus, ASubscriberFurtherBehindThanTheRingIsToldWhatItLost) {
  EventBus bus(4);
  auto sub = bus.subscribe({});
  for (int i = 0; i < 10; ++i) bus.publish(EventKind::limit_reached, std::nullopt, {{"i", i}});
  auto got = sub->poll();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got.front()->sequence, 7u);
  EXPECT_EQ(sub->take_gap(), 6u);
  EXPECT_EQ(sub->take_gap(), 0u);  // cleared
  EXPECT_EQ(bus.stats().oldest_sequence, 7u);
  EXPECT_EQ(bus.stats().ring_capacity, 4u);
  // Resuming from an id the ring no longer has reports the gap too.
  auto late = bus.subscribe({}, 1);
  EXPECT_EQ(late->poll().size(), 4u);
  EXPECT_EQ(late->take_gap(), 5u);
}

TEST(EventBus, WaitWakesOnAMatchingPublicationAndOnClose) {
  EventBus bus;
  EventFilter only_failures;
  only_failures.add(EventKind::allocation_failed);
  auto sub = bus.subscribe(only_failures);
  std::thread publisher([&] {
    std::this_thread::sleep_for(20ms);
    bus.publish(EventKind::pressure_changed, std::nullopt, json::object());  // no match: keeps waiting
    std::this_thread::sleep_for(20ms);
    bus.publish(EventKind::allocation_failed, std::nullopt, json::object());
  });
  auto got = sub->wait(10s);
  publisher.join();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]->kind, EventKind::allocation_failed);
  EXPECT_TRUE(sub->wait(10ms).empty());  // times out

  std::thread closer([&] {
    std::this_thread::sleep_for(20ms);
    sub->close();
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(sub->wait(10s).empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  closer.join();
  EXPECT_TRUE(sub->closed());
}

TEST(EventBus, NotifiesOnlyMatchingSubscriptionsAndForgetsDestroyedOnes) {
  EventBus bus;
  EventFilter f;
  f.add(EventKind::transfer_failed);
  std::atomic<int> calls{0};
  {
    auto sub = bus.subscribe(f);
    sub->set_notify([&] { calls.fetch_add(1); });
    bus.publish(EventKind::transfer_completed, std::nullopt, json::object());
    bus.publish(EventKind::transfer_failed, std::nullopt, json::object());
    EXPECT_EQ(calls.load(), 1);
    EXPECT_EQ(bus.stats().subscribers, 1u);
  }
  EXPECT_EQ(bus.stats().subscribers, 0u);
  bus.publish(EventKind::transfer_failed, std::nullopt, json::object());
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(bus.stats().published, 3u);
}

TEST(EventBus, ConcurrentPublishersReachEverySubscriberInOneOrder) {
  EventBus bus(1 << 16);
  constexpr int kPublishers = 4, kEach = 2000, kSubscribers = 4;
  std::vector<std::shared_ptr<Subscription>> subs;
  for (int i = 0; i < kSubscribers; ++i) subs.push_back(bus.subscribe({}));
  std::vector<std::vector<std::uint64_t>> seen(kSubscribers);
  std::vector<std::thread> readers;
  for (int i = 0; i < kSubscribers; ++i)
    readers.emplace_back([&, i] {
      while (seen[i].size() < kPublishers * kEach)
        for (const auto& e : subs[i]->wait(5s)) seen[i].push_back(e->sequence);
    });
  std::vector<std::thread> publishers;
  for (int p = 0; p < kPublishers; ++p)
    publishers.emplace_back([&, p] {
      for (int i = 0; i < kEach; ++i) bus.publish(EventKind::limit_reached, DeviceId::host(p), {{"i", i}});
    });
  for (auto& t : publishers) t.join();
  for (auto& t : readers) t.join();
  for (const auto& s : seen) {
    ASSERT_EQ(s.size(), static_cast<std::size_t>(kPublishers * kEach));
    for (std::size_t i = 0; i < s.size(); ++i) ASSERT_EQ(s[i], i + 1);
  }
}

TEST(EventKinds, NamesRoundTripAndUnknownNamesAreRefused) {
  for (EventKind k : all_event_kinds()) {
    EXPECT_EQ(parse_event_kind(to_string(k)), k);
    EXPECT_FALSE(event_help(k).empty());
  }
  EXPECT_FALSE(parse_event_kind("pressure"));
  EXPECT_FALSE(parse_event_kind(""));
}

}  // namespace
}  // namespace memd
