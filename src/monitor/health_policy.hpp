// monitor/health_policy.hpp — how memd grades a device's memory health.
//
// One rule, used by memory_status, memory_health (GET /healthz), the CLI and
// health_changed events, so a device cannot look Healthy in one view and
// Warning in another. The seed's enum names the grades: Warning is what the
// issue calls Degraded (still serving, look at it), Failed a device whose
// memory info cannot be read, Unknown one never measured. Each grade comes
// with the reasons that made it, worst first.
//   Critical  less than 5% of the device free (allocations about to fail);
//             pressure Critical; uncorrectable ECC errors since the driver
//             loaded; a row that could not be remapped;
//   Warning   less than 15% free, or less than 30% free while memd's mapped
//             free space is more than half fragmented (fragmentation alone is
//             no warning: while the device has room, memd maps a new stretch
//             for a large request instead of needing its holes — measured: a
//             2 GiB host device with 1.4 GiB free and 22 MiB of holes read
//             83% fragmented and was wrongly graded Warning); pressure High;
//             an out_of_memory in the last five minutes; rows remapped after
//             uncorrectable errors, or a retirement or remap waiting for a
//             GPU reset;
//   Healthy   otherwise.
// Corrected ECC errors alone are no warning: they are what ECC is for.
//
// Thread safety: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "memd/memory_types.hpp"
#include "monitor/pressure.hpp"

namespace memd {

inline constexpr double kCriticalFreeFraction = 0.05;
inline constexpr double kWarningFreeFraction = 0.15;
inline constexpr double kWarningFragmentation = 0.5;
inline constexpr double kFragmentationMattersBelowFreeFraction = 0.30;
inline constexpr std::chrono::minutes kRecentFailureWindow{5};

struct HealthInputs {
  bool answered = true;  // the backend's memory info could be read
  std::uint64_t total_bytes = 0;
  std::uint64_t free_bytes = 0;
  double fragmentation = 0;
  PressureLevel pressure = PressureLevel::Low;
  std::uint64_t recent_out_of_memory = 0;  // within kRecentFailureWindow
  DeviceHealthInfo hardware;
};

struct HealthGrade {
  MemoryHealthStatus status = MemoryHealthStatus::Unknown;
  std::vector<std::string> reasons;  // empty when Healthy
};

HealthGrade grade_health(const HealthInputs& in);

// The free-memory part of the rule alone (kept for callers that have only
// the device's numbers).
MemoryHealthStatus classify_health(std::uint64_t total_bytes, std::uint64_t free_bytes,
                                   double fragmentation) noexcept;

// The worse of two grades (Failed > Critical > Warning > Healthy > Unknown).
MemoryHealthStatus worse_health(MemoryHealthStatus a, MemoryHealthStatus b) noexcept;

}  // namespace memd
