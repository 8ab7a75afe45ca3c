// MemoryManager on a host-only catalog: the registry (allocate, get, list and
// its filters, deallocate), bounds-checked byte access, limits per device,
// memory type and owner (refused with their numbers, pools untouched), the
// out-of-memory ladder with reclaim callbacks, free_matching, per-owner usage,
// request validation, and validate() after every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "alloc_test_support.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {
namespace {

// What a reclaim callback does in these tests (as the model manager will):
// frees the allocations tagged "evictable" on the device, returns the bytes.
std::uint64_t evict_tagged(MemoryManager& manager, DeviceId device) {
  std::uint64_t freed = 0;
  for (const auto& rec : manager.free_matching({.device = device, .tag = "evictable"}, false)) freed += rec.size_bytes;
  return freed;
}

using alloc_test::expect_same_stats;

std::vector<std::byte> pattern_bytes(std::uint64_t n, std::uint64_t seed) {
  std::vector<std::byte> out(n);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x);
  }
  return out;
}

class MemoryManagerTest : public ::testing::Test {
 protected:
  void SetUp() override { make(256 * kMiB); }
  void make(std::uint64_t host_bytes) {
    bytes_.reset();
    manager_.reset();
    catalog_ = alloc_test::host_catalog(host_bytes);
    ASSERT_TRUE(catalog_);
    manager_ = std::make_unique<MemoryManager>(*catalog_);
    // Byte access lives in src/transfer; these tests reach it the way the
    // service does.
    for (const auto& b : catalog_->backends())
      if (b->name() == "host") bytes_ = std::make_unique<TransferEngine>(*manager_, *b, TransferOptions{.workers = 1});
  }
  void TearDown() override {
    if (manager_) {
      auto v = manager_->validate();
      EXPECT_TRUE(v) << "validate at teardown: " << (v ? "" : v.error().message);
    }
    bytes_.reset();
    manager_.reset();
  }

  AllocationRecord alloc(std::uint64_t size, std::string owner = "tester", MemoryType type = MemoryType::VRAM,
                         std::vector<std::string> tags = {}, MemoryPriority priority = MemoryPriority::Normal,
                         bool pinned = false) {
    AllocationRequest r;
    r.size_bytes = size;
    r.owner = std::move(owner);
    r.memory_type = type;
    r.tags = std::move(tags);
    r.priority = priority;
    r.pinned = pinned;
    auto rec = manager_->allocate(r);
    EXPECT_TRUE(rec) << "allocate " << size << ": " << (rec ? "" : rec.error().message);
    return rec ? *rec : AllocationRecord{};
  }

  void expect_valid(const char* where) {
    auto v = manager_->validate();
    EXPECT_TRUE(v) << where << ": " << (v ? "" : v.error().message);
  }

  PoolStats host_stats() {
    auto all = manager_->pool_stats();
    auto it = all.find(PoolKey{DeviceId::host(0), MemoryType::VRAM});
    return it == all.end() ? PoolStats{} : it->second;
  }

  std::set<AllocationId> ids(const std::vector<AllocationRecord>& records) {
    std::set<AllocationId> out;
    for (const auto& r : records) out.insert(r.id);
    return out;
  }

  std::unique_ptr<DeviceCatalog> catalog_;
  std::unique_ptr<MemoryManager> manager_;
  std::unique_ptr<TransferEngine> bytes_;
};

// ----- registry ------------------------------------------------------------

