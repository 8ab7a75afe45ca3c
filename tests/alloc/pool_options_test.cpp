// PoolOptions' policies: names, the DEVICE=POLICY flag parser (hostile
// spellings refused with invalid_argument), what a policy does to the
// options, and that a MemoryManager applies a device's policy to its pools.
#include <gtest/gtest.h>

#include "alloc/memory_manager.hpp"
#include "alloc/pool_options.hpp"
#include "alloc_test_support.hpp"

namespace memd {
namespace {

TEST(PoolPolicy, NamesRoundTripAndOthersAreRefused) {
  for (auto p : {PoolPolicy::Footprint, PoolPolicy::Throughput}) EXPECT_EQ(parse_pool_policy(to_string(p)), p);
  for (const char* bad : {"", "Footprint", "THROUGHPUT", "throughput ", "speed", "foot"})
    EXPECT_FALSE(parse_pool_policy(bad).has_value()) << bad;
}

TEST(PoolPolicy, DevicePolicyFlagParsesAndRefuses) {
  auto ok = parse_device_pool_policy("cuda:0=throughput");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->first, DeviceId::cuda(0));
  EXPECT_EQ(ok->second, PoolPolicy::Throughput);
  auto host = parse_device_pool_policy("host:3=footprint");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->first, DeviceId::host(3));
  for (const char* bad : {"", "=", "cuda:0", "cuda:0=", "=throughput", "cuda:0=fast", "cuda:x=throughput",
                          "cuda:0=throughput=footprint", "cuda:-1=throughput", "cuda:99999999999=footprint"}) {
    auto r = parse_device_pool_policy(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << bad;
  }
}

TEST(PoolPolicy, ThroughputMapsOneUnitPerRunFootprintLeavesUnits) {
  PoolOptions o;
  o.map_unit_min = 4 * kMiB;
  o.map_unit_max = 32 * kMiB;
  auto f = apply_policy(o);
  EXPECT_EQ(f.map_unit_min, 4 * kMiB);
  EXPECT_EQ(f.map_unit_max, 32 * kMiB);
  o.policy = PoolPolicy::Throughput;
  auto t = apply_policy(o);
  EXPECT_EQ(t.map_unit_min, kThroughputUnit);
  EXPECT_EQ(t.map_unit_max, kThroughputUnit);
}

TEST(PoolPolicy, ManagerAppliesTheDevicePolicyToItsPools) {
  BackendOptions bo;
  bo.enable_cuda = false;
  bo.host_device_sizes = {256 * kMiB};
  auto catalog = DeviceCatalog::discover(bo);
  ASSERT_TRUE(catalog);
  ManagerOptions mo;
  mo.pool_policies[DeviceId::host(0)] = PoolPolicy::Throughput;
  MemoryManager manager(**catalog, mo);
  auto pool = manager.pool(DeviceId::host(0), MemoryType::VRAM);
  ASSERT_TRUE(pool) << pool.error().message;
  EXPECT_EQ((*pool)->options().policy, PoolPolicy::Throughput);
  EXPECT_EQ((*pool)->options().map_unit_min, kThroughputUnit);
  // One unit per run: a 48 MiB block maps as one unit where footprint cuts 16 MiB units.
  auto p = (*pool)->allocate(48 * kMiB);
  ASSERT_TRUE(p);
  EXPECT_EQ((*pool)->counters().mapped_units, 1u);
  MEMD_ASSERT_OK((*pool)->deallocate(*p));
  MemoryManager plain(**catalog);
  auto fp = plain.pool(DeviceId::host(0), MemoryType::VRAM);
  ASSERT_TRUE(fp);
  EXPECT_EQ((*fp)->options().policy, PoolPolicy::Footprint);
  auto q = (*fp)->allocate(48 * kMiB);
  ASSERT_TRUE(q);
  EXPECT_GT((*fp)->counters().mapped_units, 1u);
  MEMD_ASSERT_OK((*fp)->deallocate(*q));
}

}  // namespace
}  // namespace memd
