// The health grading thresholds.
#include <gtest/gtest.h>

#include "monitor/health_policy.hpp"

namespace memd {
namespace {

TEST(HealthPolicy, Thresholds) {
  EXPECT_EQ(classify_health(0, 0, 0), MemoryHealthStatus::Unknown);
  EXPECT_EQ(classify_health(100, 50, 0), MemoryHealthStatus::Healthy);
  EXPECT_EQ(classify_health(100, 10, 0), MemoryHealthStatus::Warning);
  EXPECT_EQ(classify_health(100, 50, 0.6), MemoryHealthStatus::Healthy);  // room to map: holes don't matter
  EXPECT_EQ(classify_health(100, 25, 0.6), MemoryHealthStatus::Warning);  // little room left and fragmented
  EXPECT_EQ(classify_health(100, 25, 0.4), MemoryHealthStatus::Healthy);
  EXPECT_EQ(classify_health(100, 4, 0), MemoryHealthStatus::Critical);
  EXPECT_EQ(worse_health(MemoryHealthStatus::Healthy, MemoryHealthStatus::Critical),
            MemoryHealthStatus::Critical);
  EXPECT_EQ(worse_health(MemoryHealthStatus::Failed, MemoryHealthStatus::Warning),
            MemoryHealthStatus::Failed);
}

HealthInputs roomy() { return {.answered = true, .total_bytes = 100, .free_bytes = 60, .fragmentation = 0}; }

TEST(HealthPolicy, AHealthyDeviceHasNoReasons) {
  const auto g = grade_health(roomy());
  EXPECT_EQ(g.status, MemoryHealthStatus::Healthy);
  EXPECT_TRUE(g.reasons.empty());
}

TEST(HealthPolicy, PressureAndRecentFailuresGradeADevice) {
  auto in = roomy();
  in.pressure = PressureLevel::High;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Warning);
  EXPECT_EQ(grade_health(in).reasons, std::vector<std::string>{"memory pressure High"});
  in.pressure = PressureLevel::Critical;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Critical);
  in = roomy();
  in.recent_out_of_memory = 3;
  const auto g = grade_health(in);
  EXPECT_EQ(g.status, MemoryHealthStatus::Warning);
  ASSERT_EQ(g.reasons.size(), 1u);
  EXPECT_NE(g.reasons[0].find("3 out-of-memory failures"), std::string::npos);
}

TEST(HealthPolicy, HardwareErrorsGradeAGpuAndCorrectedOnesDoNot) {
  auto in = roomy();
  in.hardware.ecc_corrected = 12;
  in.hardware.ecc_uncorrected = 0;
  in.hardware.remapping_failed = false;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Healthy);
  in.hardware.remapping_pending = true;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Warning);
  in.hardware.ecc_uncorrected = 1;
  auto g = grade_health(in);
  EXPECT_EQ(g.status, MemoryHealthStatus::Critical);
  ASSERT_EQ(g.reasons.size(), 2u);  // worst first
  EXPECT_NE(g.reasons[0].find("uncorrectable ECC"), std::string::npos);
  EXPECT_NE(g.reasons[1].find("reset"), std::string::npos);
  in = roomy();
  in.hardware.remapping_failed = true;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Critical);
}

TEST(HealthPolicy, AnUnreadableOrEmptyDevice) {
  auto in = roomy();
  in.answered = false;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Failed);
  in = roomy();
  in.total_bytes = 0;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Unknown);
  in = roomy();
  in.free_bytes = 3;
  EXPECT_EQ(grade_health(in).status, MemoryHealthStatus::Critical);
  EXPECT_NE(grade_health(in).reasons[0].find("3.0% of the device free"), std::string::npos);
}

}  // namespace
}  // namespace memd
