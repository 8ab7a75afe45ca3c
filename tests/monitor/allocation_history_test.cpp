// The history rings and the snapshot store on their own: bounds (the oldest
// entry dropped, the oldest snapshot evicted), order across devices, the
// owner filter, redaction, and records racing reads on threads.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "monitor/allocation_history.hpp"
#include "monitor/oom_snapshots.hpp"

namespace memd {
namespace {

HistoryEntry entry(DeviceId device, std::string owner, std::uint64_t size, HistoryKind kind = HistoryKind::allocate) {
  HistoryEntry e;
  e.kind = kind;
  e.device = device;
  e.allocation = AllocationId::generate();
  e.owner = std::move(owner);
  e.size_bytes = size;
  e.memory_type = MemoryType::VRAM;
  return e;
}

TEST(AllocationHistory, RingDropsTheOldestWhenFull) {
  AllocationHistory h(4);
  for (std::uint64_t i = 1; i <= 10; ++i) EXPECT_EQ(h.record(entry(DeviceId::host(0), "alice", i)), i);
  auto ring = h.ring(DeviceId::host(0));
  ASSERT_EQ(ring.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(ring[i].size_bytes, 7 + i) << "oldest first, the newest four kept";
    EXPECT_EQ(ring[i].sequence, 7 + i);
  }
  EXPECT_EQ(h.dropped(DeviceId::host(0)), 6u);
  EXPECT_EQ(h.dropped(DeviceId::host(1)), 0u);
  EXPECT_TRUE(h.ring(DeviceId::host(1)).empty());
  EXPECT_TRUE(h.validate());
}

TEST(AllocationHistory, CapacityIsClampedToAtLeastOne) {
  AllocationHistory h(0);
  EXPECT_EQ(h.capacity(), 1u);
  h.record(entry(DeviceId::cpu(), "a", 1));
  h.record(entry(DeviceId::cpu(), "a", 2));
  auto ring = h.ring(DeviceId::cpu());
  ASSERT_EQ(ring.size(), 1u);
  EXPECT_EQ(ring[0].size_bytes, 2u);
  EXPECT_TRUE(h.validate());
  EXPECT_EQ(AllocationHistory(~std::size_t{0}).capacity(), kMaxHistoryCapacity);
}

TEST(AllocationHistory, RecentMergesDevicesBySequenceAndFilters) {
  AllocationHistory h(8);
  h.record(entry(DeviceId::host(0), "alice", 1));
  h.record(entry(DeviceId::host(1), "bob", 2));
  h.record(entry(DeviceId::host(0), "bob", 3));
  h.record(entry(DeviceId::cpu(), "alice", 4));
  h.record(entry(DeviceId::host(1), "alice", 5));

  auto all = h.recent({std::nullopt, std::nullopt, 100});
  ASSERT_EQ(all.size(), 5u);
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].size_bytes, i + 1) << "one order across devices";

  auto last_two = h.recent({std::nullopt, std::nullopt, 2});
  ASSERT_EQ(last_two.size(), 2u);
  EXPECT_EQ(last_two[0].size_bytes, 4u);
  EXPECT_EQ(last_two[1].size_bytes, 5u);

  auto alice = h.recent({std::nullopt, std::string("alice"), 100});
  ASSERT_EQ(alice.size(), 3u);
  EXPECT_EQ(alice[0].size_bytes, 1u);
  EXPECT_EQ(alice[1].size_bytes, 4u);
  EXPECT_EQ(alice[2].size_bytes, 5u);

  auto host1 = h.recent({DeviceId::host(1), std::nullopt, 100});
  ASSERT_EQ(host1.size(), 2u);
  EXPECT_EQ(host1[0].owner, "bob");
  EXPECT_TRUE(h.recent({DeviceId::cuda(3), std::nullopt, 100}).empty());
  EXPECT_TRUE(h.recent({std::nullopt, std::string("nobody"), 100}).empty());
}

TEST(AllocationHistory, KindNamesRoundTrip) {
  for (auto k : {HistoryKind::allocate, HistoryKind::free, HistoryKind::move, HistoryKind::evict, HistoryKind::failed})
    EXPECT_EQ(parse_history_kind(to_string(k)), k);
  EXPECT_EQ(parse_history_kind("Allocate"), std::nullopt);
  EXPECT_EQ(parse_history_kind(""), std::nullopt);
}

// Writers on several devices race readers taking rings and merged views;
// every view is in order and the rings stay within bounds.
TEST(AllocationHistory, RecordsRaceReads) {
  AllocationHistory h(64);
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t)
    writers.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) h.record(entry(DeviceId::host(t % 2), "w" + std::to_string(t), i));
    });
  std::atomic<int> bad{0};
  std::thread reader([&] {
    while (!stop.load()) {
      auto r = h.recent({std::nullopt, std::nullopt, 100});
      for (std::size_t i = 1; i < r.size(); ++i) bad += r[i - 1].sequence >= r[i].sequence;
      auto ring = h.ring(DeviceId::host(0));
      bad += ring.size() > 64;
      if (!h.validate()) ++bad;
    }
  });
  for (auto& w : writers) w.join();
  stop = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(h.ring(DeviceId::host(0)).size(), 64u);
  EXPECT_EQ(h.dropped(DeviceId::host(0)) + 64, 4000u);
  EXPECT_TRUE(h.validate());
}

