// The health grading rule (see health_policy.hpp for the thresholds' reasons).
#include "monitor/health_policy.hpp"

#include <fmt/format.h>

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

HealthGrade grade_health(const HealthInputs& in) {
  if (!in.answered) return {MemoryHealthStatus::Failed, {"the device's memory info cannot be read"}};
  if (in.total_bytes == 0) return {MemoryHealthStatus::Unknown, {"the device reports no memory"}};
  std::vector<std::string> critical, warning;
  const double free_pct = 100.0 * static_cast<double>(in.free_bytes) / static_cast<double>(in.total_bytes);
  switch (classify_health(in.total_bytes, in.free_bytes, in.fragmentation)) {
    case MemoryHealthStatus::Critical: critical.push_back(fmt::format("{:.1f}% of the device free", free_pct)); break;
    case MemoryHealthStatus::Warning:
      warning.push_back(in.fragmentation > kWarningFragmentation && free_pct >= 100 * kWarningFreeFraction
                            ? fmt::format("{:.1f}% free and memd's free space {:.0f}% fragmented", free_pct,
                                          100 * in.fragmentation)
                            : fmt::format("{:.1f}% of the device free", free_pct));
      break;
    default: break;
  }
  if (in.pressure == PressureLevel::Critical) critical.push_back("memory pressure Critical");
  if (in.pressure == PressureLevel::High) warning.push_back("memory pressure High");
  const auto& hw = in.hardware;
  if (hw.ecc_uncorrected.value_or(0) > 0)
    critical.push_back(fmt::format("{} uncorrectable ECC errors since the driver loaded", *hw.ecc_uncorrected));
  if (hw.remapping_failed.value_or(false)) critical.push_back("a memory row could not be remapped");
  if (in.recent_out_of_memory > 0)
    warning.push_back(fmt::format("{} out-of-memory failures in the last {} minutes", in.recent_out_of_memory,
                                  kRecentFailureWindow.count()));
  if (hw.remapped_rows_uncorrectable.value_or(0) > 0)
    warning.push_back(fmt::format("{} rows remapped after uncorrectable errors", *hw.remapped_rows_uncorrectable));
  if (hw.remapping_pending.value_or(false) || hw.retired_pages_pending.value_or(false))
    warning.push_back("a page retirement or row remap waits for a GPU reset");
  HealthGrade grade;
  grade.status = !critical.empty() ? MemoryHealthStatus::Critical
                 : !warning.empty() ? MemoryHealthStatus::Warning
                                    : MemoryHealthStatus::Healthy;
  grade.reasons = std::move(critical);
  grade.reasons.insert(grade.reasons.end(), warning.begin(), warning.end());
  return grade;
}

MemoryHealthStatus worse_health(MemoryHealthStatus a, MemoryHealthStatus b) noexcept {
  // The enum's integer order already is Unknown < Healthy < Warning < Critical < Failed.
  return static_cast<int>(a) >= static_cast<int>(b) ? a : b;
}

}  // namespace memd
