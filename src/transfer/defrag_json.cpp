// Defragmentation reports as the wire shows them (transfer/defrag_json.hpp).
#include "transfer/defrag_json.hpp"

namespace memd {

nlohmann::json to_json(const DefragReport& r) {
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& p : r.pools)
    devices.push_back({{"deviceId", p.device.to_string()},
                       {"memoryType", to_string(p.memory_type)},
                       {"fragmentationBefore", p.fragmentation_before},
                       {"fragmentationAfter", p.fragmentation_after},
                       {"reservedBytesBefore", p.reserved_bytes_before},
                       {"reservedBytesAfter", p.reserved_bytes_after},
                       {"freeBytesBefore", p.free_bytes_before},
                       {"freeBytesAfter", p.free_bytes_after},
                       {"moves", p.moves},
                       {"bytesMoved", p.bytes_moved},
                       {"bytesRemapped", p.bytes_remapped}});
  nlohmann::json out{{"dryRun", r.dry_run},
                     {"bytesMoved", r.bytes_moved},
                     {"bytesRemapped", r.bytes_remapped},
                     {"moves", r.moves},
                     {"remaps", r.remaps},
                     {"skipped", r.skipped},
                     {"abandoned", r.abandoned},
                     {"passes", r.passes},
                     {"durationMs", static_cast<double>(r.duration.count()) / 1e6},
                     {"releaseMs", static_cast<double>(r.release_duration.count()) / 1e6},
                     {"planMs", static_cast<double>(r.plan_duration.count()) / 1e6},
                     {"copyMs", static_cast<double>(r.copy_duration.count()) / 1e6},
                     {"switchMs", static_cast<double>(r.switch_duration.count()) / 1e6},
                     {"statsMs", static_cast<double>(r.stats_duration.count()) / 1e6},
                     {"devices", std::move(devices)}};
  if (r.dry_run) {
    nlohmann::json plan = nlohmann::json::array();
    for (const auto& m : r.plan)
      plan.push_back({{"allocationId", m.id.to_string()},
                      {"deviceId", m.device.to_string()},
                      {"memoryType", to_string(m.memory_type)},
                      {"kind", to_string(m.move.kind)},
                      {"fromAddress", m.move.from},
                      {"toAddress", m.move.to},
                      {"sizeBytes", m.move.size},
                      {"pass", m.pass}});
    out["plan"] = std::move(plan);
  }
  return out;
}

}  // namespace memd
