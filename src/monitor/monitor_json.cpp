// The monitor's wire objects (monitor/monitor_json.hpp).
#include "monitor/monitor_json.hpp"

#include <cmath>

namespace memd {

nlohmann::json to_json(const PressureReading& r) {
  return {{"deviceId", r.device.to_string()},
          {"level", std::string(to_string(r.level))},
          // Two decimals: enough to see a threshold crossed, stable in tests.
          {"percent", std::round(r.percent * 100.0) / 100.0},
          {"capacityBytes", r.capacity_bytes},
          {"inUseBytes", r.in_use_bytes},
          {"deviceTotalBytes", r.device_total_bytes},
          {"otherProcessesBytes", r.other_processes_bytes},
          {"limitBytes", r.limit_bytes},
          {"cachedBytes", r.cached_bytes}};
}

}  // namespace memd