TEST_F(MemoryManagerTest, AllocateGetDeallocate) {
  AllocationRequest r;
  r.size_bytes = 3 * kMiB + 5;
  r.owner = "alice";
  r.name = "weights";
  r.tags = {"model", "llama"};
  r.priority = MemoryPriority::High;
  r.allocation_type = MemoryAllocationType::Model;
  auto rec = manager_->allocate(r);
  ASSERT_TRUE(rec) << rec.error().message;
  EXPECT_FALSE(rec->id.is_nil());
  EXPECT_EQ(rec->device, DeviceId::host(0)) << "VRAM without a GPU defaults to host:0";
  EXPECT_EQ(rec->memory_type, MemoryType::VRAM);
  EXPECT_EQ(rec->status, MemoryAllocationStatus::Allocated);
  EXPECT_EQ(rec->size_bytes, 3 * kMiB + 5);
  EXPECT_EQ(rec->owner, "alice");
  EXPECT_EQ(rec->name, "weights");
  EXPECT_EQ(rec->tags, (std::vector<std::string>{"model", "llama"}));
  EXPECT_EQ(rec->priority, MemoryPriority::High);
  EXPECT_EQ(rec->allocation_type, MemoryAllocationType::Model);
  EXPECT_NE(rec->address, 0u);
  EXPECT_EQ(rec->address % 256, 0u);
  EXPECT_TRUE(rec->movable());
  expect_valid("after allocate");

  auto got = manager_->get(rec->id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->id, rec->id);
  EXPECT_EQ(got->address, rec->address);
  EXPECT_EQ(got->size_bytes, rec->size_bytes);

  auto ram = alloc(kMiB, "alice", MemoryType::RAM);
  EXPECT_EQ(ram.device, DeviceId::cpu()) << "RAM defaults to cpu";
  EXPECT_NE(ram.id, rec->id);

  auto freed = manager_->deallocate(rec->id);
  ASSERT_TRUE(freed) << freed.error().message;
  EXPECT_EQ(freed->status, MemoryAllocationStatus::Freed);
  EXPECT_EQ(freed->id, rec->id);
  expect_valid("after deallocate");

  auto again = manager_->deallocate(rec->id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::not_found);
  auto gone = manager_->get(rec->id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ErrorCode::not_found);
  auto nil = manager_->deallocate(AllocationId{});
  ASSERT_FALSE(nil);
  EXPECT_EQ(nil.error().code, ErrorCode::not_found);
  auto rd = bytes_->read(rec->id, 0, 1);
  ASSERT_FALSE(rd);
  EXPECT_EQ(rd.error().code, ErrorCode::not_found);
  std::vector<std::byte> one(1);
  auto wr = bytes_->write(rec->id, 0, one);
  ASSERT_FALSE(wr);
  EXPECT_EQ(wr.error().code, ErrorCode::not_found);
  ASSERT_TRUE(manager_->deallocate(ram.id));
  EXPECT_EQ(host_stats().live_allocations, 0u);
}

TEST_F(MemoryManagerTest, ListFilters) {
  auto a = alloc(kMiB, "alice", MemoryType::VRAM, {"kv"}, MemoryPriority::Low);
  auto b = alloc(2 * kMiB, "alice", MemoryType::RAM, {"weights", "kv"}, MemoryPriority::High);
  auto c = alloc(4096, "bob", MemoryType::VRAM, {}, MemoryPriority::Normal);
  auto d = alloc(300, "bob", MemoryType::RAM, {"weights"}, MemoryPriority::Critical);
  ASSERT_FALSE(HasFailure());

  EXPECT_EQ(ids(manager_->list({})), (std::set{a.id, b.id, c.id, d.id}));
  EXPECT_EQ(ids(manager_->list({.device = DeviceId::host(0)})), (std::set{a.id, c.id}));
  EXPECT_EQ(ids(manager_->list({.device = DeviceId::cpu()})), (std::set{b.id, d.id}));
  EXPECT_EQ(ids(manager_->list({.memory_type = MemoryType::RAM})), (std::set{b.id, d.id}));
  EXPECT_EQ(ids(manager_->list({.owner = "alice"})), (std::set{a.id, b.id}));
  EXPECT_EQ(ids(manager_->list({.owner = "carol"})), std::set<AllocationId>{});
  EXPECT_EQ(ids(manager_->list({.status = MemoryAllocationStatus::Allocated})), (std::set{a.id, b.id, c.id, d.id}));
  EXPECT_EQ(ids(manager_->list({.status = MemoryAllocationStatus::Freed})), std::set<AllocationId>{});
  EXPECT_EQ(ids(manager_->list({.tag = "kv"})), (std::set{a.id, b.id}));
  EXPECT_EQ(ids(manager_->list({.tag = "weights"})), (std::set{b.id, d.id}));
  EXPECT_EQ(ids(manager_->list({.below_priority = MemoryPriority::Normal})), (std::set{a.id}));
  EXPECT_EQ(ids(manager_->list({.below_priority = MemoryPriority::Critical})), (std::set{a.id, b.id, c.id}));
  EXPECT_EQ(ids(manager_->list({.below_priority = MemoryPriority::Low})), std::set<AllocationId>{});
  // Filters combine with AND.
  EXPECT_EQ(ids(manager_->list({.memory_type = MemoryType::RAM, .owner = "bob"})), (std::set{d.id}));
  EXPECT_EQ(ids(manager_->list({.owner = "alice", .tag = "weights"})), (std::set{b.id}));

  // Newest first.
  auto all = manager_->list({});
  for (std::size_t i = 1; i < all.size(); ++i) EXPECT_GE(all[i - 1].created_at, all[i].created_at);

  ASSERT_TRUE(manager_->deallocate(b.id));
  EXPECT_EQ(ids(manager_->list({.owner = "alice"})), (std::set{a.id}));
  EXPECT_EQ(ids(manager_->list({.tag = "weights"})), (std::set{d.id}));
  expect_valid("after list");
  for (const auto& id : {a.id, c.id, d.id}) ASSERT_TRUE(manager_->deallocate(id));
  EXPECT_TRUE(manager_->list({}).empty());
}

