// Pressure levels with hysteresis (monitor/pressure.hpp).
#include "monitor/pressure.hpp"

#include <algorithm>
#include <array>

namespace memd {
namespace {
constexpr std::array<std::string_view, 4> kNames = {"Low", "Moderate", "High", "Critical"};
}

std::string_view to_string(PressureLevel level) noexcept { return kNames[static_cast<std::size_t>(level)]; }

std::optional<PressureLevel> parse_pressure_level(std::string_view name) noexcept {
  for (std::size_t i = 0; i < kNames.size(); ++i)
    if (kNames[i] == name) return static_cast<PressureLevel>(i);
  return std::nullopt;
}

Result<void> PressureThresholds::validate() const {
  if (!(moderate > 0 && moderate < high && high < critical && critical <= 100))
    return fail(ErrorCode::invalid_argument,
                "pressure thresholds must rise strictly within (0, 100]: moderate {} < high {} < critical {}",
                moderate, high, critical);
  if (!(hysteresis >= 0 && hysteresis < moderate))
    return fail(ErrorCode::invalid_argument, "pressure hysteresis {} must be at least 0 and below moderate ({})",
                hysteresis, moderate);
  if (high - moderate <= hysteresis || critical - high <= hysteresis)
    return fail(ErrorCode::invalid_argument,
                "pressure thresholds must be further apart than the hysteresis ({} points)", hysteresis);
  return {};
}

double PressureThresholds::threshold(PressureLevel level) const noexcept {
  switch (level) {
    case PressureLevel::Low: return 0;
    case PressureLevel::Moderate: return moderate;
    case PressureLevel::High: return high;
    case PressureLevel::Critical: return critical;
  }
  return 0;
}

PressureLevel next_pressure_level(PressureLevel current, double percent, const PressureThresholds& t) noexcept {
  // Up: the highest level whose threshold the percent reaches.
  PressureLevel reached = PressureLevel::Low;
  for (auto l : {PressureLevel::Moderate, PressureLevel::High, PressureLevel::Critical})
    if (percent >= t.threshold(l)) reached = l;
  if (reached >= current) return reached;
  // Down: leave each level only once the percent is hysteresis below its
  // threshold; stop at the first level that still holds.
  PressureLevel level = current;
  while (level > reached && percent < t.threshold(level) - t.hysteresis)
    level = static_cast<PressureLevel>(static_cast<int>(level) - 1);
  return level;
}

PressureReading measure_pressure(DeviceId device, const PressureInputs& in) noexcept {
  PressureReading r;
  r.device = device;
  r.device_total_bytes = in.device_total;
  r.other_processes_bytes = in.device_used > in.memd_reserved ? in.device_used - in.memd_reserved : 0;
  r.limit_bytes = in.limit;
  std::uint64_t capacity = in.device_total - std::min(in.device_total, r.other_processes_bytes);
  if (in.limit != 0) capacity = std::min(capacity, in.limit);
  r.capacity_bytes = capacity;
  r.in_use_bytes = in.memd_allocated;
  r.cached_bytes = in.memd_reserved > in.memd_allocated ? in.memd_reserved - in.memd_allocated : 0;
  r.percent = capacity == 0 ? 100.0
                            : 100.0 * static_cast<double>(in.memd_allocated) / static_cast<double>(capacity);
  return r;
}

}  // namespace memd
