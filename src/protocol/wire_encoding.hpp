// protocol/wire_encoding.hpp — service values as the wire's JSON.
//
// The one place that names result keys: camelCase, enums as their string
// names, sizes in bytes, times as ISO 8601 UTC with milliseconds. docs/api.md
// shows these shapes; the golden transcript test pins them.
//
// Thread safety: pure functions.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "alloc/allocation_record.hpp"
#include "alloc/limits.hpp"
#include "alloc/pool_stats.hpp"
#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/iso8601.hpp"
#include "monitor/monitor_json.hpp"
#include "service/reports.hpp"

namespace memd {

// "allocated_bytes" → "allocatedBytes".
std::string camel_case(std::string_view snake);

nlohmann::json to_json(const AllocationRecord& record);
nlohmann::json to_json(const DeviceInfo& info);
nlohmann::json to_json(const PoolStats& stats);
nlohmann::json to_json(const DeviceStatus& status);
nlohmann::json to_json(const MemoryStatusReport& report);
nlohmann::json to_json(const UsageReport& report);
nlohmann::json to_json(const AllocationPage& page);
nlohmann::json to_json(const Limits& limits);
nlohmann::json to_json(const ClearReport& report);
nlohmann::json to_json(const OptimizeReport& report);
nlohmann::json to_json(const DeviceHealthInfo& info);
nlohmann::json to_json(const HealthReport& report);
nlohmann::json to_json(const SessionReport& report);
nlohmann::json to_json(const SessionCloseReport& report);

}  // namespace memd
