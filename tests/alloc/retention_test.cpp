// retention: the budget and mapping units as pure functions, at and around
// their boundaries (alloc/retention.hpp).
#include "alloc/retention.hpp"

#include <gtest/gtest.h>

#include <cstdint>

#include "alloc/pool_options.hpp"
#include "memd/size.hpp"

namespace memd {
namespace {

using namespace retention;

constexpr std::uint64_t kPage = 2 * kMiB;

// The defaults with units of [16 MiB, 1 GiB] / 64, so the unit arithmetic
// below reads in round numbers (the default floor is 4 MiB: see
// DefaultUnitFloorIsFourMiB).
PoolOptions defaults() {
  PoolOptions o;  // retain 0.03, 2 pages
  o.map_unit_min = 16 * kMiB;
  return o;
}

// Session 6 lowered the floor from 16 MiB: pools under 1 GiB had units of
// 2-4 % of themselves, and free pages pinned in partly used units put
// repeated replays over 1.05. A change of the default shows here first.
TEST(Retention, DefaultUnitFloorIsFourMiB) {
  const PoolOptions o;
  EXPECT_EQ(o.map_unit_min, 4 * kMiB);
  RetentionState s;
  EXPECT_EQ(unit_bytes(o, kPage, s), 4 * kMiB);
  s.peak_busy = 512 * kMiB;  // a 512 MiB pool: 8 MiB units
  EXPECT_EQ(unit_bytes(o, kPage, s), 8 * kMiB);
  EXPECT_EQ(fragmented_unit_min(o, kPage), 4 * kMiB);
}

TEST(Retention, RoundUp) {
  EXPECT_EQ(round_up(0, kPage), 0u);
  EXPECT_EQ(round_up(1, kPage), kPage);
  EXPECT_EQ(round_up(kPage, kPage), kPage);
  EXPECT_EQ(round_up(kPage + 1, kPage), 2 * kPage);
}

// peak 64 MiB: slack 1.92 MiB rounds to one page, so the peak term is 66 MiB;
// the busy term (busy + 2 pages) crosses it at busy = 62 MiB.
TEST(Retention, AllowedIsTheLargerTermAtAndAroundTheCrossing) {
  const auto o = defaults();
  const std::uint64_t peak = 64 * kMiB;
  EXPECT_EQ(allowed(o, kPage, 0, peak), 66 * kMiB);
  EXPECT_EQ(allowed(o, kPage, 61 * kMiB, peak), 66 * kMiB);  // peak term wins
  EXPECT_EQ(allowed(o, kPage, 62 * kMiB, peak), 66 * kMiB);  // both equal
  EXPECT_EQ(allowed(o, kPage, 62 * kMiB + 1, peak), 66 * kMiB + 1);  // busy term wins
  EXPECT_EQ(allowed(o, kPage, 63 * kMiB, peak), 67 * kMiB);
  // Busy above the recorded peak (the caller has not noted it yet): the busy
  // term still bounds from below.
  EXPECT_EQ(allowed(o, kPage, 100 * kMiB, peak), 104 * kMiB);
  // No peak at all: the minimum slack only.
  EXPECT_EQ(allowed(o, kPage, 0, 0), 2 * kPage);
  EXPECT_EQ(allowed(o, kPage, 5, 0), 5 + 2 * kPage);
}

TEST(Retention, AllowedRoundsThePeakSlackUpToWholePages) {
  auto o = defaults();
  // A slack of a few bytes is still a page.
  EXPECT_EQ(allowed(o, kPage, 0, 1000 * kPage), 1000 * kPage + round_up(30 * kPage, kPage));
  EXPECT_EQ(allowed(o, kPage, 0, 10 * kMiB + 100), 12 * kMiB + 100);
  // 3 % of 1000 MiB = 30 MiB exactly: no extra page.
  EXPECT_EQ(allowed(o, kPage, 0, 1000 * kMiB), 1030 * kMiB);
  // 3 % of 1010 MiB = 30.3 MiB: 32 MiB.
  EXPECT_EQ(allowed(o, kPage, 0, 1010 * kMiB), 1042 * kMiB);
  o.retain_fraction = 0;
  EXPECT_EQ(allowed(o, kPage, 0, 1010 * kMiB), 1010 * kMiB);
  o.retain_min_pages = 0;
  EXPECT_EQ(allowed(o, kPage, 7, 0), 7u);
}

TEST(Retention, AllowedNeverFallsBelowEitherTermAndGrowsWithBusyAndPeak) {
  const auto o = defaults();
  std::uint64_t last = 0;
  for (std::uint64_t busy = 0; busy <= 200 * kMiB; busy += 3 * kMiB + 17) {
    const std::uint64_t a = allowed(o, kPage, busy, 100 * kMiB);
    EXPECT_GE(a, busy + 2 * kPage);
    EXPECT_GE(a, 100 * kMiB);
    EXPECT_GE(a, last);
    last = a;
  }
  last = 0;
  for (std::uint64_t peak = 0; peak <= 400 * kMiB; peak += 5 * kMiB + 3) {
    const std::uint64_t a = allowed(o, kPage, 10 * kMiB, peak);
    EXPECT_GE(a, peak);
    EXPECT_GE(a, last);
    last = a;
  }
}

// The margin is peak / 50 and the comparison strict.
TEST(Retention, NearTrimBoundary) {
  EXPECT_FALSE(near_trim(900, 5000, 1000));  // 900 + 100 == 1000
  EXPECT_TRUE(near_trim(901, 5000, 1000));
  EXPECT_FALSE(near_trim(0, 0, 0));
  EXPECT_TRUE(near_trim(1, 0, 0));
  EXPECT_FALSE(near_trim(98 * kMiB, 100 * kMiB, 100 * kMiB));
  EXPECT_TRUE(near_trim(98 * kMiB + 1, 100 * kMiB, 100 * kMiB));
  // Below 50 bytes of peak the margin is nothing.
  EXPECT_FALSE(near_trim(10, 49, 10));
  EXPECT_TRUE(near_trim(10, 50, 10));
}

TEST(Retention, TrimHysteresisIsOnePercentInWholePages) {
  EXPECT_EQ(trim_hysteresis(0, kPage), 0u);
  EXPECT_EQ(trim_hysteresis(99, kPage), 0u);  // 1 % rounds down to 0 bytes
  EXPECT_EQ(trim_hysteresis(100, kPage), kPage);
  EXPECT_EQ(trim_hysteresis(100 * kMiB, kPage), kPage);  // 1 MiB -> a page
  EXPECT_EQ(trim_hysteresis(400 * kMiB, kPage), 4 * kMiB);
  EXPECT_EQ(trim_hysteresis(401 * kMiB, kPage), 6 * kMiB);
}

TEST(Retention, FragmentedUnitMinIsEightMiBOrTheMinimumUnitInWholePages) {
  auto o = defaults();
  EXPECT_EQ(fragmented_unit_min(o, kPage), 8 * kMiB);  // map_unit_min 16 MiB
  o.map_unit_min = 4 * kMiB;
  EXPECT_EQ(fragmented_unit_min(o, kPage), 4 * kMiB);
  o.map_unit_min = 3 * kMiB;  // rounds down to a page
  EXPECT_EQ(fragmented_unit_min(o, kPage), 2 * kMiB);
  o.map_unit_min = 1 * kMiB;  // never below one page
  EXPECT_EQ(fragmented_unit_min(o, kPage), kPage);
  o.map_unit_min = 0;
  EXPECT_EQ(fragmented_unit_min(o, kPage), kPage);
  o.map_unit_min = 16 * kMiB;
  EXPECT_EQ(fragmented_unit_min(o, 3 * kMiB), 6 * kMiB);  // 8 MiB in whole 3 MiB pages
}

TEST(Retention, UnitBytesFollowsThePeakClampedToMinAndMax) {
  const auto o = defaults();
  RetentionState s;
  EXPECT_EQ(unit_bytes(o, kPage, s), 16 * kMiB);  // no peak: the minimum
  s.peak_busy = 64 * 16 * kMiB;
  EXPECT_EQ(unit_bytes(o, kPage, s), 16 * kMiB);
  s.peak_busy = 64 * 100 * kMiB;
  EXPECT_EQ(unit_bytes(o, kPage, s), 100 * kMiB);
  s.peak_busy = 64 * 101 * kMiB;  // 101 MiB: whole pages, rounded down
  EXPECT_EQ(unit_bytes(o, kPage, s), 100 * kMiB);
  s.peak_busy = 64 * kGiB;
  EXPECT_EQ(unit_bytes(o, kPage, s), kGiB);
  s.peak_busy = 1024 * kGiB;  // clamped to the maximum
  EXPECT_EQ(unit_bytes(o, kPage, s), kGiB);
}

TEST(Retention, UnitBytesIsWholePagesAndAtLeastOne) {
  auto o = defaults();
  RetentionState s;
  o.map_unit_min = 3 * kMiB;
  EXPECT_EQ(unit_bytes(o, kPage, s), 2 * kMiB);
  o.map_unit_min = 1 * kMiB;
  EXPECT_EQ(unit_bytes(o, kPage, s), kPage);
  o.map_unit_min = 0;
  o.map_unit_max = 0;
  EXPECT_EQ(unit_bytes(o, kPage, s), kPage);
  o.map_unit_divisor = 0;  // treated as 1, not a division by zero
  o.map_unit_max = kGiB;
  s.peak_busy = 10 * kMiB;
  EXPECT_EQ(unit_bytes(o, kPage, s), 10 * kMiB);
  // A maximum below the minimum: the minimum wins.
  o = defaults();
  o.map_unit_min = 32 * kMiB;
  o.map_unit_max = 16 * kMiB;
  s.peak_busy = 0;
  EXPECT_EQ(unit_bytes(o, kPage, s), 32 * kMiB);
  s.peak_busy = 1024 * kGiB;
  EXPECT_EQ(unit_bytes(o, kPage, s), 32 * kMiB);
}

TEST(Retention, HalvingsHalveDownToTheFragmentedMinimum) {
  auto o = defaults();
  RetentionState s;
  s.peak_busy = 64 * 256 * kMiB;  // 256 MiB units
  const std::uint64_t expect[] = {256 * kMiB, 128 * kMiB, 64 * kMiB, 32 * kMiB, 16 * kMiB, 8 * kMiB, 8 * kMiB};
  for (unsigned h = 0; h < std::size(expect); ++h) {
    s.unit_halvings = h;
    EXPECT_EQ(unit_bytes(o, kPage, s), expect[h]) << h << " halvings";
  }
  for (unsigned h : {7u, 62u, 63u, 64u, 100u, ~0u}) {
    s.unit_halvings = h;
    EXPECT_EQ(unit_bytes(o, kPage, s), 8 * kMiB) << h << " halvings";
  }
  // Halved units are whole pages: 100 MiB / 8 = 12.5 MiB -> 12 MiB.
  s.peak_busy = 64 * 100 * kMiB;
  s.unit_halvings = 3;
  EXPECT_EQ(unit_bytes(o, kPage, s), 12 * kMiB);
  // With a minimum below a page, halving stops at one page.
  o.map_unit_min = 1 * kMiB;
  s.peak_busy = 64 * 16 * kMiB;
  for (unsigned h = 1; h < 70; ++h) {
    s.unit_halvings = h;
    const std::uint64_t u = unit_bytes(o, kPage, s);
    EXPECT_GE(u, kPage) << h;
    EXPECT_EQ(u % kPage, 0u) << h;
  }
  s.unit_halvings = 40;
  EXPECT_EQ(unit_bytes(o, kPage, s), kPage);
}

TEST(Retention, RunUnitIsOneUnitUpToOneAndAHalfUnits) {
  const std::uint64_t u = 16 * kMiB;
  EXPECT_EQ(run_unit(0, u), 0u);
  EXPECT_EQ(run_unit(u, u), 0u);
  EXPECT_EQ(run_unit(24 * kMiB, u), 0u);
  EXPECT_EQ(run_unit(24 * kMiB + 1, u), u);
  EXPECT_EQ(run_unit(22 * kMiB, u), 0u);  // the 16 + 6 pair the comment names
  EXPECT_EQ(run_unit(100 * kGiB, u), u);
  // Odd units: 3 + 3/2 = 4.
  EXPECT_EQ(run_unit(4, 3), 0u);
  EXPECT_EQ(run_unit(5, 3), 3u);
}

TEST(Retention, MapsAheadOnlySmallBlocksAndOnlyWhenAPageFits) {
  auto o = defaults();  // map_ahead_max 64 MiB
  EXPECT_TRUE(maps_ahead(o, kPage, 1));
  EXPECT_TRUE(maps_ahead(o, kPage, 8 * kMiB));
  EXPECT_FALSE(maps_ahead(o, kPage, 8 * kMiB + 1));
  o.map_ahead_max = kPage;
  EXPECT_TRUE(maps_ahead(o, kPage, kPage / 8));
  EXPECT_FALSE(maps_ahead(o, kPage, kPage / 8 + 1));
  o.map_ahead_max = kPage - 1;  // not even one page ahead
  EXPECT_FALSE(maps_ahead(o, kPage, 1));
  EXPECT_FALSE(maps_ahead(o, kPage, 0));
  o.map_ahead_max = 0;
  EXPECT_FALSE(maps_ahead(o, kPage, 0));
}

TEST(Retention, AheadRoomIsTheSmallestOfBudgetBusyShareAndMax) {
  const auto o = defaults();  // retain 0.03, map_ahead_max 64 MiB
  // Nothing when the budget is used up or exceeded.
  EXPECT_EQ(ahead_room(o, 100 * kMiB, 100 * kMiB, 10 * kGiB), 0u);
  EXPECT_EQ(ahead_room(o, 100 * kMiB, 101 * kMiB, 10 * kGiB), 0u);
  EXPECT_EQ(ahead_room(o, 0, 0, 10 * kGiB), 0u);
  // The budget binds.
  EXPECT_EQ(ahead_room(o, 101 * kMiB, 100 * kMiB, 10 * kGiB), 1 * kMiB);
  // The busy share binds: 3 % of 100 MiB.
  EXPECT_EQ(ahead_room(o, 1 * kGiB, 0, 100 * kMiB), 3 * kMiB);
  // map_ahead_max binds.
  EXPECT_EQ(ahead_room(o, 10 * kGiB, 1 * kGiB, 10 * kGiB), 64 * kMiB);
  // No busy bytes: nothing ahead, whatever the budget.
  EXPECT_EQ(ahead_room(o, 10 * kGiB, 0, 0), 0u);
  // Never more than any of the three, over a sweep.
  for (std::uint64_t used = 0; used < 300 * kMiB; used += 7 * kMiB + 1)
    for (std::uint64_t busy = 0; busy < 4 * kGiB; busy += 331 * kMiB) {
      const std::uint64_t allowed_bytes = 200 * kMiB;
      const std::uint64_t r = ahead_room(o, allowed_bytes, used, busy);
      if (allowed_bytes <= used) {
        EXPECT_EQ(r, 0u);
        continue;
      }
      EXPECT_LE(r, allowed_bytes - used);
      EXPECT_LE(r, static_cast<std::uint64_t>(static_cast<double>(busy) * 0.03));
      EXPECT_LE(r, o.map_ahead_max);
    }
}

TEST(Retention, ThroughputPolicySetsUnitsAndFootprintLeavesThem) {
  PoolOptions requested;
  requested.map_unit_min = 4 * kMiB;
  requested.map_unit_max = 32 * kMiB;
  requested.retain_fraction = 0.5;
  requested.map_ahead_max = 0;

  requested.policy = PoolPolicy::Footprint;
  const PoolOptions footprint = apply_policy(requested);
  EXPECT_EQ(footprint.map_unit_min, 4 * kMiB);
  EXPECT_EQ(footprint.map_unit_max, 32 * kMiB);

  requested.policy = PoolPolicy::Throughput;
  const PoolOptions throughput = apply_policy(requested);
  EXPECT_EQ(throughput.map_unit_min, kThroughputUnit);
  EXPECT_EQ(throughput.map_unit_max, kThroughputUnit);
  // Everything else as asked.
  EXPECT_EQ(throughput.retain_fraction, 0.5);
  EXPECT_EQ(throughput.map_ahead_max, 0u);
  EXPECT_EQ(throughput.policy, PoolPolicy::Throughput);

  // What it means: one unit per run, whatever the peak.
  RetentionState s;
  EXPECT_EQ(unit_bytes(throughput, kPage, s), kThroughputUnit);
  s.peak_busy = 1024 * kGiB;
  EXPECT_EQ(unit_bytes(throughput, kPage, s), kThroughputUnit);
  EXPECT_EQ(run_unit(80 * kGiB, unit_bytes(throughput, kPage, s)), 0u);

  EXPECT_EQ(to_string(PoolPolicy::Throughput), "throughput");
  EXPECT_EQ(parse_pool_policy("footprint"), PoolPolicy::Footprint);
  EXPECT_EQ(parse_pool_policy("throughput"), PoolPolicy::Throughput);
  EXPECT_EQ(parse_pool_policy("fast"), std::nullopt);
}

}  // namespace
}  // namespace memd
