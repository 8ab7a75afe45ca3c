// Allocation history and out-of-memory snapshots through MemoryService, on a
// 64 MiB host device with the monitor sampling only at start (interval 0).
//
// The must-show: an out_of_memory returns a snapshot id whose history shows
// exactly the allocations that filled the device (ids, owners, names, sizes,
// in order) and whose block map accounts for each of them. Also: every path
// that frees is recorded, moves in both devices' rings, the pressure
// policy's refusal gets a snapshot too, the permission rules, ring bounds
// and snapshot eviction.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

const Caller kAdmin = Caller::host("ops");

class HistoryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { make({}); }

  void make(HistoryOptions history, std::vector<std::uint64_t> devices = {64 * kMiB},
            PressureThresholds thresholds = {}) {
    service_.reset();
    ServiceOptions options;
    options.backends.host_device_sizes = std::move(devices);
    options.backends.enable_cuda = false;
    options.monitor.interval = std::chrono::milliseconds(0);
    options.monitor.thresholds = thresholds;
    options.session_sweep_interval = std::chrono::milliseconds(0);
    options.history = history;
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
  }

  Result<AllocationRecord> try_allocate(const std::string& owner, std::uint64_t bytes, std::string name = "",
                                        MemoryPriority priority = MemoryPriority::Normal, int device = 0) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = DeviceId::host(device);
    r.name = std::move(name);
    r.priority = priority;
    return service_->allocate(Caller::as(owner), r);
  }

  AllocationRecord allocate(const std::string& owner, std::uint64_t bytes, std::string name = "") {
    auto r = try_allocate(owner, bytes, std::move(name));
    EXPECT_TRUE(r) << r.error().message;
    return r.value_or(AllocationRecord{});
  }

  std::vector<HistoryEntry> recent(const Caller& caller, std::size_t limit = 100,
                                   std::optional<DeviceId> device = std::nullopt) {
    auto r = service_->history(caller, {device, std::nullopt, limit});
    EXPECT_TRUE(r) << r.error().message;
    return r.value_or(std::vector<HistoryEntry>{});
  }

  std::unique_ptr<MemoryService> service_;
};

