// The pressure policy and the reclaim ladder are one path (issue 14): a
// device filled past High releases cached pages (the ladder's release rung)
// and says so in events; past Critical the reclaim callbacks are called (the
// ladder's eviction rung) and a Low-priority allocation is refused, naming
// the level. Levels and events are checked in order.
#include <gtest/gtest.h>

#include <atomic>
#include <map>

#include <nlohmann/json.hpp>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using nlohmann::json;
const Caller kAdmin = Caller::host("admin");

struct Seen {
  std::string kind;
  json line;
};

class PressurePolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.backends.host_device_sizes = {64 * kMiB};
    options.backends.enable_cuda = false;
    options.monitor.interval = std::chrono::milliseconds(0);  // the test runs the policy itself
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
    events_ = service_->events().subscribe({});
    // A 40 MiB limit makes the arithmetic exact: High at 32 MiB, Critical
    // at 36.8 MiB, back under Critical below 35.6 MiB.
    LimitUpdate limit;
    limit.device = DeviceId::host(0);
    limit.bytes = 40 * kMiB;
    ASSERT_TRUE(service_->update_limits(kAdmin, limit));
  }

  Result<AllocationRecord> allocate(std::uint64_t bytes, MemoryPriority priority = MemoryPriority::Normal) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = DeviceId::host(0);
    r.priority = priority;
    return service_->allocate(Caller::as("worker"), r);
  }

  std::vector<Seen> drain() {
    std::vector<Seen> out;
    for (const auto& e : events_->poll()) out.push_back({std::string(to_string(e->kind)), json::parse(e->line)});
    return out;
  }

  PressureReading reading() { return service_->pressure(DeviceId::host(0)).value().front(); }

  std::unique_ptr<MemoryService> service_;
  std::shared_ptr<Subscription> events_;
};

TEST_F(PressurePolicyTest, HighReleasesCachedPagesCriticalReclaimsAndRefusesLowPriority) {
  std::atomic<int> release_calls{0};
  service_->manager().add_release_callback([&](DeviceId device, MemoryType) {
    if (device == DeviceId::host(0)) release_calls.fetch_add(1);
    return std::uint64_t{0};
  });

  auto big = allocate(30 * kMiB);
  ASSERT_TRUE(big);
  EXPECT_EQ(reading().level, PressureLevel::Moderate);  // 75 %
  auto medium = allocate(4 * kMiB);
  ASSERT_TRUE(medium);
  ASSERT_EQ(reading().level, PressureLevel::High);  // 85 %
  // Cached pages: a block allocated and freed stays mapped.
  auto scratch = allocate(2 * kMiB);
  ASSERT_TRUE(scratch);
  ASSERT_TRUE(service_->deallocate(kAdmin, scratch->id));
  const std::uint64_t cached = reading().cached_bytes;
  ASSERT_GT(cached, 0u) << "the scenario needs cached pages to release";

  auto events = drain();
  std::vector<std::string> levels;
  for (const auto& e : events)
    if (e.kind == "pressure_changed")
      levels.push_back(e.line["data"]["previousLevel"].get<std::string>() + ">" +
                       e.line["data"]["level"].get<std::string>());
  EXPECT_EQ(levels, (std::vector<std::string>{"Low>Moderate", "Moderate>High"}));  // 2 MiB more: 90 %, still High

  // High: the policy releases the cached pages through the ladder's rung.
  auto actions = service_->monitor().run_policy();
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].action, "release_cached");
  EXPECT_GE(actions[0].bytes, cached);
  EXPECT_EQ(release_calls.load(), 1);
  EXPECT_EQ(reading().cached_bytes, 0u);
  EXPECT_EQ(reading().level, PressureLevel::High);  // releasing cache never lowers the level
  events = drain();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, "pressure_action");
  EXPECT_EQ(events[0].line["data"]["action"], "release_cached");
  EXPECT_EQ(events[0].line["data"]["level"], "High");
  EXPECT_EQ(events[0].line["data"]["bytes"], actions[0].bytes);

  // Critical: a reclaim callback that frees `medium` when asked.
  std::atomic<std::uint64_t> asked{0};
  const AllocationId evictable = medium->id;
  service_->manager().add_reclaim_callback([&](DeviceId device, MemoryType, std::uint64_t needed) {
    if (device != DeviceId::host(0) || asked.load() != 0) return std::uint64_t{0};
    asked = needed;
    auto freed = service_->deallocate(kAdmin, evictable);
    return freed ? freed->size_bytes : 0;
  });
  auto last = allocate(3 * kMiB);
  ASSERT_TRUE(last);
  ASSERT_EQ(reading().level, PressureLevel::Critical);  // 92.5 %

  auto refused = allocate(kMiB, MemoryPriority::Low);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::out_of_memory);
  EXPECT_NE(refused.error().message.find("Critical memory pressure"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("host:0"), std::string::npos);
  EXPECT_TRUE(allocate(kMiB / 4, MemoryPriority::Normal)) << "only Low priority is refused";

  actions = service_->monitor().run_policy();
  ASSERT_FALSE(actions.empty());
  EXPECT_EQ(actions.back().action, "reclaim");
  // Asked for what brings the device under High − hysteresis (77 % of 40 MiB).
  const std::uint64_t in_use = 37 * kMiB + kMiB / 4;
  const auto goal = static_cast<std::uint64_t>(40.0 * kMiB * 0.77);
  EXPECT_EQ(asked.load(), in_use - goal);
  EXPECT_EQ(actions.back().bytes, 4 * kMiB);
  EXPECT_EQ(reading().level, PressureLevel::High);  // 33.25 MiB: 83 %
  EXPECT_TRUE(allocate(kMiB, MemoryPriority::Low)) << "no longer Critical";

  std::vector<std::string> seen;
  for (const auto& e : drain()) {
    if (e.kind == "pressure_changed")
      seen.push_back("level " + e.line["data"]["previousLevel"].get<std::string>() + ">" +
                     e.line["data"]["level"].get<std::string>());
    else if (e.kind == "pressure_action")
      seen.push_back("action " + e.line["data"]["action"].get<std::string>());
    else
      seen.push_back(e.kind);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"level High>Critical", "action refuse_low_priority", "allocation_failed",
                                            "level Critical>High", "action reclaim"}));
}

