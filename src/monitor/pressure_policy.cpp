// The pressure policy's names (monitor/pressure_policy.hpp).
#include "monitor/pressure_policy.hpp"

namespace memd {

Result<PressurePolicy> PressurePolicy::parse(std::string_view name) {
  if (name == "full") return PressurePolicy{};
  if (name == "reclaim") return PressurePolicy{.release_cached = true, .reclaim = true, .refuse_low_priority = false};
  if (name == "release") return PressurePolicy{.release_cached = true, .reclaim = false, .refuse_low_priority = false};
  if (name == "off") return PressurePolicy{.release_cached = false, .reclaim = false, .refuse_low_priority = false};
  return fail(ErrorCode::invalid_argument, "pressure policy '{}': expected full, reclaim, release or off",
              name.substr(0, 32));
}

std::string PressurePolicy::name() const {
  if (release_cached && reclaim && refuse_low_priority) return "full";
  if (release_cached && reclaim) return "reclaim";
  if (release_cached && !reclaim && !refuse_low_priority) return "release";
  if (!release_cached && !reclaim && !refuse_low_priority) return "off";
  return "custom";
}

}  // namespace memd