TEST_F(HistoryServiceTest, OutOfMemorySnapshotShowsWhatFilledTheDevice) {
  auto events = service_->events().subscribe({});
  // Three owners fill 52 MiB of the 64 MiB device (memd may use 95 %).
  const std::vector<AllocationRecord> filled = {
      allocate("alice", 16 * kMiB, "weights"),
      allocate("bob", 12 * kMiB, "kv-cache"),
      allocate("carol", 16 * kMiB, "activations"),
      allocate("alice", 8 * kMiB, "scratch"),
  };
  auto refused = try_allocate("bob", 16 * kMiB, "more kv");
  ASSERT_FALSE(refused);
  const Error& error = refused.error();
  ASSERT_EQ(error.code, ErrorCode::out_of_memory) << error.message;
  ASSERT_TRUE(error.snapshot_id);
  EXPECT_NE(error.message.find("(snapshot " + *error.snapshot_id + "; memd history " + *error.snapshot_id + ")"),
            std::string::npos)
      << error.message;
  auto id = SnapshotId::parse(*error.snapshot_id);
  ASSERT_TRUE(id);

  auto snapshot = service_->history_snapshot(kAdmin, *id);
  ASSERT_TRUE(snapshot) << snapshot.error().message;
  const OomSnapshot& s = *snapshot;
  EXPECT_EQ(s.id, *id);
  EXPECT_EQ(s.request.owner, "bob");
  EXPECT_EQ(s.request.name, "more kv");
  EXPECT_EQ(s.request.size_bytes, 16 * kMiB);
  EXPECT_EQ(s.request.device, DeviceId::host(0));
  EXPECT_EQ(s.request.refused_by, "pool");
  EXPECT_EQ(s.request.error.code, ErrorCode::out_of_memory);
  EXPECT_EQ(s.request.error.message.find("snapshot"), std::string::npos) << "the refusal as first given";
  EXPECT_EQ(s.device_total_bytes, 64 * kMiB);

  // The history: exactly the four allocations, in order, then the failure.
  ASSERT_EQ(s.history.size(), filled.size() + 1);
  EXPECT_EQ(s.history_dropped, 0u);
  std::uint64_t allocated = 0;
  for (std::size_t i = 0; i < filled.size(); ++i) {
    const HistoryEntry& e = s.history[i];
    EXPECT_EQ(e.kind, HistoryKind::allocate) << i;
    ASSERT_TRUE(e.allocation) << i;
    EXPECT_EQ(*e.allocation, filled[i].id) << i;
    EXPECT_EQ(e.owner, filled[i].owner) << i;
    EXPECT_EQ(e.name, filled[i].name) << i;
    EXPECT_EQ(e.size_bytes, filled[i].size_bytes) << i;
    EXPECT_EQ(e.device, DeviceId::host(0));
    ASSERT_TRUE(e.block_bytes) << i;
    EXPECT_GE(*e.block_bytes, e.size_bytes) << i;
    allocated += *e.block_bytes;
    EXPECT_EQ(e.allocated_bytes, allocated) << "the pool state after entry " << i;
    EXPECT_EQ(e.live_allocations, i + 1);
    EXPECT_GE(e.reserved_bytes, e.allocated_bytes);
    if (i > 0) {
      EXPECT_GT(e.sequence, s.history[i - 1].sequence);
    }
  }
  const HistoryEntry& failed = s.history.back();
  EXPECT_EQ(failed.kind, HistoryKind::failed);
  EXPECT_EQ(failed.owner, "bob");
  EXPECT_EQ(failed.size_bytes, 16 * kMiB);
  EXPECT_FALSE(failed.allocation);
  EXPECT_EQ(failed.error, ErrorCode::out_of_memory);
  EXPECT_EQ(failed.snapshot, *id);
  EXPECT_EQ(failed.allocated_bytes, allocated);

  // The block map accounts for each allocation: one allocated block starts
  // at it and holds it; nothing else is live.
  std::set<AllocationId> seen;
  std::uint64_t live = 0, block_live = 0;
  for (const auto& seg : s.segments) {
    live += seg.live_bytes;
    EXPECT_EQ(seg.blocks.size(), seg.block_count) << "nothing left out at this size";
    for (const auto& b : seg.blocks) {
      if (b.state == "free") continue;
      block_live += b.size;
      ASSERT_TRUE(b.allocation) << "a live block nobody holds at " << b.address;
      EXPECT_TRUE(seen.insert(*b.allocation->id).second);
      auto it = std::find_if(filled.begin(), filled.end(), [&](auto& r) { return r.id == *b.allocation->id; });
      ASSERT_NE(it, filled.end());
      EXPECT_EQ(b.allocation->owner, it->owner);
      EXPECT_EQ(b.address, it->address);
      EXPECT_GE(b.size, it->size_bytes);
    }
  }
  EXPECT_EQ(seen.size(), filled.size());
  EXPECT_EQ(live, block_live);
  EXPECT_EQ(live, allocated);
  EXPECT_EQ(s.blocks_omitted, 0u);
  ASSERT_TRUE(s.pools.contains(MemoryType::VRAM));
  EXPECT_EQ(s.pools.at(MemoryType::VRAM).allocated_bytes, allocated);
  EXPECT_LT(s.largest_free_block(), 16 * kMiB);

  // Holders and allocations, largest first.
  ASSERT_EQ(s.holders.size(), 3u);
  EXPECT_EQ(s.holders[0].owner, "alice");
  EXPECT_EQ(s.holders[0].bytes, 24 * kMiB);
  EXPECT_EQ(s.holders[0].allocations, 2u);
  EXPECT_EQ(s.holders[1].owner, "carol");
  EXPECT_EQ(s.holders[2].owner, "bob");
  ASSERT_EQ(s.allocations.size(), 4u);
  EXPECT_EQ(s.allocations[0].size_bytes, 16 * kMiB);
  EXPECT_EQ(s.allocations[3].size_bytes, 8 * kMiB);

  // The allocation_failed event names the snapshot too.
  bool evented = false;
  for (const auto& e : events->poll())
    if (e->kind == EventKind::allocation_failed) {
      auto data = nlohmann::json::parse(e->line)["data"];
      EXPECT_EQ(data["snapshotId"], *error.snapshot_id);
      evented = true;
    }
  EXPECT_TRUE(evented);

  // The recent history shows the same; the service still works.
  auto r = recent(kAdmin);
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(r.back().snapshot, *id);
  EXPECT_TRUE(service_->deallocate(kAdmin, filled[2].id));
  EXPECT_TRUE(try_allocate("bob", 16 * kMiB));
  EXPECT_TRUE(service_->validate());
}

