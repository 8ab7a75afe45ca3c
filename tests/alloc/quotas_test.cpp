// Quotas alone: charges counted per device, memory type and owner; each
// limit refusing with its numbers in the documented order and changing
// nothing; exactly-at-the-limit; the in-flight marks reconciled against a
// registry's per-owner sums; cancel and release; set_limits' value checks
// and the one owner rule.
#include "alloc/quotas.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "memd/size.hpp"

namespace memd {
namespace {

QuotaCharge charge(std::string owner, std::uint64_t bytes, MemoryType type = MemoryType::VRAM,
                   DeviceId device = DeviceId::host(0)) {
  return {std::move(owner), device, type, bytes};
}

TEST(Quotas, ReserveCountsEveryScopeAndReleaseGivesBack) {
  Quotas q;
  auto a = charge("alice", 3 * kMiB);
  auto b = charge("alice", kMiB, MemoryType::RAM, DeviceId::cpu());
  auto c = charge("bob", 5);
  for (const auto& x : {a, b, c}) {
    ASSERT_TRUE(q.reserve(x));
    q.land(x);
  }
  EXPECT_EQ(q.usage_by_owner().at("alice"), (OwnerUsage{4 * kMiB, 2}));
  EXPECT_EQ(q.usage_by_owner().at("bob"), (OwnerUsage{5, 1}));
  EXPECT_EQ(q.usage_by_device().at(DeviceId::host(0)), 3 * kMiB + 5);
  EXPECT_EQ(q.usage_by_device().at(DeviceId::cpu()), kMiB);
  EXPECT_EQ(q.usage_by_type().at(MemoryType::VRAM), 3 * kMiB + 5);
  EXPECT_EQ(q.usage_by_type().at(MemoryType::RAM), kMiB);
  EXPECT_TRUE(q.in_flight().empty());

  q.release(c);
  EXPECT_FALSE(q.usage_by_owner().contains("bob")) << "an owner with nothing left keeps an entry";
  q.release(b);
  EXPECT_FALSE(q.usage_by_device().contains(DeviceId::cpu()));
  EXPECT_FALSE(q.usage_by_type().contains(MemoryType::RAM));
  q.release(a);
  EXPECT_TRUE(q.usage_by_owner().empty());
  EXPECT_TRUE(q.usage_by_device().empty());
  EXPECT_TRUE(q.usage_by_type().empty());
}

TEST(Quotas, EachLimitRefusesWithItsNumbersAndChangesNothing) {
  Quotas q;
  ASSERT_TRUE(q.set_limits(Limits{.per_device = {{DeviceId::host(0), 10 * kMiB}},
                                  .per_memory_type = {{MemoryType::RAM, 10 * kMiB}},
                                  .per_owner = {{"capped", 10 * kMiB}}}));
  auto in_use = charge("capped", 8 * kMiB);
  ASSERT_TRUE(q.reserve(in_use));
  q.land(in_use);
  const auto owners = q.usage_by_owner();

  // Device first: over both the device and the owner limit.
  auto r = q.reserve(charge("capped", 6 * kMiB));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::quota_exceeded);
  EXPECT_EQ(r.error().message,
            "device host:0 limit exceeded: requested 6.0 MiB (6291456 bytes), in use 8.0 MiB (8388608 bytes), "
            "limit 10.0 MiB (10485760 bytes)");
  // Memory type.
  r = q.reserve(charge("other", 11 * kMiB, MemoryType::RAM, DeviceId::cpu()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "memory type RAM limit exceeded: requested 11.0 MiB (11534336 bytes), in use 0 B (0 bytes), "
            "limit 10.0 MiB (10485760 bytes)");
  // Owner, on a device without a limit.
  r = q.reserve(charge("capped", 3 * kMiB, MemoryType::RAM, DeviceId::cpu()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message.rfind("owner 'capped' limit exceeded: requested 3.0 MiB", 0), 0u) << r.error().message;
  EXPECT_EQ(q.usage_by_owner(), owners) << "a refused reservation was counted";
  EXPECT_TRUE(q.in_flight().empty());

  // Exactly up to the limit fits; one byte more does not.
  auto fits = charge("capped", 2 * kMiB);
  ASSERT_TRUE(q.reserve(fits));
  q.land(fits);
  EXPECT_FALSE(q.reserve(charge("capped", 1, MemoryType::RAM, DeviceId::cpu())));
  q.release(fits);
  EXPECT_TRUE(q.reserve(charge("capped", 2 * kMiB)));
}

TEST(Quotas, InFlightChargesReconcile) {
  Quotas q;
  auto a = charge("alice", kMiB);
  ASSERT_TRUE(q.reserve(a));
  // Reserved, not yet in the registry: counted as in flight, so an empty
  // registry agrees.
  EXPECT_EQ(q.in_flight().at("alice"), (OwnerUsage{kMiB, 1}));
  EXPECT_TRUE(q.reconcile({}));
  EXPECT_FALSE(q.reconcile({{"alice", {kMiB, 1}}})) << "counted twice, yet reconciled";

  q.land(a);
  EXPECT_TRUE(q.in_flight().empty());
  EXPECT_TRUE(q.reconcile({{"alice", {kMiB, 1}}}));
  auto missing = q.reconcile({});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::internal);
  EXPECT_FALSE(q.reconcile({{"alice", {kMiB - 1, 1}}}));
  EXPECT_FALSE(q.reconcile({{"alice", {kMiB, 1}}, {"ghost", {1, 1}}}));

  // A reservation that never lands is cancelled: nothing stays.
  auto b = charge("bob", 7);
  ASSERT_TRUE(q.reserve(b));
  EXPECT_TRUE(q.reconcile({{"alice", {kMiB, 1}}}));
  q.cancel(b);
  EXPECT_FALSE(q.usage_by_owner().contains("bob"));
  EXPECT_TRUE(q.in_flight().empty());
  EXPECT_TRUE(q.reconcile({{"alice", {kMiB, 1}}}));

  q.release(a);
  EXPECT_TRUE(q.reconcile({}));
  EXPECT_TRUE(q.usage_by_owner().empty());
}

TEST(Quotas, SetLimitsChecksValues) {
  Quotas q;
  const Limits good{.per_owner = {{"x", kMiB}}};
  ASSERT_TRUE(q.set_limits(good));
  constexpr auto kMax = std::numeric_limits<std::uint64_t>::max();
  const Limits bad[] = {
      Limits{.per_memory_type = {{MemoryType::Unknown, kMiB}}},
      Limits{.per_owner = {{"", kMiB}}},
      Limits{.per_owner = {{std::string(kMaxOwnerBytes + 1, 'o'), kMiB}}},
      Limits{.per_owner = {{"x", kMax}}},
      Limits{.per_device = {{DeviceId::host(0), kMaxRequestBytes + 1}}},
      Limits{.per_memory_type = {{MemoryType::RAM, kMax}}},
  };
  for (const auto& l : bad) {
    auto r = q.set_limits(l);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << r.error().message;
    EXPECT_EQ(q.limits(), good) << "a refused set_limits changed the limits";
  }
  // The bounds themselves are allowed; devices are not checked here.
  const Limits edge{.per_device = {{DeviceId::cuda(7), kMaxRequestBytes}},
                    .per_owner = {{std::string(kMaxOwnerBytes, 'o'), 0}}};
  ASSERT_TRUE(q.set_limits(edge));
  EXPECT_EQ(q.limits(), edge);
  // A zero limit refuses everything in its scope.
  EXPECT_FALSE(q.reserve(charge(std::string(kMaxOwnerBytes, 'o'), 1)));

  EXPECT_TRUE(check_owner("a"));
  EXPECT_FALSE(check_owner(""));
  EXPECT_TRUE(check_owner(std::string(kMaxOwnerBytes, 'o')));
  EXPECT_FALSE(check_owner(std::string(kMaxOwnerBytes + 1, 'o')));
}

}  // namespace
}  // namespace memd
