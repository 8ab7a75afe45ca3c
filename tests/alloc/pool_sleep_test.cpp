// DevicePool sleep and wake on the host backend (host:0 is real RAM with
// CUDA's unit rules): blocks of many sizes keep their addresses and their
// bytes across three cycles; the device's physical bytes drop by what the
// pool held and come back; the pinned host copy (cpu) exists only while
// asleep; allocations are refused and frees accepted while asleep; dropped
// contents wake as zeros (host pages mapped again read as zero, which also
// proves the kept cycles really unmapped and copied back); a corrupted host
// copy fails the wake with internal and leaves the pool asleep; huge ranges
// sleep too; sleep twice / wake twice are conflicts; segment pools cannot.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "alloc/device_pool.hpp"
#include "alloc_test_support.hpp"

namespace memd {
namespace {

using alloc_test::check_pattern;
using alloc_test::fill_pattern;
using alloc_test::make_pool;
using alloc_test::PoolEnv;

struct Block {
  void* p = nullptr;
  std::uint64_t size = 0;
  std::uint64_t salt = 0;
};

// Sizes from one slab class to tens of MiB (small, medium, arena blocks).
std::vector<Block> allocate_many(DevicePool& pool, std::uint64_t seed) {
  std::vector<std::uint64_t> sizes = {1, 64, 255, 1000, 4096, 8 * kKiB, 8 * kKiB + 1, 100 * kKiB,
                                      kMiB, kMiB + 3, 3 * kMiB, 20 * kMiB};
  std::mt19937_64 rng(seed);
  for (int i = 0; i < 200; ++i) sizes.push_back(1 + rng() % (64 * kKiB));
  std::vector<Block> out;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    auto p = pool.allocate(sizes[i]);
    EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message);
    if (!p) continue;
    out.push_back({*p, sizes[i], seed * 1000 + i});
    fill_pattern(*p, sizes[i], out.back().salt);
  }
  return out;
}

void expect_intact(const std::vector<Block>& blocks) {
  for (const auto& b : blocks)
    EXPECT_LT(check_pattern(b.p, b.size, b.salt), 0) << "block of " << b.size << " at " << b.p << " changed";
}

TEST(PoolSleep, KeepsAddressesAndContentsAcrossThreeCycles) {
  PoolEnv env = make_pool(512 * kMiB);
  ASSERT_TRUE(env.pool);
  DevicePool& pool = *env.pool;
  auto blocks = allocate_many(pool, 7);
  const DeviceId dev = pool.options().device;
  const std::uint64_t reserved = pool.stats().reserved_bytes;
  ASSERT_GT(reserved, 20 * kMiB);
  for (int cycle = 0; cycle < 3; ++cycle) {
    SCOPED_TRACE(cycle);
    const std::uint64_t device_before = env.backend->physical_bytes(dev);
    const std::uint64_t cpu_before = env.backend->physical_bytes(DeviceId::cpu());
    auto slept = pool.sleep(/*keep_contents=*/true);
    ASSERT_TRUE(slept.has_value()) << slept.error().message;
    EXPECT_TRUE(slept->kept_contents);
    EXPECT_EQ(slept->bytes, reserved);
    EXPECT_GT(slept->units, 0u);
    EXPECT_TRUE(pool.asleep());
    // The device memory is gone, the host copy holds it.
    EXPECT_EQ(env.backend->physical_bytes(dev), device_before - reserved);
    EXPECT_GE(env.backend->physical_bytes(DeviceId::cpu()), cpu_before + reserved);
    EXPECT_EQ(pool.stats().reserved_bytes, 0u);
    EXPECT_EQ(pool.reserved_bytes(), 0u);

    // Allocations refused on every path; trim, stats and validate work.
    for (std::uint64_t size : {std::uint64_t{64}, 50 * kKiB, 4 * kMiB}) {
      auto refused = pool.allocate(size);
      ASSERT_FALSE(refused.has_value());
      EXPECT_EQ(refused.error().code, ErrorCode::unavailable);
      EXPECT_NE(refused.error().message.find("asleep"), std::string::npos) << refused.error().message;
      auto on_stream = pool.allocate(size, Stream{dev, 0});
      ASSERT_FALSE(on_stream.has_value());
      EXPECT_EQ(on_stream.error().code, ErrorCode::unavailable);
    }
    EXPECT_EQ(pool.trim(), 0u);
    EXPECT_TRUE(pool.validate().has_value());
    EXPECT_EQ(env.backend->physical_bytes(dev), device_before - reserved);

    // A free while asleep is bookkeeping only (the small one lands in this
    // thread's cache, which must not hand it out again while asleep).
    const Block small = blocks.front(), large = blocks[11];
    ASSERT_TRUE(pool.deallocate(small.p).has_value());
    ASSERT_TRUE(pool.deallocate(large.p).has_value());
    blocks.erase(blocks.begin() + 11);
    blocks.erase(blocks.begin());
    EXPECT_FALSE(pool.allocate(small.size).has_value());
    EXPECT_EQ(env.backend->physical_bytes(dev), device_before - reserved);

    auto second = pool.sleep(true);
    ASSERT_FALSE(second.has_value());
    EXPECT_EQ(second.error().code, ErrorCode::conflict);

    auto woken = pool.wake();
    ASSERT_TRUE(woken.has_value()) << woken.error().message;
    EXPECT_EQ(woken->bytes, reserved);
    EXPECT_EQ(woken->units, slept->units);
    EXPECT_TRUE(woken->kept_contents);
    EXPECT_FALSE(pool.asleep());
    EXPECT_EQ(env.backend->physical_bytes(dev), device_before);
    EXPECT_EQ(env.backend->physical_bytes(DeviceId::cpu()), cpu_before);  // the host copy is gone
    expect_intact(blocks);
    ASSERT_TRUE(pool.validate().has_value()) << pool.validate().error().message;
    auto again = pool.wake();
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code, ErrorCode::conflict);

    // Awake: the pool serves again, new blocks and the freed ones' space.
    auto fresh = pool.allocate(small.size);
    ASSERT_TRUE(fresh.has_value()) << fresh.error().message;
    blocks.push_back({*fresh, small.size, 9000u + static_cast<std::uint64_t>(cycle)});
    fill_pattern(*fresh, small.size, blocks.back().salt);
  }
  // Trimming after a wake unmaps whole units as before.
  for (const auto& b : blocks) ASSERT_TRUE(pool.deallocate(b.p).has_value());
  pool.trim();
  EXPECT_EQ(pool.stats().reserved_bytes, 0u);
  EXPECT_EQ(env.backend->physical_bytes(pool.options().device), 0u);
  EXPECT_TRUE(pool.validate().has_value());
}