TEST_F(HistoryServiceTest, EveryPathThatFreesIsRecorded) {
  auto a = allocate("alice", kMiB, "freed by its owner");
  auto b = allocate("bob", kMiB, "cleared");
  auto c = allocate("carol", kMiB, "host went away");
  ASSERT_TRUE(service_->deallocate(Caller::as("alice"), a.id));
  ClearRequest clear;
  clear.owner = "bob";
  ASSERT_TRUE(service_->clear(Caller::as("bob"), clear));
  EXPECT_EQ(service_->release_owner("carol").size(), 1u);
  // A session's end.
  auto session = service_->open_session(Caller::as("dave"), std::chrono::seconds(30));
  ASSERT_TRUE(session);
  Caller dave = Caller::as("dave");
  dave.session = session->id;
  AllocationRequest req;
  req.size_bytes = kMiB;
  req.device = DeviceId::host(0);
  auto d = service_->allocate(dave, req);
  ASSERT_TRUE(d);
  ASSERT_TRUE(service_->close_session(Caller::as("dave"), session->id));

  auto r = recent(kAdmin);
  ASSERT_EQ(r.size(), 8u);
  const std::vector<std::pair<HistoryKind, AllocationId>> expected = {
      {HistoryKind::allocate, a.id}, {HistoryKind::allocate, b.id}, {HistoryKind::allocate, c.id},
      {HistoryKind::free, a.id},     {HistoryKind::free, b.id},     {HistoryKind::free, c.id},
      {HistoryKind::allocate, d->id}, {HistoryKind::free, d->id}};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(r[i].kind, expected[i].first) << i;
    EXPECT_EQ(r[i].allocation, expected[i].second) << i;
  }
  EXPECT_EQ(r.back().live_allocations, 0u);
  EXPECT_EQ(r.back().allocated_bytes, 0u);
  EXPECT_FALSE(r[3].deferred);
}