// ----- data plane -------------------------------------------------------------

TEST_F(MemoryManagerTest, WriteReadRoundTripAtOffsets) {
  for (MemoryType type : {MemoryType::VRAM, MemoryType::RAM}) {
    const std::uint64_t size = kMiB + 17;
    auto rec = alloc(size, "io", type);
    ASSERT_FALSE(HasFailure());
    std::vector<std::byte> model(size, std::byte{0});
    std::uint64_t seed = 1;
    for (std::uint64_t off : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{255}, size / 2, size - 100, size - 1}) {
      std::uint64_t len = std::min<std::uint64_t>(size - off, 4096 + seed * 7);
      auto data = pattern_bytes(len, seed++);
      ASSERT_TRUE(bytes_->write(rec.id, off, data)) << "write at " << off;
      std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
      auto back = bytes_->read(rec.id, off, len);
      ASSERT_TRUE(back) << back.error().message;
      EXPECT_EQ(*back, data) << "read back at offset " << off;
    }
    // The whole allocation reads as the model: writes landed where asked, no further.
    auto whole = bytes_->read(rec.id, 0, size);
    ASSERT_TRUE(whole);
    EXPECT_TRUE(*whole == model) << to_string(type) << ": allocation bytes differ from the model";
    // Zero-length access at the very end is allowed and empty.
    auto empty = bytes_->read(rec.id, size, 0);
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->empty());
    ASSERT_TRUE(bytes_->write(rec.id, size, std::span<const std::byte>{}));
    auto before = manager_->get(rec.id);
    ASSERT_TRUE(before);
    ASSERT_TRUE(bytes_->write(rec.id, 0, pattern_bytes(8, 99)));
    auto after = manager_->get(rec.id);
    ASSERT_TRUE(after);
    EXPECT_GE(after->last_used_at, before->last_used_at);
    ASSERT_TRUE(manager_->deallocate(rec.id));
  }
}

TEST_F(MemoryManagerTest, OutOfBoundsAccessIsRejected) {
  const std::uint64_t size = 1000;
  auto rec = alloc(size);
  ASSERT_FALSE(HasFailure());
  auto data = pattern_bytes(size, 3);
  ASSERT_TRUE(bytes_->write(rec.id, 0, data));
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  struct Case {
    std::uint64_t offset, length;
  };
  const std::vector<Case> bad = {
      {size + 1, 0},  {size, 1},        {size - 1, 2},        {0, size + 1},         {1, kMax},
      {kMax, 1},      {kMax - 1, 2},    {kMax - 10, 20},      {size / 2, kMax - size / 2 + 1}, {kMax, kMax},
      {std::uint64_t{1} << 63, std::uint64_t{1} << 63}};
  for (const auto& c : bad) {
    auto r = bytes_->read(rec.id, c.offset, c.length);
    ASSERT_FALSE(r) << "read offset " << c.offset << " length " << c.length << " accepted";
    EXPECT_EQ(r.error().code, ErrorCode::out_of_range);
  }
  // Writes: the span's size is real, so use offsets that overflow with it.
  std::vector<std::byte> four(4, std::byte{0x7F});
  for (std::uint64_t off : {size - 3, size + 1, kMax - 2, kMax, std::uint64_t{1} << 63}) {
    auto w = bytes_->write(rec.id, off, four);
    ASSERT_FALSE(w) << "write at " << off << " accepted";
    EXPECT_EQ(w.error().code, ErrorCode::out_of_range);
  }
  auto too_long = pattern_bytes(size + 1, 4);
  auto w = bytes_->write(rec.id, 0, too_long);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, ErrorCode::out_of_range);
  // Nothing was written by the refused calls.
  auto back = bytes_->read(rec.id, 0, size);
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == data);
  ASSERT_TRUE(manager_->deallocate(rec.id));
}

