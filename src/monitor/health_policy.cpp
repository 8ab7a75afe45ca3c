// The health grading rule (see health_policy.hpp for the thresholds' reasons).
#include "monitor/health_policy.hpp"

namespace memd {

MemoryHealthStatus classify_health(std::uint64_t total_bytes, std::uint64_t free_bytes,
                                   double fragmentation) noexcept {
  if (total_bytes == 0) return MemoryHealthStatus::Unknown;
  const double free_fraction = static_cast<double>(free_bytes) / static_cast<double>(total_bytes);
  if (free_fraction < kCriticalFreeFraction) return MemoryHealthStatus::Critical;
  if (free_fraction < kWarningFreeFraction) return MemoryHealthStatus::Warning;
  if (free_fraction < kFragmentationMattersBelowFreeFraction && fragmentation > kWarningFragmentation)
    return MemoryHealthStatus::Warning;
  return MemoryHealthStatus::Healthy;
}

MemoryHealthStatus worse_health(MemoryHealthStatus a, MemoryHealthStatus b) noexcept {
  // The enum's integer order already is Unknown < Healthy < Warning < Critical < Failed.
  return static_cast<int>(a) >= static_cast<int>(b) ? a : b;
}

}  // namespace memd