TEST_F(HistoryServiceTest, MovesAreRecordedOnBothDevices) {
  make({}, {64 * kMiB, 64 * kMiB});
  auto a = allocate("alice", 2 * kMiB, "moving");
  TransferSpec spec;
  spec.source = a.id;
  spec.to_device = DeviceId::host(1);
  auto submitted = service_->transfer(Caller::as("alice"), spec);
  ASSERT_TRUE(submitted) << submitted.error().message;
  for (int i = 0; i < 500; ++i) {
    auto st = service_->transfer_status(Caller::as("alice"), submitted->id);
    ASSERT_TRUE(st);
    if (st->finished()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The completion hook runs after the report says finished; wait for it.
  std::vector<HistoryEntry> there;
  for (int i = 0; i < 500 && there.empty(); ++i) {
    there = recent(kAdmin, 100, DeviceId::host(1));
    if (there.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(there.size(), 1u);
  EXPECT_EQ(there[0].kind, HistoryKind::move);
  EXPECT_EQ(there[0].allocation, a.id);
  EXPECT_EQ(there[0].owner, "alice");
  ASSERT_TRUE(there[0].from && there[0].to);
  EXPECT_EQ(there[0].from->device, DeviceId::host(0));
  EXPECT_EQ(there[0].to->device, DeviceId::host(1));
  EXPECT_EQ(there[0].live_allocations, 1u);
  auto here = recent(kAdmin, 100, DeviceId::host(0));
  ASSERT_EQ(here.size(), 2u);
  EXPECT_EQ(here[0].kind, HistoryKind::allocate);
  EXPECT_EQ(here[1].kind, HistoryKind::move);
  EXPECT_EQ(here[1].live_allocations, 0u) << "host:0's state after the move left it";
}

TEST_F(HistoryServiceTest, EvictionsComeThroughRecord) {
  auto a = allocate("models", 4 * kMiB, "sdxl-vae");
  service_->history().record(HistoryKind::evict, a, HistoryPlace{DeviceId::host(0), MemoryType::VRAM},
                             HistoryPlace{DeviceId::cpu(), MemoryType::RAM});
  auto r = recent(kAdmin, 1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, HistoryKind::evict);
  EXPECT_EQ(r[0].name, "sdxl-vae");
  EXPECT_EQ(r[0].to->device, DeviceId::cpu());
}

// The pressure policy refuses a Low-priority request at Critical before the
// allocator is asked: the caller needs to see why just the same.
TEST_F(HistoryServiceTest, PressureRefusalGetsASnapshotToo) {
  make({}, {64 * kMiB}, PressureThresholds{.moderate = 20, .high = 30, .critical = 40, .hysteresis = 3});
  auto big = allocate("alice", 32 * kMiB, "weights");  // ~53 % of 60.8 MiB: Critical
  auto refused = try_allocate("bob", kMiB, "low", MemoryPriority::Low);
  ASSERT_FALSE(refused);
  ASSERT_EQ(refused.error().code, ErrorCode::out_of_memory) << refused.error().message;
  ASSERT_TRUE(refused.error().snapshot_id);
  auto id = SnapshotId::parse(*refused.error().snapshot_id);
  ASSERT_TRUE(id);
  auto s = service_->history_snapshot(Caller::as("bob"), *id);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->request.refused_by, "pressure");
  EXPECT_EQ(s->request.priority, MemoryPriority::Low);
  ASSERT_EQ(s->history.size(), 2u);
  EXPECT_TRUE(s->history[0].hidden) << "bob sees alice's allocation by its size only";
  EXPECT_EQ(s->history[0].size_bytes, 32 * kMiB);
  EXPECT_EQ(s->history[1].kind, HistoryKind::failed);
  EXPECT_EQ(s->history[1].owner, "bob");
  // A Normal request is not refused by the policy.
  EXPECT_TRUE(try_allocate("bob", kMiB, "normal"));
}

TEST_F(HistoryServiceTest, QuotaRefusalIsRecordedWithoutASnapshot) {
  LimitUpdate limit;
  limit.owner = "alice";
  limit.bytes = 2 * kMiB;
  ASSERT_TRUE(service_->update_limits(kAdmin, limit));
  auto refused = try_allocate("alice", 4 * kMiB);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::quota_exceeded);
  EXPECT_FALSE(refused.error().snapshot_id);
  auto r = recent(kAdmin);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].kind, HistoryKind::failed);
  EXPECT_EQ(r[0].error, ErrorCode::quota_exceeded);
  EXPECT_FALSE(r[0].snapshot);
}

TEST_F(HistoryServiceTest, WhoSeesWhat) {
  allocate("alice", 40 * kMiB, "alice's");
  allocate("mallory", 8 * kMiB, "mallory's");
  auto refused = try_allocate("bob", 32 * kMiB, "bob's");
  ASSERT_FALSE(refused);
  ASSERT_TRUE(refused.error().snapshot_id);
  const auto id = *SnapshotId::parse(*refused.error().snapshot_id);

  // History: your own entries; the admin all and any owner's.
  auto mine = recent(Caller::as("alice"));
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].owner, "alice");
  EXPECT_EQ(recent(kAdmin).size(), 3u);
  EXPECT_EQ(service_->history(Caller::as("mallory"), {std::nullopt, std::string("alice"), 100}).error().code,
            ErrorCode::permission_denied);
  EXPECT_EQ(service_->history(kAdmin, {std::nullopt, std::string("alice"), 100})->size(), 1u);
  EXPECT_EQ(service_->history(kAdmin, {DeviceId::host(9), std::nullopt, 100}).error().code, ErrorCode::not_found);

  // The snapshot: the failing owner (others hidden) or the admin (all).
  EXPECT_EQ(service_->history_snapshot(Caller::as("mallory"), id).error().code, ErrorCode::permission_denied);
  auto bobs = service_->history_snapshot(Caller::as("bob"), id);
  ASSERT_TRUE(bobs);
  for (const auto& a : bobs->allocations) {
    EXPECT_TRUE(a.hidden);
    EXPECT_TRUE(a.owner.empty());
    EXPECT_FALSE(a.id);
  }
  for (const auto& seg : bobs->segments)
    for (const auto& b : seg.blocks)
      if (b.allocation) {
        EXPECT_TRUE(b.allocation->hidden);
      }
  ASSERT_EQ(bobs->holders.size(), 1u);
  EXPECT_TRUE(bobs->holders[0].hidden);
  EXPECT_EQ(bobs->holders[0].bytes, 48 * kMiB);
  EXPECT_EQ(bobs->history.back().owner, "bob");
  auto admins = service_->history_snapshot(kAdmin, id);
  ASSERT_TRUE(admins);
  EXPECT_EQ(admins->holders.size(), 2u);
  EXPECT_EQ(admins->history[0].owner, "alice");
  EXPECT_EQ(service_->history_snapshot(kAdmin, SnapshotId::generate()).error().code, ErrorCode::not_found);
}