// get/read/write racing the allocation's deallocate: each sees the live
// allocation (with its bytes) or not_found, never freed memory; a free that
// meets a read in flight is deferred until the read lets go. Under TSan
// this also checks that deallocate does not touch a record get() may copy.
TEST_F(MemoryManagerTest, AccessRacingDeallocateSeesLiveOrNotFound) {
  for (int round = 0; round < 150; ++round) {
    auto rec = alloc(8192, "racer");
    ASSERT_FALSE(HasFailure());
    auto data = pattern_bytes(8192, static_cast<std::uint64_t>(round));
    ASSERT_TRUE(bytes_->write(rec.id, 0, data));
    std::atomic<bool> started{false};
    std::string problem;
    std::thread reader([&] {
      for (int i = 0;; ++i) {
        if (i == 1) started.store(true);
        auto got = manager_->get(rec.id);
        if (!got) {
          if (got.error().code != ErrorCode::not_found) problem = got.error().message;
          return;
        }
        if (got->id != rec.id || got->size_bytes != 8192) problem = "get returned a different record";
        auto back = bytes_->read(rec.id, 0, 8192);
        if (back && *back != data) problem = "read saw bytes that are not the allocation's";
        if (!back && back.error().code != ErrorCode::not_found) problem = back.error().message;
        if (!problem.empty()) return;
        (void)bytes_->write(rec.id, 0, std::span<const std::byte>(data).first(64));
      }
    });
    while (!started.load()) std::this_thread::yield();
    auto freed = manager_->deallocate(rec.id);
    reader.join();
    ASSERT_TRUE(freed) << freed.error().message;
    // A read or write in flight holds the allocation: the free is then
    // deferred (Freeing) until it lets go, and done by the time it has.
    EXPECT_TRUE(freed->status == MemoryAllocationStatus::Freed || freed->status == MemoryAllocationStatus::Freeing)
        << to_string(freed->status);
    EXPECT_FALSE(manager_->get(rec.id)) << "still registered after the reader stopped";
    ASSERT_EQ(problem, "") << "round " << round;
  }
  expect_valid("after racing access");
}

// ----- limits ----------------------------------------------------------------

struct LimitCase {
  const char* name;
  Limits limits;
  MemoryType type;
  std::string owner;
  const char* scope;  // appears in the message
};

class MemoryManagerLimits : public MemoryManagerTest, public ::testing::WithParamInterface<LimitCase> {};

TEST_P(MemoryManagerLimits, QuotaExceededCarriesNumbersAndChangesNothing) {
  const auto& c = GetParam();
  ASSERT_TRUE(manager_->set_limits(c.limits));
  EXPECT_EQ(manager_->limits(), c.limits);
  auto first = alloc(6 * kMiB, c.owner, c.type);
  ASSERT_FALSE(HasFailure());
  auto data = pattern_bytes(6 * kMiB, 11);
  ASSERT_TRUE(bytes_->write(first.id, 0, data));
  auto stats_before = manager_->pool_stats();
  auto usage_before = manager_->usage_by_owner();

  AllocationRequest r;
  r.size_bytes = 5 * kMiB;
  r.owner = c.owner;
  r.memory_type = c.type;
  auto refused = manager_->allocate(r);
  ASSERT_FALSE(refused) << c.name << ": over-limit allocation accepted";
  EXPECT_EQ(refused.error().code, ErrorCode::quota_exceeded);
  const auto& msg = refused.error().message;
  EXPECT_NE(msg.find(c.scope), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(5 * kMiB)), std::string::npos) << "requested bytes missing: " << msg;
  EXPECT_NE(msg.find(std::to_string(6 * kMiB)), std::string::npos) << "bytes in use missing: " << msg;
  EXPECT_NE(msg.find(std::to_string(10 * kMiB)), std::string::npos) << "limit missing: " << msg;

  // Nothing moved: pools, counters, the existing allocation and its bytes.
  auto stats_after = manager_->pool_stats();
  ASSERT_EQ(stats_after.size(), stats_before.size());
  for (const auto& [key, st] : stats_before) expect_same_stats(st, stats_after.at(key), c.name);
  EXPECT_EQ(manager_->usage_by_owner().at(c.owner).bytes, usage_before.at(c.owner).bytes);
  EXPECT_EQ(manager_->usage_by_owner().at(c.owner).allocations, 1u);
  expect_valid("after a quota refusal");
  auto back = bytes_->read(first.id, 0, data.size());
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == data);

  // Exactly up to the limit is fine; one byte more is not.
  auto fits = alloc(4 * kMiB, c.owner, c.type);
  ASSERT_FALSE(HasFailure());
  r.size_bytes = 1;
  auto one_more = manager_->allocate(r);
  ASSERT_FALSE(one_more);
  EXPECT_EQ(one_more.error().code, ErrorCode::quota_exceeded);
  // Freeing makes room again.
  ASSERT_TRUE(manager_->deallocate(fits.id));
  r.size_bytes = 4 * kMiB;
  auto again = manager_->allocate(r);
  ASSERT_TRUE(again) << again.error().message;
  ASSERT_TRUE(manager_->deallocate(again->id));

  // Another scope is not limited.
  AllocationRequest other;
  other.size_bytes = 8 * kMiB;
  other.owner = "someone-else";
  other.memory_type = c.type == MemoryType::VRAM ? MemoryType::RAM : MemoryType::VRAM;
  auto free_scope = manager_->allocate(other);
  ASSERT_TRUE(free_scope) << free_scope.error().message;
  ASSERT_TRUE(manager_->deallocate(free_scope->id));
  ASSERT_TRUE(manager_->deallocate(first.id));
}