OomSnapshot snapshot_of(std::string owner, std::size_t history = 0) {
  OomSnapshot s;
  s.id = SnapshotId::generate();
  s.request.owner = std::move(owner);
  s.request.size_bytes = 1;
  for (std::size_t i = 0; i < history; ++i) s.history.push_back(entry(DeviceId::host(0), "x", i));
  return s;
}

TEST(OomSnapshotStore, KeepsTheNewestN) {
  OomSnapshotStore store({.max_snapshots = 3});
  std::vector<SnapshotId> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(snapshot_of("alice").id);
    auto s = snapshot_of("alice");
    s.id = ids.back();
    store.add(std::move(s));
  }
  EXPECT_EQ(store.find(ids[0]).error().code, ErrorCode::not_found);
  EXPECT_EQ(store.find(ids[1]).error().code, ErrorCode::not_found);
  for (int i = 2; i < 5; ++i) EXPECT_TRUE(store.find(ids[i])) << i;
  EXPECT_EQ(store.ids(), (std::vector<SnapshotId>{ids[2], ids[3], ids[4]}));
  EXPECT_EQ(store.evicted(), 2u);
  EXPECT_TRUE(store.validate());
  EXPECT_EQ(store.find(SnapshotId::generate()).error().code, ErrorCode::not_found);
}

TEST(OomSnapshotStore, KeepsWithinItsBytesButAlwaysTheNewest) {
  const std::uint64_t one = snapshot_of("a", 100).approximate_bytes();
  OomSnapshotStore store({.max_snapshots = 16, .max_bytes = one * 2 + one / 2});
  for (int i = 0; i < 5; ++i) store.add(snapshot_of("a", 100));
  EXPECT_EQ(store.ids().size(), 2u);
  EXPECT_LE(store.bytes(), one * 2 + one / 2);
  EXPECT_TRUE(store.validate());
  // One bigger than the whole budget is still kept (alone): the caller was
  // just told its id.
  auto big = snapshot_of("a", 1000);
  const auto id = big.id;
  store.add(std::move(big));
  EXPECT_EQ(store.ids(), std::vector<SnapshotId>{id});
  EXPECT_TRUE(store.validate());
}

TEST(OomSnapshot, RedactHidesOtherOwnersBySizeOnly) {
  OomSnapshot s = snapshot_of("alice");
  s.history = {entry(DeviceId::host(0), "alice", 10), entry(DeviceId::host(0), "bob", 20)};
  s.history[1].name = "bob's secret";
  s.history[1].snapshot = SnapshotId::generate();
  s.holders = {{"bob", 20, 1, false}, {"alice", 10, 1, false}, {"carol", 5, 2, false}};
  SnapshotAllocation a{AllocationId::generate(), "alice", "mine", MemoryType::VRAM, MemoryPriority::Normal, 10, 100};
  SnapshotAllocation b{AllocationId::generate(), "bob", "theirs", MemoryType::VRAM, MemoryPriority::Normal, 20, 200};
  s.allocations = {b, a};
  SnapshotSegment seg;
  seg.blocks = {{100, 256, "allocated", a, 0}, {356, 512, "allocated", b, 0}, {868, 64, "free", std::nullopt, 0}};
  s.segments = {seg};

  OomSnapshot r = redact(s, "alice");
  EXPECT_FALSE(r.history[0].hidden);
  EXPECT_EQ(r.history[0].owner, "alice");
  EXPECT_TRUE(r.history[1].hidden);
  EXPECT_EQ(r.history[1].owner, "");
  EXPECT_EQ(r.history[1].name, "");
  EXPECT_FALSE(r.history[1].allocation);
  EXPECT_FALSE(r.history[1].snapshot);
  EXPECT_EQ(r.history[1].size_bytes, 20u) << "sizes stay";
  EXPECT_TRUE(r.allocations[0].hidden);
  EXPECT_FALSE(r.allocations[0].id);
  EXPECT_EQ(r.allocations[0].size_bytes, 20u);
  EXPECT_FALSE(r.allocations[1].hidden);
  EXPECT_EQ(r.allocations[1].name, "mine");
  EXPECT_FALSE(r.segments[0].blocks[0].allocation->hidden);
  EXPECT_TRUE(r.segments[0].blocks[1].allocation->hidden);
  EXPECT_EQ(r.segments[0].blocks[1].size, 512u);
  ASSERT_EQ(r.holders.size(), 2u);
  EXPECT_TRUE(r.holders[0].hidden);
  EXPECT_EQ(r.holders[0].bytes, 25u) << "bob and carol, folded";
  EXPECT_EQ(r.holders[0].allocations, 3u);
  EXPECT_EQ(r.holders[1].owner, "alice");
}

}  // namespace
}  // namespace memd
