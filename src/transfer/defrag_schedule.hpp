// transfer/defrag_schedule.hpp — when defragmentation should run by itself.
//
// A pure decision for the monitor's scheduler (which owns the thread and
// the idle clock): defragment a pool once its fragmentation has reached the
// threshold and nothing has used the device for the idle time, so the
// copies never compete with work. Fragmentation is the pool statistic
// (1 − largest free block ÷ free bytes over mapped memory).
//
// Thread safety: pure.
#pragma once

#include <chrono>

namespace memd {

struct DefragScheduleOptions {
  double fragmentation_threshold = 0.3;
  std::chrono::steady_clock::duration min_idle = std::chrono::seconds(30);
};

// True when fragmentation >= threshold and idle_for >= min_idle. A NaN
// fragmentation or a negative idle time never triggers.
constexpr bool should_defragment(double fragmentation, std::chrono::steady_clock::duration idle_for,
                                 const DefragScheduleOptions& options = {}) noexcept {
  if (!(fragmentation >= options.fragmentation_threshold)) return false;  // NaN: false
  if (idle_for < std::chrono::steady_clock::duration::zero()) return false;
  return idle_for >= options.min_idle;
}

}  // namespace memd