TEST(PoolSleep, DroppedContentsWakeAsFreshMemory) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  DevicePool& pool = *env.pool;
  auto blocks = allocate_many(pool, 11);
  const DeviceId dev = pool.options().device;
  const std::uint64_t device_before = env.backend->physical_bytes(dev);
  const std::uint64_t cpu_before = env.backend->physical_bytes(DeviceId::cpu());
  auto slept = pool.sleep(/*keep_contents=*/false);
  ASSERT_TRUE(slept.has_value()) << slept.error().message;
  EXPECT_FALSE(slept->kept_contents);
  EXPECT_EQ(env.backend->physical_bytes(dev), device_before - slept->bytes);
  EXPECT_EQ(env.backend->physical_bytes(DeviceId::cpu()), cpu_before);  // no host copy
  EXPECT_FALSE(pool.corrupt_host_copy_for_testing(0));
  auto woken = pool.wake();
  ASSERT_TRUE(woken.has_value()) << woken.error().message;
  EXPECT_FALSE(woken->kept_contents);
  EXPECT_EQ(env.backend->physical_bytes(dev), device_before);
  // Same addresses, fresh pages: every byte reads zero.
  for (const auto& b : blocks) {
    const auto* bytes = static_cast<const unsigned char*>(b.p);
    bool zero = true;
    for (std::uint64_t i = 0; i < b.size && zero; ++i) zero = bytes[i] == 0;
    EXPECT_TRUE(zero) << "block of " << b.size << " at " << b.p;
  }
  EXPECT_TRUE(pool.validate().has_value());
  for (const auto& b : blocks) ASSERT_TRUE(pool.deallocate(b.p).has_value());
}

