// DevicePool::trim_forecast(): the dry run says exactly what trim() then
// releases (blocks above the slab sizes, so no empty span is in play), and
// changes nothing itself.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "alloc/device_pool.hpp"
#include "alloc_test_support.hpp"
#include "memd/size.hpp"

namespace memd {
namespace {

using namespace alloc_test;

void check_forecast(PoolOptions options) {
  PoolEnv env = make_pool(512 * kMiB, options);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::mt19937_64 rng(7);
  std::map<void*, std::uint64_t> live;
  for (int round = 0; round < 6; ++round) {
    for (int k = 0; k < 40; ++k) {
      const std::uint64_t size = 16 * kKiB + rng() % (12 * kMiB);
      auto p = pool.allocate(size);
      ASSERT_TRUE(p) << p.error().message;
      live.emplace(*p, size);
    }
    for (auto it = live.begin(); it != live.end();) {
      if (rng() % 3 != 0) {
        ASSERT_TRUE(pool.deallocate(it->first));
        it = live.erase(it);
      } else {
        ++it;
      }
    }
    const std::uint64_t reserved = pool.reserved_bytes();
    const TrimForecast f = pool.trim_forecast();
    EXPECT_EQ(pool.reserved_bytes(), reserved) << "the forecast changed the pool";
    const PoolStats before = pool.stats();
    EXPECT_EQ(f.releasable_bytes + f.stranded_free_bytes, before.free_bytes) << "round " << round;
    EXPECT_EQ(pool.trim(), f.releasable_bytes) << "round " << round;
    EXPECT_EQ(pool.trim_forecast().releasable_bytes, 0u);
    ASSERT_TRUE(pool.validate());
  }
}

TEST(TrimForecast, VirtualPoolsForecastExactly) {
  PoolOptions options;
  options.mode = PoolMode::Virtual;
  check_forecast(options);
}

TEST(TrimForecast, SegmentPoolsForecastEmptySegmentsExactly) {
  PoolOptions options;
  options.mode = PoolMode::Segments;
  options.segment_size = 8 * kMiB;
  options.huge_threshold = 32 * kMiB;
  check_forecast(options);
}

}  // namespace
}  // namespace memd