INSTANTIATE_TEST_SUITE_P(
    Scopes, MemoryManagerLimits,
    ::testing::Values(LimitCase{"device", Limits{.per_device = {{DeviceId::host(0), 10 * kMiB}}}, MemoryType::VRAM,
                                "dev-user", "device host:0"},
                      LimitCase{"memory_type", Limits{.per_memory_type = {{MemoryType::RAM, 10 * kMiB}}},
                                MemoryType::RAM, "ram-user", "memory type RAM"},
                      LimitCase{"owner", Limits{.per_owner = {{"capped", 10 * kMiB}}}, MemoryType::VRAM, "capped",
                                "owner 'capped'"}),
    [](const auto& p) { return std::string(p.param.name); });

TEST_F(MemoryManagerTest, LimitLoweredBelowUseKeepsExistingAllocations) {
  auto a = alloc(8 * kMiB, "u");
  ASSERT_FALSE(HasFailure());
  auto data = pattern_bytes(8 * kMiB, 21);
  ASSERT_TRUE(bytes_->write(a.id, 0, data));
  ASSERT_TRUE(manager_->set_limits(Limits{.per_device = {{DeviceId::host(0), 4 * kMiB}}}));
  auto got = manager_->get(a.id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->status, MemoryAllocationStatus::Allocated);
  auto back = bytes_->read(a.id, 0, data.size());
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == data);
  AllocationRequest r;
  r.size_bytes = 1;
  r.owner = "u";
  auto refused = manager_->allocate(r);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::quota_exceeded);
  expect_valid("over a lowered limit");
  ASSERT_TRUE(manager_->deallocate(a.id));
  r.size_bytes = 3 * kMiB;
  auto ok = manager_->allocate(r);
  ASSERT_TRUE(ok) << ok.error().message;
  ASSERT_TRUE(manager_->deallocate(ok->id));
  // Clearing limits lifts them.
  ASSERT_TRUE(manager_->set_limits(Limits{}));
  r.size_bytes = 20 * kMiB;
  auto big = manager_->allocate(r);
  ASSERT_TRUE(big) << big.error().message;
  ASSERT_TRUE(manager_->deallocate(big->id));
}

TEST_F(MemoryManagerTest, SetLimitsValidates) {
  auto unknown_device = manager_->set_limits(Limits{.per_device = {{DeviceId::cuda(0), kMiB}}});
  ASSERT_FALSE(unknown_device);
  EXPECT_EQ(unknown_device.error().code, ErrorCode::not_found);
  auto unknown_type = manager_->set_limits(Limits{.per_memory_type = {{MemoryType::Unknown, kMiB}}});
  ASSERT_FALSE(unknown_type);
  EXPECT_EQ(unknown_type.error().code, ErrorCode::invalid_argument);
  auto empty_owner = manager_->set_limits(Limits{.per_owner = {{"", kMiB}}});
  ASSERT_FALSE(empty_owner);
  EXPECT_EQ(empty_owner.error().code, ErrorCode::invalid_argument);
  auto huge = manager_->set_limits(Limits{.per_owner = {{"x", std::numeric_limits<std::uint64_t>::max()}}});
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(manager_->limits(), Limits{}) << "a refused set_limits changed the limits";
}

// ----- out of memory and reclaim -------------------------------------------------

TEST_F(MemoryManagerTest, OutOfMemoryExplainsItselfAndLeavesEverythingIntact) {
  make(64 * kMiB);
  auto a = alloc(48 * kMiB, "big");
  ASSERT_FALSE(HasFailure());
  auto data = pattern_bytes(4096, 5);
  ASSERT_TRUE(bytes_->write(a.id, 48 * kMiB - 4096, data));
  auto before = host_stats();
  auto usage_before = manager_->usage_by_owner();

  AllocationRequest r;
  r.size_bytes = 32 * kMiB;
  r.owner = "greedy";
  auto oom = manager_->allocate(r);
  ASSERT_FALSE(oom);
  EXPECT_EQ(oom.error().code, ErrorCode::out_of_memory);
  const auto& msg = oom.error().message;
  EXPECT_NE(msg.find("requested"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(32 * kMiB)), std::string::npos) << msg;
  EXPECT_NE(msg.find("largest free block"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fragmentation"), std::string::npos) << msg;
  EXPECT_NE(msg.find("host:0"), std::string::npos) << msg;
  expect_valid("after out_of_memory");
  auto usage_after = manager_->usage_by_owner();
  ASSERT_EQ(usage_after.size(), usage_before.size()) << "the refused request's quota was kept";
  EXPECT_EQ(usage_after.at("big").bytes, usage_before.at("big").bytes);
  EXPECT_FALSE(usage_after.contains("greedy")) << "the refused request's quota was kept";
  auto after = host_stats();
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.live_allocations, before.live_allocations);
  auto back = bytes_->read(a.id, 48 * kMiB - 4096, 4096);
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == data);
  EXPECT_EQ(manager_->list({}).size(), 1u);

  // What fits still works.
  r.size_bytes = 8 * kMiB;
  auto fits = manager_->allocate(r);
  ASSERT_TRUE(fits) << fits.error().message;
  ASSERT_TRUE(manager_->deallocate(fits->id));
  ASSERT_TRUE(manager_->deallocate(a.id));
}

