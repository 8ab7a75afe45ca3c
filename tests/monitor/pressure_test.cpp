// Pressure levels: thresholds, hysteresis, and the numbers behind a level.
#include <gtest/gtest.h>

#include <vector>

#include "memd/size.hpp"
#include "monitor/pressure.hpp"
#include "monitor/pressure_policy.hpp"

namespace memd {
namespace {

using L = PressureLevel;

TEST(Pressure, RisesAtEachThresholdAndMayJumpLevels) {
  const PressureThresholds t;
  EXPECT_EQ(next_pressure_level(L::Low, 59.99, t), L::Low);
  EXPECT_EQ(next_pressure_level(L::Low, 60, t), L::Moderate);
  EXPECT_EQ(next_pressure_level(L::Low, 80, t), L::High);
  EXPECT_EQ(next_pressure_level(L::Low, 92, t), L::Critical);
  EXPECT_EQ(next_pressure_level(L::Moderate, 150, t), L::Critical);  // over 100: still Critical
}

TEST(Pressure, FallsOnlyHysteresisBelowAThreshold) {
  const PressureThresholds t;
  EXPECT_EQ(next_pressure_level(L::Critical, 89.5, t), L::Critical);
  EXPECT_EQ(next_pressure_level(L::Critical, 88.99, t), L::High);
  EXPECT_EQ(next_pressure_level(L::High, 77.01, t), L::High);
  EXPECT_EQ(next_pressure_level(L::High, 76.9, t), L::Moderate);
  EXPECT_EQ(next_pressure_level(L::Critical, 10, t), L::Low);  // a fall may cross several
  EXPECT_EQ(next_pressure_level(L::Critical, 58, t), L::Moderate);
  EXPECT_EQ(next_pressure_level(L::Moderate, 56.9, t), L::Low);
}

TEST(Pressure, DoesNotFlapAtAThreshold) {
  const PressureThresholds t;
  L level = L::Low;
  std::vector<L> changes;
  for (double p : {79.0, 80.0, 79.5, 80.2, 78.0, 80.9, 77.5, 81.0, 76.0, 80.0}) {
    const L next = next_pressure_level(level, p, t);
    if (next != level) changes.push_back(next);
    level = next;
  }
  EXPECT_EQ(changes, (std::vector<L>{L::Moderate, L::High, L::Moderate, L::High}));
}

TEST(Pressure, ThresholdsAreChecked) {
  EXPECT_TRUE(PressureThresholds{}.validate());
  EXPECT_FALSE((PressureThresholds{.moderate = 80, .high = 60, .critical = 92}.validate()));
  EXPECT_FALSE((PressureThresholds{.moderate = 0, .high = 60, .critical = 92}.validate()));
  EXPECT_FALSE((PressureThresholds{.moderate = 60, .high = 80, .critical = 101}.validate()));
  EXPECT_FALSE((PressureThresholds{.moderate = 60, .high = 80, .critical = 92, .hysteresis = -1}.validate()));
  EXPECT_FALSE((PressureThresholds{.moderate = 60, .high = 62, .critical = 92, .hysteresis = 3}.validate()));
  const auto bad = PressureThresholds{.moderate = 60, .high = 62, .critical = 92, .hysteresis = 3}.validate();
  EXPECT_EQ(bad.error().code, ErrorCode::invalid_argument);
}

TEST(Pressure, CapacityIsTheDeviceLessOthersCappedByTheLimit) {
  // A 10 GiB GPU: another process holds 3 GiB, memd reserves 2 GiB and its
  // users hold 1.5 GiB; memd's limit is 8 GiB.
  PressureInputs in{.device_total = 10 * kGiB, .device_used = 5 * kGiB, .memd_reserved = 2 * kGiB,
                    .memd_allocated = 3 * kGiB / 2, .limit = 8 * kGiB};
  auto r = measure_pressure(DeviceId::cuda(0), in);
  EXPECT_EQ(r.other_processes_bytes, 3 * kGiB);
  EXPECT_EQ(r.capacity_bytes, 7 * kGiB);  // 10 − 3 < 8
  EXPECT_EQ(r.cached_bytes, kGiB / 2);
  EXPECT_DOUBLE_EQ(r.percent, 100.0 * 1.5 / 7.0);
  in.limit = 4 * kGiB;
  EXPECT_EQ(measure_pressure(DeviceId::cuda(0), in).capacity_bytes, 4 * kGiB);
  in.limit = 0;  // none
  EXPECT_EQ(measure_pressure(DeviceId::cuda(0), in).capacity_bytes, 7 * kGiB);
  // Everything taken by others: full.
  in.device_used = 12 * kGiB;
  EXPECT_EQ(measure_pressure(DeviceId::cuda(0), in).percent, 100.0);
}

TEST(Pressure, LevelNamesAndPolicyNamesRoundTrip) {
  for (auto l : {L::Low, L::Moderate, L::High, L::Critical}) EXPECT_EQ(parse_pressure_level(to_string(l)), l);
  EXPECT_FALSE(parse_pressure_level("critical"));
  for (auto name : {"full", "reclaim", "release", "off"}) {
    auto p = PressurePolicy::parse(name);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->name(), name);
  }
  EXPECT_EQ(PressurePolicy::parse("aggressive").error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace memd
