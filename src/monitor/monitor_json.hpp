// monitor/monitor_json.hpp — the monitor's values as the wire shows them.
// Here, not in src/protocol, because pressure_changed events carry the same
// object the memory_pressure action answers with: one encoding for both.
//
// Thread safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include "monitor/pressure.hpp"

namespace memd {

nlohmann::json to_json(const PressureReading& reading);

}  // namespace memd
