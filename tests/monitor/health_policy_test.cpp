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

}  // namespace
}  // namespace memd