TEST_F(MemoryManagerTest, ReclaimCallbackFreesAndTheRetrySucceeds) {
  make(64 * kMiB);
  auto victim = alloc(48 * kMiB, "models", MemoryType::VRAM, {"evictable"}, MemoryPriority::Low);
  ASSERT_FALSE(HasFailure());
  std::atomic<int> calls{0};
  std::uint64_t asked = 0;
  DeviceId asked_device;
  MemoryType asked_type = MemoryType::Unknown;
  auto handle = manager_->add_reclaim_callback([&](DeviceId d, MemoryType t, std::uint64_t needed) -> std::uint64_t {
    ++calls;
    asked = needed;
    asked_device = d;
    asked_type = t;
    // Calls back into the manager, as the model manager will.
    return evict_tagged(*manager_, d);
  });
  AllocationRequest r;
  r.size_bytes = 32 * kMiB;
  r.owner = "newcomer";
  auto ok = manager_->allocate(r);
  ASSERT_TRUE(ok) << "retry after reclaim failed: " << ok.error().message;
  EXPECT_EQ(calls.load(), 1);
  EXPECT_GE(asked, 32 * kMiB);
  EXPECT_EQ(asked_device, DeviceId::host(0));
  EXPECT_EQ(asked_type, MemoryType::VRAM);
  auto gone = manager_->get(victim.id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ErrorCode::not_found);
  expect_valid("after reclaim");
  auto data = pattern_bytes(2 * kMiB, 8);
  ASSERT_TRUE(bytes_->write(ok->id, 30 * kMiB, data));
  auto back = bytes_->read(ok->id, 30 * kMiB, data.size());
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == data);

  // Nothing left to reclaim: the callback is asked, frees nothing, and the
  // request fails with out_of_memory.
  r.size_bytes = 40 * kMiB;
  auto oom = manager_->allocate(r);
  ASSERT_FALSE(oom);
  EXPECT_EQ(oom.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(calls.load(), 2);

  // Removed callbacks are not called.
  manager_->remove_reclaim_callback(handle);
  oom = manager_->allocate(r);
  ASSERT_FALSE(oom);
  EXPECT_EQ(calls.load(), 2);
  // Each shortfall trimmed first; only the first was saved by reclaim.
  EXPECT_EQ(manager_->reclaim_counts(), (ReclaimLadderCounts{.trim_retries = 3, .reclaim_retries = 1, .failures = 2}));
  ASSERT_TRUE(manager_->deallocate(ok->id));
}

TEST_F(MemoryManagerTest, ReclaimIsNotCalledWhenNothingIsShort) {
  std::atomic<int> calls{0};
  manager_->add_reclaim_callback([&](DeviceId, MemoryType, std::uint64_t) -> std::uint64_t {
    ++calls;
    return 0;
  });
  auto a = alloc(16 * kMiB);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(calls.load(), 0);
  // A quota refusal is not a memory shortfall either.
  ASSERT_TRUE(manager_->set_limits(Limits{.per_owner = {{"tester", 16 * kMiB}}}));
  AllocationRequest r;
  r.size_bytes = kMiB;
  r.owner = "tester";
  auto q = manager_->allocate(r);
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().code, ErrorCode::quota_exceeded);
  EXPECT_EQ(calls.load(), 0);
  ASSERT_TRUE(manager_->deallocate(a.id));
}

// MemoryManager::validate() is documented thread-safe and reclaim callbacks
// may call back into the manager, but allocate() counts the request's quota
// before the registry entry exists, so validate() from a reclaim callback (or
// any thread while an allocation is in flight) fails with "stale owner usage
// entries" or "usage counters of owner ... disagree with the registry".
// See the report; enable once fixed.
TEST_F(MemoryManagerTest, ValidateHoldsWhileAnAllocationIsInFlight) {
  make(64 * kMiB);
  auto a = alloc(48 * kMiB, "models", MemoryType::VRAM, {"evictable"});
  ASSERT_FALSE(HasFailure());
  std::string inside;
  manager_->add_reclaim_callback([&](DeviceId d, MemoryType, std::uint64_t) -> std::uint64_t {
    if (auto v = manager_->validate(); !v) inside = v.error().message;
    return evict_tagged(*manager_, d);
  });
  AllocationRequest r;
  r.size_bytes = 32 * kMiB;
  r.owner = "newcomer";
  auto ok = manager_->allocate(r);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(inside, "") << "validate() inside a reclaim callback failed";
  ASSERT_TRUE(manager_->deallocate(ok->id));
  EXPECT_FALSE(manager_->get(a.id));
}

