// monitor/pressure.hpp — how full a device is, as a level that does not flap.
//
// Pressure is the share of memd's capacity on a device that memd's users
// hold:
//   capacity = min(device total − other processes' use, memd's device limit)
//   in use   = bytes allocated by memd on the device (model weights
//              included: they are allocations), where the allocator's cached
//              pages count as free — so at Critical there is still something
//              eviction can win, and trimming alone never lowers the level;
//   percent  = 100 · in use / capacity (100 when the capacity is 0).
// The device limit is the per-device limit when one is set, else the pool
// capacity (max_device_fraction of the device).
//
// Levels Low < Moderate < High < Critical are entered when the percent
// reaches the level's threshold (defaults 60 / 80 / 92) and left only when it
// falls `hysteresis` points (default 3) below it, so a device sitting at a
// threshold does not flap between two levels. A jump may cross several
// levels at once; the level is always the one the rule gives, whatever the
// path.
//
// Thread safety: pure functions and values.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "memd/device.hpp"
#include "memd/error.hpp"

namespace memd {

enum class PressureLevel : std::uint8_t { Low = 0, Moderate = 1, High = 2, Critical = 3 };

std::string_view to_string(PressureLevel level) noexcept;
std::optional<PressureLevel> parse_pressure_level(std::string_view name) noexcept;

struct PressureThresholds {
  double moderate = 60;
  double high = 80;
  double critical = 92;
  double hysteresis = 3;

  // 0 < moderate < high < critical ≤ 100, 0 ≤ hysteresis < moderate, and
  // each gap wider than the hysteresis (else leaving one level would skip
  // the one below it).
  Result<void> validate() const;
  double threshold(PressureLevel level) const noexcept;  // Low: 0
};

// The level after observing `percent` at `current`.
PressureLevel next_pressure_level(PressureLevel current, double percent, const PressureThresholds& t) noexcept;

// The numbers behind one device's level.
struct PressureReading {
  DeviceId device;
  PressureLevel level = PressureLevel::Low;
  double percent = 0;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t in_use_bytes = 0;
  std::uint64_t device_total_bytes = 0;
  std::uint64_t other_processes_bytes = 0;  // used on the device by others (the driver's truth − memd's)
  std::uint64_t limit_bytes = 0;            // memd's device limit in force
  std::uint64_t cached_bytes = 0;           // reserved by memd but not allocated: what a trim can give back
};

// capacity and percent from the inputs (level left to the caller).
struct PressureInputs {
  std::uint64_t device_total = 0;
  std::uint64_t device_used = 0;       // every process, as the backend reports it
  std::uint64_t memd_reserved = 0;     // what memd holds on the device
  std::uint64_t memd_allocated = 0;    // what memd's users hold
  std::uint64_t limit = 0;             // memd's device limit; 0: none
};
PressureReading measure_pressure(DeviceId device, const PressureInputs& in) noexcept;

}  // namespace memd
