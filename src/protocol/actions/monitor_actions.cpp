// The monitoring domain's actions and their JSON.
#include "protocol/actions/monitor_actions.hpp"

#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "protocol/wire_encoding.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

Result<Outcome> memory_pressure(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto readings, s.pressure(device));
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& r : readings) devices.push_back(to_json(r));
  const auto& t = s.monitor().options().thresholds;
  return ok({{"devices", std::move(devices)},
             {"thresholds",
              {{"moderate", t.moderate}, {"high", t.high}, {"critical", t.critical}, {"hysteresis", t.hysteresis}}},
             {"policy", s.monitor().options().policy.name()}});
}

}  // namespace

void append_monitor_actions(std::vector<Action>& t) {
  constexpr auto Get = HttpMethod::Get;
  t.push_back(Action{
      "memory_pressure",
      "Pressure of every device, or of one: the level (Low, Moderate, High, Critical) and the numbers behind it. "
      "percent = inUseBytes (allocated by memd; its cached pages count as free) / capacityBytes (the device total "
      "less other processes' use, capped by memd's device limit). A level is entered at its threshold and left "
      "hysteresis points below it; each change is a pressure_changed event. policy names what memd does on its "
      "own (memd serve --pressure-policy).",
      {{Get, "/api/memory/pressure"}, {Get, "/api/memory/pressure/{deviceId}"}},
      {{"deviceId", K::DeviceId, false, "Only this device (cuda:N, host:N or cpu)."}},
      R"({"deviceId": "host:0"})",
      R"({"devices": [{"deviceId": "host:0", "level": "High", "percent": 83.5, "capacityBytes": 8160437862, "inUseBytes": 6813966336, "deviceTotalBytes": 8589934592, "otherProcessesBytes": 0, "limitBytes": 8160437862, "cachedBytes": 268435456}], "thresholds": {"moderate": 60, "high": 80, "critical": 92, "hysteresis": 3}, "policy": "full"})",
      memory_pressure});
}

}  // namespace memd