// A request larger than the whole device can never succeed; asking reclaim
// callbacks to evict models for it destroys cached work for nothing.
// See the report; enable once MemoryManager::allocate checks capacity first.
TEST_F(MemoryManagerTest, RequestLargerThanTheDeviceDoesNotTriggerReclaim) {
  make(64 * kMiB);
  auto model = alloc(16 * kMiB, "models", MemoryType::VRAM, {"evictable"});
  ASSERT_FALSE(HasFailure());
  std::atomic<int> calls{0};
  manager_->add_reclaim_callback([&](DeviceId d, MemoryType, std::uint64_t) -> std::uint64_t {
    ++calls;
    return evict_tagged(*manager_, d);
  });
  AllocationRequest r;
  r.size_bytes = 65 * kMiB;
  auto oom = manager_->allocate(r);
  ASSERT_FALSE(oom);
  EXPECT_EQ(oom.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(calls.load(), 0) << "reclaim was asked to make room for a request larger than the device";
  EXPECT_TRUE(manager_->get(model.id)) << "a model was evicted for an impossible request";
  EXPECT_EQ(manager_->reclaim_counts(), (ReclaimLadderCounts{.capacity_refusals = 1}));
}

// ManagerOptions::max_device_fraction is "the fraction of a device's capacity
// memd may reserve, absent explicit limits", but MemoryManager's pool_for only
// applies it to Segments pools: VRAM pools (Virtual mode, every GPU and
// host:N) get the whole device. See the report; enable once fixed.
TEST_F(MemoryManagerTest, MaxDeviceFractionCapsVramPools) {
  manager_.reset();
  catalog_ = alloc_test::host_catalog(64 * kMiB);
  ASSERT_TRUE(catalog_);
  manager_ = std::make_unique<MemoryManager>(*catalog_, ManagerOptions{.max_device_fraction = 0.5});
  AllocationRequest r;
  r.size_bytes = 40 * kMiB;
  auto rec = manager_->allocate(r);
  ASSERT_FALSE(rec) << "40 MiB reserved on a 64 MiB device capped at half";
  EXPECT_EQ(rec.error().code, ErrorCode::out_of_memory);
  auto pool = manager_->pool(DeviceId::host(0), MemoryType::VRAM);
  ASSERT_TRUE(pool);
  EXPECT_LE((*pool)->options().capacity, 32 * kMiB);
}

// ----- free_matching and usage -----------------------------------------------

TEST_F(MemoryManagerTest, FreeMatchingSparesPinnedUnlessAsked) {
  auto a = alloc(kMiB, "job");
  auto b = alloc(2 * kMiB, "job", MemoryType::RAM);
  auto p = alloc(kMiB, "job", MemoryType::VRAM, {}, MemoryPriority::Normal, /*pinned=*/true);
  auto other = alloc(kMiB, "other");
  ASSERT_FALSE(HasFailure());
  EXPECT_FALSE(p.movable());

  auto freed = manager_->free_matching({.owner = "job"}, false);
  EXPECT_EQ(ids(freed), (std::set{a.id, b.id}));
  for (const auto& r : freed) EXPECT_EQ(r.status, MemoryAllocationStatus::Freed);
  EXPECT_TRUE(manager_->get(p.id)) << "pinned allocation freed without include_pinned";
  EXPECT_TRUE(manager_->get(other.id));
  expect_valid("after free_matching");

  freed = manager_->free_matching({.owner = "job"}, true);
  EXPECT_EQ(ids(freed), (std::set{p.id}));
  EXPECT_FALSE(manager_->get(p.id));
  EXPECT_TRUE(manager_->get(other.id));
  EXPECT_TRUE(manager_->free_matching({.owner = "job"}, true).empty());
  ASSERT_TRUE(manager_->deallocate(other.id));
}

TEST_F(MemoryManagerTest, UsageByOwnerCountsRequestedBytes) {
  auto a = alloc(1000, "alice");
  auto b = alloc(3 * kMiB, "alice", MemoryType::RAM);
  auto c = alloc(5, "bob");
  ASSERT_FALSE(HasFailure());
  auto u = manager_->usage_by_owner();
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u["alice"].bytes, 1000 + 3 * kMiB);
  EXPECT_EQ(u["alice"].allocations, 2u);
  EXPECT_EQ(u["bob"].bytes, 5u);
  EXPECT_EQ(u["bob"].allocations, 1u);
  ASSERT_TRUE(manager_->deallocate(a.id));
  u = manager_->usage_by_owner();
  EXPECT_EQ(u["alice"].bytes, 3 * kMiB);
  EXPECT_EQ(u["alice"].allocations, 1u);
  ASSERT_TRUE(manager_->deallocate(c.id));
  u = manager_->usage_by_owner();
  EXPECT_FALSE(u.contains("bob")) << "an owner with nothing left still has a usage entry";
  ASSERT_TRUE(manager_->deallocate(b.id));
  EXPECT_TRUE(manager_->usage_by_owner().empty());
}

