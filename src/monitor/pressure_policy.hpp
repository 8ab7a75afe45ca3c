// monitor/pressure_policy.hpp — what memd does on its own when a device
// fills up, and the record of each thing it did.
//
// The policy is one path with the reclaim ladder (alloc/reclaim_ladder.hpp):
// its High action is the ladder's release rung (trim the device's pools —
// thread caches, slack pages, empty segments — and call the release
// callbacks, which drop caches above their floors such as the model
// manager's RAM tier), and its Critical action is the ladder's reclaim rung
// (the reclaim callbacks, asked for the bytes that would bring the device
// back under the High threshold). The ladder climbs the same rungs when an
// allocation meets out of memory; the policy climbs them before it does.
// While a device is Critical, new Low-priority allocations on it are refused
// with out_of_memory and a message naming the level.
//
// Configured with `memd serve --pressure-policy off|release|reclaim|full`
// (full: everything, the default; reclaim: no refusals; release: High's
// action only; off: levels and events only).
//
// Thread safety: values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "memd/device.hpp"
#include "memd/error.hpp"
#include "monitor/pressure.hpp"

namespace memd {

struct PressurePolicy {
  bool release_cached = true;       // at High and Critical
  bool reclaim = true;              // at Critical
  bool refuse_low_priority = true;  // while Critical

  // "full", "reclaim", "release", "off".
  static Result<PressurePolicy> parse(std::string_view name);
  std::string name() const;
};

struct PressureAction {
  DeviceId device;
  PressureLevel level = PressureLevel::Low;
  std::string action;  // "release_cached" | "reclaim" | "refuse_low_priority"
  std::uint64_t bytes = 0;       // released or reclaimed
  std::uint64_t requested = 0;   // reclaim: the bytes asked for
};

}  // namespace memd
