// ReclaimLadder on a bare DevicePool of a 64 MiB host device, no
// MemoryManager: the trim rung recovers memory the pool holds as cached huge
// ranges (freed plainly or stream-ordered), the reclaim rung runs only when
// trimming is not enough and its freeing makes the retry succeed, a request
// over the capacity is refused at once, and the final error carries the
// numbers. The shortfalls are built so that no retry inside the pool can
// cover them (a cached huge range is given back only by trim), so the counts
// hold whether or not the pool retries by itself.
#include "alloc/reclaim_ladder.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "alloc_test_support.hpp"

namespace memd {
namespace {

using alloc_test::make_pool;
using alloc_test::PoolEnv;

// Segments mode with 8 MiB huge blocks: six of them fill 48 MiB of the
// 64 MiB device; freed, they stay as cached huge ranges (within the
// retention budget of the 48 MiB peak). A 4 MiB request then needs a fresh
// 32 MiB segment, which the device can only give once the cache is trimmed.
PoolOptions huge_cache_options() {
  return PoolOptions{.mode = PoolMode::Segments, .huge_threshold = 8 * kMiB, .segment_size = 32 * kMiB};
}

std::vector<void*> fill_huge(DevicePool& pool, int n) {
  std::vector<void*> out;
  for (int i = 0; i < n; ++i) {
    auto p = pool.allocate(8 * kMiB);
    EXPECT_TRUE(p) << "huge block " << i << ": " << (p ? "" : p.error().message);
    if (p) out.push_back(*p);
  }
  return out;
}

TEST(ReclaimLadder, TrimRetryRecoversCachedHugeRanges) {
  PoolEnv env = make_pool(64 * kMiB, huge_cache_options());
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  ReclaimLadder ladder;
  int calls = 0;
  ladder.add_callback([&](DeviceId, MemoryType, std::uint64_t) -> std::uint64_t {
    ++calls;
    return 0;
  });
  for (void* p : fill_huge(pool, 6)) MEMD_ASSERT_OK(pool.deallocate(p));
  ASSERT_GE(pool.reserved_bytes(), 48 * kMiB) << "the freed huge blocks were not kept as cached ranges";

  auto p = ladder.allocate(pool, 4 * kMiB);
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(ladder.counts(), (ReclaimLadderCounts{.trim_retries = 1}));
  EXPECT_EQ(calls, 0) << "reclaim was asked although trimming was enough";
  MEMD_ASSERT_OK(pool.validate());
  MEMD_ASSERT_OK(pool.deallocate(*p));

  // With room to spare, no rung is climbed.
  auto q = ladder.allocate(pool, kMiB);
  ASSERT_TRUE(q) << q.error().message;
  EXPECT_EQ(ladder.counts().trim_retries, 1u);
  MEMD_ASSERT_OK(pool.deallocate(*q));
}

TEST(ReclaimLadder, TrimRetryRecoversStreamOrderedFrees) {
  PoolEnv env = make_pool(64 * kMiB, huge_cache_options());
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto s1 = env.backend->create_stream(DeviceId::host(0));
  auto s2 = env.backend->create_stream(DeviceId::host(0));
  ASSERT_TRUE(s1 && s2);
  {
    ReclaimLadder ladder;
    for (void* p : fill_huge(pool, 6)) MEMD_ASSERT_OK(pool.deallocate(p, *s1));
    // Pending on s1, then cached: only a trim gives the device room for
    // another segment, wherever the pending frees are waited for.
    auto p = ladder.allocate(pool, 4 * kMiB, *s2);
    ASSERT_TRUE(p) << p.error().message;
    EXPECT_EQ(ladder.counts(), (ReclaimLadderCounts{.trim_retries = 1}));
    MEMD_ASSERT_OK(pool.validate());
    MEMD_ASSERT_OK(pool.deallocate(*p));
  }
  env.pool.reset();  // waits for fenced frees before the streams go
  (void)env.backend->destroy_stream(*s1);
  (void)env.backend->destroy_stream(*s2);
}

TEST(ReclaimLadder, ReclaimRunsWhenTrimIsNotEnoughAndItsFreeingLetsTheRetrySucceed) {
  PoolEnv env = make_pool(64 * kMiB);  // Virtual mode: capacity = the device
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto victim = pool.allocate(48 * kMiB);
  ASSERT_TRUE(victim);
  ReclaimLadder ladder;
  std::vector<std::string> order;
  std::uint64_t asked = 0;
  DeviceId asked_device;
  MemoryType asked_type = MemoryType::Unknown;
  std::uint64_t self = 0;
  self = ladder.add_callback([&](DeviceId d, MemoryType t, std::uint64_t needed) -> std::uint64_t {
    order.push_back("evict");
    asked = needed;
    asked_device = d;
    asked_type = t;
    // Callbacks run with no ladder lock held: removing itself must not deadlock.
    ladder.remove_callback(self);
    if (!victim) return 0;
    EXPECT_TRUE(pool.deallocate(*victim));
    victim = fail(ErrorCode::not_found, "freed");
    return 48 * kMiB;
  });
  ladder.add_callback([&](DeviceId, MemoryType, std::uint64_t) -> std::uint64_t {
    order.push_back("second");
    return 0;
  });

  auto p = ladder.allocate(pool, 32 * kMiB);
  ASSERT_TRUE(p) << "retry after reclaim failed: " << p.error().message;
  EXPECT_EQ(order, std::vector<std::string>{"evict"}) << "callbacks went on after enough was freed";
  EXPECT_EQ(asked, 32 * kMiB);
  EXPECT_EQ(asked_device, DeviceId::host(0));
  EXPECT_EQ(asked_type, MemoryType::VRAM);
  EXPECT_EQ(ladder.counts(), (ReclaimLadderCounts{.trim_retries = 1, .reclaim_retries = 1}));
  MEMD_ASSERT_OK(pool.validate());

  // Nothing left to evict: the remaining callback frees nothing, no reclaim
  // retry is made, and the request fails.
  auto q = ladder.allocate(pool, 40 * kMiB);
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(order, (std::vector<std::string>{"evict", "second"})) << "a removed callback was called";
  EXPECT_EQ(ladder.counts(), (ReclaimLadderCounts{.trim_retries = 2, .reclaim_retries = 1, .failures = 1}));
  MEMD_ASSERT_OK(pool.deallocate(*p));
  MEMD_ASSERT_OK(pool.validate());
}

TEST(ReclaimLadder, RequestOverTheCapacityFailsAtOnce) {
  PoolEnv env = make_pool(64 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  ASSERT_EQ(pool.options().capacity, 64 * kMiB);
  // Some cached memory, to show the refusal does not trim either.
  auto warm = pool.allocate(16 * kMiB);
  ASSERT_TRUE(warm);
  MEMD_ASSERT_OK(pool.deallocate(*warm));
  const std::uint64_t reserved = pool.reserved_bytes();
  ASSERT_GT(reserved, 0u);

  ReclaimLadder ladder;
  int calls = 0;
  ladder.add_callback([&](DeviceId, MemoryType, std::uint64_t) -> std::uint64_t {
    ++calls;
    return 64 * kMiB;
  });
  auto p = ladder.allocate(pool, 64 * kMiB + 1);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::out_of_memory);
  EXPECT_NE(p.error().message.find("larger than the pool's capacity"), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find("capacity 64.0 MiB"), std::string::npos) << p.error().message;
  EXPECT_EQ(calls, 0) << "reclaim was asked to make room for a request larger than the pool";
  EXPECT_EQ(pool.reserved_bytes(), reserved) << "the refusal trimmed the pool";
  EXPECT_EQ(ladder.counts(), (ReclaimLadderCounts{.capacity_refusals = 1}));

  // Exactly the capacity is not refused early (it fits an empty pool).
  auto whole = ladder.allocate(pool, 64 * kMiB);
  ASSERT_TRUE(whole) << whole.error().message;
  MEMD_ASSERT_OK(pool.deallocate(*whole));
}

TEST(ReclaimLadder, FinalErrorCarriesTheNumbers) {
  PoolEnv env = make_pool(64 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto big = pool.allocate(48 * kMiB);
  ASSERT_TRUE(big);
  ReclaimLadder ladder;
  auto p = ladder.allocate(pool, 32 * kMiB);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::out_of_memory);
  const std::string& msg = p.error().message;
  for (const char* part : {"out of memory: requested 32.0 MiB (33554432 bytes) on host:0", "device free ",
                           "memd reserved 48.0 MiB", "allocated 48.0 MiB", "largest free block ", "fragmentation ",
                           "capacity 64.0 MiB"})
    EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
  // The pool's own reason follows in parentheses.
  EXPECT_EQ(msg.back(), ')') << msg;
  EXPECT_EQ(ladder.counts(), (ReclaimLadderCounts{.trim_retries = 1, .failures = 1}));
  // The failure changed nothing: the live block is intact and what fits still works.
  EXPECT_EQ(pool.block_size(*big), 48 * kMiB);
  auto fits = ladder.allocate(pool, 8 * kMiB);
  ASSERT_TRUE(fits) << fits.error().message;
  MEMD_ASSERT_OK(pool.deallocate(*fits));
  MEMD_ASSERT_OK(pool.deallocate(*big));
  MEMD_ASSERT_OK(pool.validate());
}

TEST(ReclaimLadder, OtherErrorsAreReturnedWithoutClimbing) {
  PoolEnv env = make_pool(64 * kMiB);
  ASSERT_TRUE(env.pool);
  ReclaimLadder ladder;
  int calls = 0;
  ladder.add_callback([&](DeviceId, MemoryType, std::uint64_t) -> std::uint64_t { return ++calls, 0; });
  auto p = ladder.allocate(*env.pool, 0);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ErrorCode::invalid_argument) << p.error().message;
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(ladder.counts(), ReclaimLadderCounts{});
}

}  // namespace
}  // namespace memd
