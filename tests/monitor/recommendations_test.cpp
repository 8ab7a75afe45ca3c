// recommend() and the analytics pieces it reads, on hand-built state.
#include <gtest/gtest.h>

#include "memd/size.hpp"
#include "monitor/analytics.hpp"
#include "monitor/recommendations.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;
const auto kNow = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));

AllocationRecord record(std::uint64_t bytes, std::chrono::seconds idle, std::string owner = "w") {
  AllocationRecord r;
  r.id = AllocationId::generate();
  r.owner = std::move(owner);
  r.device = DeviceId::host(0);
  r.size_bytes = bytes;
  r.last_used_at = kNow - idle;
  return r;
}

DeviceStatus device(double fragmentation, std::uint64_t free_bytes) {
  DeviceStatus d;
  d.info.id = DeviceId::host(0);
  d.fragmentation = fragmentation;
  PoolStats p;
  p.free_bytes = free_bytes;
  d.pools.emplace(MemoryType::VRAM, p);
  return d;
}

TEST(Recommendations, RankedByBytesThenFragmentationThenKind) {
  RecommendationInputs in;
  in.now = kNow;
  in.status.devices.push_back(device(0.5, 40 * kMiB));
  in.trim[PoolKey{DeviceId::host(0), MemoryType::VRAM}] = {.releasable_bytes = 16 * kMiB,
                                                            .stranded_free_bytes = 24 * kMiB,
                                                            .unit_bytes = 8 * kMiB,
                                                            .virtual_memory = true};
  auto idle = record(16 * kMiB, 700s);
  auto pinned = record(64 * kMiB, 700s);
  pinned.pinned = true;
  auto fresh = record(64 * kMiB, 10s);
  in.allocations = {fresh, pinned, idle};
  in.models.push_back({"llama", DeviceId::host(0), MemoryType::VRAM, 32 * kMiB, kNow - 1h});
  RecommendationOptions o;
  auto list = recommend(in, o);
  // No defragment while the action is absent; the pinned and the fresh
  // allocations are left alone; a tie at 16 MiB goes by kind.
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].kind, RecommendationKind::unload_model);
  EXPECT_EQ(list[0].action, "memory_model_unload");
  EXPECT_EQ(list[1].kind, RecommendationKind::release_cached);
  EXPECT_EQ(list[1].bytes_freed, 16 * kMiB);
  EXPECT_EQ(list[2].kind, RecommendationKind::free_idle);
  EXPECT_EQ(list[2].params["allocationId"], idle.id.to_string());
  o.defragment_available = true;
  list = recommend(in, o);
  ASSERT_EQ(list.size(), 4u);
  EXPECT_EQ(list[1].kind, RecommendationKind::defragment);
  EXPECT_EQ(list[1].bytes_freed, 24 * kMiB);  // three whole 8 MiB units
  EXPECT_DOUBLE_EQ(list[1].fragmentation_removed, 0.5);
  EXPECT_EQ(list[1].params, nlohmann::json({{"deviceId", "host:0"}}));
  // Below the fragmentation floor: none.
  in.status.devices[0].fragmentation = 0.1;
  list = recommend(in, o);
  for (const auto& r : list) EXPECT_NE(r.kind, RecommendationKind::defragment);
  // Another device asked about: nothing of host:0's.
  o.device = DeviceId::host(1);
  EXPECT_TRUE(recommend(in, o).empty());
}

