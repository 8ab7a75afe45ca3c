// monitor/health_policy.hpp — how memd grades a device's memory health.
//
// One rule, used by memory_status, memory_health and the CLI, so a device
// cannot look Healthy in one view and Warning in another:
//   Critical  less than 5% of the device free (allocations about to fail);
//   Warning   less than 15% free, or less than 30% free while memd's mapped
//             free space is more than half fragmented. Fragmentation alone is
//             no warning: while the device has room, memd maps a new stretch
//             for a large request instead of needing its holes (measured: a
//             2 GiB host device with 1.4 GiB free and 22 MiB of holes read
//             83% fragmented and was wrongly graded Warning);
//   Healthy   otherwise.
// A device whose memory info cannot be read is Failed.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>

#include "memd/memory_types.hpp"

namespace memd {

inline constexpr double kCriticalFreeFraction = 0.05;
inline constexpr double kWarningFreeFraction = 0.15;
inline constexpr double kWarningFragmentation = 0.5;
inline constexpr double kFragmentationMattersBelowFreeFraction = 0.30;

MemoryHealthStatus classify_health(std::uint64_t total_bytes, std::uint64_t free_bytes,
                                   double fragmentation) noexcept;

// The worse of two grades (Failed > Critical > Warning > Healthy > Unknown).
MemoryHealthStatus worse_health(MemoryHealthStatus a, MemoryHealthStatus b) noexcept;

}  // namespace memd