TEST(PoolSleep, CorruptHostCopyFailsTheWakeAndStaysAsleep) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  DevicePool& pool = *env.pool;
  auto blocks = allocate_many(pool, 13);
  const DeviceId dev = pool.options().device;
  const std::uint64_t device_before = env.backend->physical_bytes(dev);
  auto slept = pool.sleep(true);
  ASSERT_TRUE(slept.has_value()) << slept.error().message;
  const std::uint64_t cpu_asleep = env.backend->physical_bytes(DeviceId::cpu());
  // A byte in the last unit: the error must name it.
  ASSERT_TRUE(pool.corrupt_host_copy_for_testing(slept->bytes - 1));
  auto woken = pool.wake();
  ASSERT_FALSE(woken.has_value());
  EXPECT_EQ(woken.error().code, ErrorCode::internal);
  EXPECT_NE(woken.error().message.find(fmt::format("unit {}", slept->units - 1)), std::string::npos)
      << woken.error().message;
  EXPECT_TRUE(pool.asleep());
  EXPECT_EQ(env.backend->physical_bytes(dev), device_before - slept->bytes);
  EXPECT_EQ(env.backend->physical_bytes(DeviceId::cpu()), cpu_asleep);  // the copy is kept
  EXPECT_FALSE(pool.allocate(64).has_value());
  // Flipped back, the same copy wakes.
  ASSERT_TRUE(pool.corrupt_host_copy_for_testing(slept->bytes - 1));
  auto retried = pool.wake();
  ASSERT_TRUE(retried.has_value()) << retried.error().message;
  expect_intact(blocks);
  EXPECT_TRUE(pool.validate().has_value());
}

TEST(PoolSleep, HugeRangesSleepToo) {
  PoolOptions options;
  options.huge_threshold = 16 * kMiB;
  PoolEnv env = make_pool(256 * kMiB, options);
  ASSERT_TRUE(env.pool);
  DevicePool& pool = *env.pool;
  auto huge = pool.allocate(40 * kMiB);
  auto cached = pool.allocate(30 * kMiB);
  auto small = pool.allocate(1000);
  ASSERT_TRUE(huge && cached && small);
  alloc_test::stamp_sparse(*huge, 40 * kMiB, 1);
  fill_pattern(*small, 1000, 2);
  ASSERT_TRUE(pool.deallocate(*cached).has_value());  // a cached huge range: released at sleep
  const DeviceId dev = pool.options().device;
  auto slept = pool.sleep(true);
  ASSERT_TRUE(slept.has_value()) << slept.error().message;
  EXPECT_EQ(env.backend->physical_bytes(dev), 0u);
  auto woken = pool.wake();
  ASSERT_TRUE(woken.has_value()) << woken.error().message;
  EXPECT_TRUE(alloc_test::check_sparse(*huge, 40 * kMiB, 1));
  EXPECT_LT(check_pattern(*small, 1000, 2), 0);
  EXPECT_EQ(env.backend->physical_bytes(dev), pool.stats().reserved_bytes);
  EXPECT_TRUE(pool.validate().has_value());
}

TEST(PoolSleep, EmptyPoolSleepsAndSegmentPoolsCannot) {
  PoolEnv env = make_pool(64 * kMiB);
  ASSERT_TRUE(env.pool);
  auto slept = env.pool->sleep(true);
  ASSERT_TRUE(slept.has_value()) << slept.error().message;
  EXPECT_EQ(slept->bytes, 0u);
  ASSERT_TRUE(env.pool->wake().has_value());

  PoolOptions segments;
  segments.mode = PoolMode::Segments;
  PoolEnv seg = make_pool(64 * kMiB, segments);
  ASSERT_TRUE(seg.pool);
  auto refused = seg.pool->sleep(true);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code, ErrorCode::unavailable);
}

TEST(PoolSleep, StreamOrderedFreesAreDrainedFirst) {
  PoolEnv env = make_pool(128 * kMiB);
  ASSERT_TRUE(env.pool);
  DevicePool& pool = *env.pool;
  const Stream s{pool.options().device, 0};
  auto a = pool.allocate(3 * kMiB, s);
  auto b = pool.allocate(5 * kMiB, s);
  ASSERT_TRUE(a && b);
  fill_pattern(*b, 5 * kMiB, 3);
  ASSERT_TRUE(pool.deallocate(*a, s).has_value());
  auto slept = pool.sleep(true);
  ASSERT_TRUE(slept.has_value()) << slept.error().message;
  ASSERT_TRUE(pool.deallocate(*b, s).has_value());  // stream-ordered free while asleep
  EXPECT_FALSE(pool.allocate(5 * kMiB, s).has_value());  // not reused while asleep
  ASSERT_TRUE(pool.wake().has_value());
  auto reused = pool.allocate(5 * kMiB, s);
  ASSERT_TRUE(reused.has_value()) << reused.error().message;
  EXPECT_TRUE(pool.validate().has_value());
}

}  // namespace
}  // namespace memd