// ----- request validation ------------------------------------------------------

TEST_F(MemoryManagerTest, InvalidRequestsAreRejectedBeforeAnythingHappens) {
  auto base = [] {
    AllocationRequest r;
    r.size_bytes = kMiB;
    r.owner = "v";
    return r;
  };
  std::vector<std::pair<std::string, AllocationRequest>> bad;
  {
    auto r = base();
    r.size_bytes = 0;
    bad.emplace_back("size 0", r);
  }
  {
    auto r = base();
    r.size_bytes = kMaxRequestBytes + 1;
    bad.emplace_back("size over 2^62", r);
  }
  {
    auto r = base();
    r.size_bytes = std::numeric_limits<std::uint64_t>::max();
    bad.emplace_back("size 2^64-1", r);
  }
  {
    auto r = base();
    r.memory_type = MemoryType::Unknown;
    bad.emplace_back("Unknown memory type", r);
  }
  {
    auto r = base();
    r.owner = "";
    bad.emplace_back("empty owner", r);
  }
  {
    auto r = base();
    r.owner = std::string(kMaxOwnerBytes + 1, 'o');
    bad.emplace_back("owner too long", r);
  }
  {
    auto r = base();
    r.owner = "owner\nINFO forged log line";
    bad.emplace_back("owner with a control character", r);
  }
  {
    auto r = base();
    r.name = std::string(257, 'n');
    bad.emplace_back("name too long", r);
  }
  {
    auto r = base();
    r.tags.assign(65, "t");
    bad.emplace_back("too many tags", r);
  }
  {
    auto r = base();
    r.tags = {"ok", ""};
    bad.emplace_back("empty tag", r);
  }
  {
    auto r = base();
    r.tags = {std::string(129, 't')};
    bad.emplace_back("tag too long", r);
  }
  for (const auto& [what, r] : bad) {
    auto rec = manager_->allocate(r);
    ASSERT_FALSE(rec) << what << " accepted";
    // A size past any device is well-formed: out_of_memory, not a shape error.
    const auto want = what.starts_with("size 2^") || what == "size over 2^62" ? ErrorCode::out_of_memory
                                                                              : ErrorCode::invalid_argument;
    EXPECT_EQ(rec.error().code, want) << what << ": " << rec.error().message;
  }
  EXPECT_TRUE(manager_->list({}).empty());
  EXPECT_TRUE(manager_->usage_by_owner().empty());
  for (const auto& [key, st] : manager_->pool_stats()) EXPECT_EQ(st.total_allocations, 0u);

  // The limits of what is allowed are allowed.
  auto r = base();
  r.owner = std::string(kMaxOwnerBytes, 'o');
  r.tags.assign(64, "t");
  auto rec = manager_->allocate(r);
  ASSERT_TRUE(rec) << rec.error().message;
  ASSERT_TRUE(manager_->deallocate(rec->id));

  // Unknown devices and types a device does not serve.
  auto nodev = base();
  nodev.device = DeviceId::host(5);
  auto e1 = manager_->allocate(nodev);
  ASSERT_FALSE(e1);
  EXPECT_TRUE(e1.error().code == ErrorCode::not_found || e1.error().code == ErrorCode::invalid_argument)
      << e1.error().message;
  auto wrong_type = base();
  wrong_type.device = DeviceId::host(0);
  wrong_type.memory_type = MemoryType::RAM;
  auto e2 = manager_->allocate(wrong_type);
  ASSERT_FALSE(e2) << "host:0 served RAM";
  EXPECT_TRUE(manager_->usage_by_owner().empty()) << "a refused request left quota counted";
}

TEST_F(MemoryManagerTest, TrimGivesCachedMemoryBack) {
  std::vector<AllocationId> live;
  for (int i = 0; i < 16; ++i) live.push_back(alloc(4 * kMiB).id);
  ASSERT_FALSE(HasFailure());
  for (const auto& id : live) ASSERT_TRUE(manager_->deallocate(id));
  EXPECT_GT(host_stats().reserved_bytes, 0u);
  EXPECT_GT(manager_->trim(), 0u);
  EXPECT_EQ(host_stats().reserved_bytes, 0u);
  auto snap = manager_->snapshot();
  EXPECT_TRUE(snap.contains(PoolKey{DeviceId::host(0), MemoryType::VRAM}));
  expect_valid("after trim");
}

}  // namespace
}  // namespace memd