TEST_F(PressurePolicyTest, TheLadderClimbsTheSameReleaseRungOnOutOfMemory) {
  std::atomic<int> release_calls{0};
  service_->manager().add_release_callback([&](DeviceId, MemoryType) {
    release_calls.fetch_add(1);
    return std::uint64_t{0};
  });
  // Fill the pool itself (the 40 MiB limit is a quota, not the pool): the
  // pool holds at most 0.95 × 64 MiB; a request past it climbs the ladder.
  LimitUpdate lift;
  lift.device = DeviceId::host(0);
  ASSERT_TRUE(service_->update_limits(kAdmin, lift));
  auto a = allocate(50 * kMiB);
  ASSERT_TRUE(a);
  auto b = allocate(20 * kMiB);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(release_calls.load(), 1);
  EXPECT_EQ(service_->manager().reclaim_counts().trim_retries, 1u);
  bool failed_event = false;
  for (const auto& e : drain()) failed_event |= e.kind == "allocation_failed";
  EXPECT_TRUE(failed_event);
}

TEST_F(PressurePolicyTest, APolicyOfOffOnlyWatches) {
  ServiceOptions options;
  options.backends.host_device_sizes = {64 * kMiB};
  options.backends.enable_cuda = false;
  options.monitor.interval = std::chrono::milliseconds(0);
  options.monitor.policy = PressurePolicy::parse("off").value();
  auto s = MemoryService::create(options);
  ASSERT_TRUE(s);
  AllocationRequest r;
  r.size_bytes = 58 * kMiB;  // of a 60.8 MiB pool: 95 %
  r.device = DeviceId::host(0);
  ASSERT_TRUE((*s)->allocate(Caller::as("w"), r));
  EXPECT_EQ((*s)->pressure(DeviceId::host(0)).value().front().level, PressureLevel::Critical);
  r.size_bytes = kMiB / 8;
  r.priority = MemoryPriority::Low;
  EXPECT_TRUE((*s)->allocate(Caller::as("w"), r));
  EXPECT_TRUE((*s)->monitor().run_policy().empty());
}

TEST_F(PressurePolicyTest, StatusComesFromTheSampleWithLiveCounters) {
  const auto before = service_->status(DeviceId::host(0)).value();
  auto a = allocate(8 * kMiB);
  ASSERT_TRUE(a);
  const auto after = service_->status(DeviceId::host(0)).value();
  EXPECT_EQ(after.sample, before.sample) << "no new sample was taken for the query";
  EXPECT_EQ(after.devices[0].allocated_bytes, 8 * kMiB);
  EXPECT_EQ(after.devices[0].allocations, 1u);
  EXPECT_EQ(after.devices[0].pressure.in_use_bytes, 8 * kMiB);
  EXPECT_EQ(after.devices[0].pressure.level, PressureLevel::Low);
  service_->monitor().sample_now();
  EXPECT_EQ(service_->status(std::nullopt).value().sample, before.sample + 1);
  EXPECT_EQ(service_->pressure(DeviceId::cuda(3)).error().code, ErrorCode::not_found);
}

}  // namespace
}  // namespace memd