TEST_F(HistoryServiceTest, RingKeepsTheNewestEntries) {
  make({.ring_capacity = 16});
  std::vector<AllocationRecord> made;
  for (int i = 0; i < 20; ++i) made.push_back(allocate("alice", 64 * kKiB, "n" + std::to_string(i)));
  auto r = recent(kAdmin, 4096, DeviceId::host(0));
  ASSERT_EQ(r.size(), 16u);
  EXPECT_EQ(r.front().allocation, made[4].id) << "the oldest four dropped";
  EXPECT_EQ(r.back().allocation, made[19].id);
  EXPECT_EQ(service_->history().history().dropped(DeviceId::host(0)), 4u);
  EXPECT_TRUE(service_->validate());
}

TEST_F(HistoryServiceTest, OnlyTheNewestSnapshotsAreKept) {
  make({.snapshots = {.max_snapshots = 3}});
  allocate("alice", 56 * kMiB, "fills it");
  std::vector<SnapshotId> ids;
  for (int i = 0; i < 5; ++i) {
    auto refused = try_allocate("bob", 16 * kMiB);
    ASSERT_FALSE(refused);
    ASSERT_TRUE(refused.error().snapshot_id);
    ids.push_back(*SnapshotId::parse(*refused.error().snapshot_id));
  }
  EXPECT_EQ(std::set<SnapshotId>(ids.begin(), ids.end()).size(), 5u) << "one snapshot per failure";
  EXPECT_EQ(service_->history_snapshot(kAdmin, ids[0]).error().code, ErrorCode::not_found);
  EXPECT_EQ(service_->history_snapshot(kAdmin, ids[1]).error().code, ErrorCode::not_found);
  for (int i = 2; i < 5; ++i) {
    auto s = service_->history_snapshot(kAdmin, ids[i]);
    ASSERT_TRUE(s) << i;
    // Each later snapshot's history holds the failures before it.
    EXPECT_EQ(s->history.size(), 2u + i);
  }
  EXPECT_TRUE(service_->validate());
}

// Blocks past the cap are counted, not kept; allocations too.
TEST_F(HistoryServiceTest, SnapshotCapsSayWhatTheyLeftOut) {
  make({.snapshots = {.max_blocks = 3, .max_allocations = 2}});
  for (int i = 0; i < 6; ++i) allocate("alice", 4 * kMiB);
  auto refused = try_allocate("alice", 60 * kMiB);
  ASSERT_FALSE(refused);
  auto s = service_->history_snapshot(kAdmin, *SnapshotId::parse(*refused.error().snapshot_id));
  ASSERT_TRUE(s);
  std::uint64_t kept = 0, total = 0;
  for (const auto& seg : s->segments) {
    kept += seg.blocks.size();
    total += seg.block_count;
  }
  EXPECT_EQ(kept, 3u);
  EXPECT_EQ(s->blocks_omitted, total - 3);
  EXPECT_EQ(s->allocations.size(), 2u);
  EXPECT_EQ(s->allocations_omitted, 4u);
  ASSERT_EQ(s->holders.size(), 1u);
  EXPECT_EQ(s->holders[0].bytes, 24 * kMiB) << "holders count every allocation";
}

}  // namespace
}  // namespace memd