TEST(Recommendations, RaiseALimitOnlyWhileItIsStillShortAndRecent) {
  RecommendationInputs in;
  in.now = kNow;
  in.limits.per_owner["carol"] = 16 * kMiB;
  QuotaShortfall s{LimitScope::Owner, "carol", DeviceId::host(0), 16 * kMiB, 8 * kMiB, 2, kNow - 5min};
  in.shortfalls = {s};
  auto list = recommend(in, {});
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].bytes_needed, 8 * kMiB);
  EXPECT_EQ(list[0].params, nlohmann::json({{"owner", "carol"}, {"bytes", 24 * kMiB}}));
  EXPECT_FALSE(list[0].device);
  in.limits.per_owner["carol"] = 24 * kMiB;  // raised since
  EXPECT_TRUE(recommend(in, {}).empty());
  in.limits.per_owner.erase("carol");  // removed since
  EXPECT_TRUE(recommend(in, {}).empty());
  in.limits.per_owner["carol"] = 16 * kMiB;
  in.shortfalls[0].at = kNow - 2h;  // long ago
  EXPECT_TRUE(recommend(in, {}).empty());
}

TEST(Analytics, ShortfallsFollowTheQuotasOrder) {
  Limits limits;
  limits.per_device[DeviceId::host(0)] = 100;
  limits.per_owner["a"] = 10;
  std::map<DeviceId, std::uint64_t> dev{{DeviceId::host(0), 95}};
  std::map<MemoryType, std::uint64_t> type;
  std::map<std::string, OwnerUsage> owner{{"a", {8, 1}}};
  auto s = find_shortfall(limits, dev, type, owner, "a", DeviceId::host(0), MemoryType::VRAM, 10);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->scope, LimitScope::Device);  // the device is checked first
  EXPECT_EQ(s->shortfall_bytes, 5u);
  dev[DeviceId::host(0)] = 0;
  s = find_shortfall(limits, dev, type, owner, "a", DeviceId::host(0), MemoryType::VRAM, 10);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->scope, LimitScope::Owner);
  EXPECT_EQ(s->shortfall_bytes, 8u);
  EXPECT_FALSE(find_shortfall(limits, dev, type, owner, "b", DeviceId::host(0), MemoryType::VRAM, 10));
}

TEST(Analytics, RatesFailuresAndUnknownDevices) {
  auto t = kNow;
  Analytics a({DeviceId::host(0)}, AnalyticsOptions{.clock = [&] { return t; }});
  auto sample = [&](std::uint64_t allocs, std::uint64_t frees) {
    MemoryStatusReport r;
    DeviceStatus d;
    d.info.id = DeviceId::host(0);
    PoolStats p;
    p.total_allocations = allocs;
    p.total_frees = frees;
    d.pools.emplace(MemoryType::VRAM, p);
    r.devices.push_back(d);
    DeviceStatus other;
    other.info.id = DeviceId::host(5);  // not known at start: ignored
    r.devices.push_back(other);
    r.transfers = TransferStats{.bytes_copied = allocs * 1000};
    a.on_sample(r);
  };
  sample(0, 0);
  t += 2s;
  sample(10, 4);
  t += 2s;
  sample(10, 10);
  a.note_failure(DeviceId::host(0), ErrorCode::out_of_memory, std::nullopt);
  a.note_failure(DeviceId::host(0), ErrorCode::invalid_argument, std::nullopt);  // not a failure to count
  auto q = a.query({.device = DeviceId::host(0), .window_seconds = 10});
  ASSERT_TRUE(q) << q.error().message;
  const auto& f = q->devices[0].window.fields;
  EXPECT_EQ(f[static_cast<std::size_t>(DeviceField::allocations_per_second)].count, 2u);
  EXPECT_DOUBLE_EQ(f[static_cast<std::size_t>(DeviceField::allocations_per_second)].mean, 2.5);
  EXPECT_DOUBLE_EQ(f[static_cast<std::size_t>(DeviceField::frees_per_second)].max, 3);
  EXPECT_DOUBLE_EQ(q->transfers.fields[0].max, 5000);
  EXPECT_EQ(q->failures.out_of_memory, 1u);
  EXPECT_EQ(q->failures.quota_exceeded, 0u);
  EXPECT_EQ(q->failures.last_at, t);
  EXPECT_EQ(a.query({.device = DeviceId::host(5)}).error().code, ErrorCode::not_found);
  EXPECT_TRUE(a.validate());
}

}  // namespace
}  // namespace memd
