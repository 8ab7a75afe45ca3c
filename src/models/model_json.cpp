// models/model_json.cpp — see model_json.hpp.
#include "models/model_json.hpp"

#include <algorithm>

#include "memd/iso8601.hpp"
#include "memd/memory_types.hpp"

namespace memd {

nlohmann::json to_json(const ModelStatus& s) {
  nlohmann::json components = nlohmann::json::array();
  for (const auto& c : s.components) {
    nlohmann::json j{{"name", c.name},
                     {"sizeBytes", c.bytes},
                     {"tensors", c.tensors},
                     {"tier", std::string(to_string(c.tier))},
                     {"sharedWith", c.holders > 0 ? c.holders - 1 : 0}};
    if (c.allocation) j["allocationId"] = c.allocation->to_string();
    if (!c.hash.empty()) j["contentHash"] = c.hash;
    components.push_back(std::move(j));
  }
  nlohmann::json out{{"name", s.name},
                     {"path", s.path},
                     {"kind", s.kind},
                     {"state", std::string(to_string(s.state))},
                     {"tier", std::string(to_string(s.tier))},
                     {"priority", std::string(to_string(static_cast<MemoryPriority>(std::clamp(s.priority, 0, 3))))},
                     {"pinned", s.pinned},
                     {"keepAliveSeconds", s.keep_alive.count()},
                     {"sizeBytes", s.bytes},
                     {"vramBytes", s.vram_bytes},
                     {"ramBytes", s.ram_bytes},
                     {"sharedBytes", s.shared_bytes},
                     {"tensors", s.tensors},
                     {"dtypes", s.dtypes},
                     {"components", std::move(components)},
                     {"hits", s.hits},
                     {"preloaded", s.preloaded}};
  out["deviceId"] = s.device ? nlohmann::json(s.device->to_string()) : nlohmann::json(nullptr);
  out["dtype"] = s.narrowed_to ? nlohmann::json(to_string(*s.narrowed_to)) : nlohmann::json(nullptr);
  nlohmann::json stages = nlohmann::json::array();
  for (const auto& [stage, secs] : s.stage_seconds) stages.push_back({{"stage", stage}, {"seconds", secs}});
  out["progress"] = {{"stage", s.stage},
                     {"bytesDone", s.progress_bytes},
                     {"bytesTotal", s.progress_total},
                     {"rateBytesPerSecond", s.rate_bytes_per_second},
                     {"stages", std::move(stages)}};
  if (s.state == ModelState::Loaded) {
    out["loadSeconds"] = s.load_seconds;
    out["loadGBps"] = s.load_gbps;
  }
  if (s.last_use != std::chrono::system_clock::time_point{}) out["lastUse"] = iso8601(s.last_use);
  if (!s.error.empty()) out["error"] = s.error;
  return out;
}

nlohmann::json to_json(const ModelEstimate& e) {
  nlohmann::json evict = nlohmann::json::array();
  for (const auto& [name, bytes] : e.evict) evict.push_back({{"name", name}, {"freesBytes", bytes}});
  return {{"deviceId", e.device.to_string()}, {"sizeBytes", e.bytes},         {"newBytes", e.new_bytes},
          {"roomBytes", e.room_bytes},        {"fits", e.fits},               {"evict", std::move(evict)},
          {"evictableBytes", e.evictable_bytes}};
}

nlohmann::json to_json(const ModelOptimizeReport& r) {
  nlohmann::json moved = nlohmann::json::array();
  for (const auto& m : r.moved) {
    nlohmann::json j{{"name", m.name},
                     {"fromTier", std::string(to_string(m.from))},
                     {"toTier", std::string(to_string(m.to))},
                     {"sizeBytes", m.bytes}};
    j["deviceId"] = m.device ? nlohmann::json(m.device->to_string()) : nlohmann::json(nullptr);
    moved.push_back(std::move(j));
  }
  // Bytes freed per tier and device: each GPU or host device's VRAM, and
  // the RAM tier (pinned host memory on cpu).
  nlohmann::json freed = nlohmann::json::array();
  std::uint64_t vram = 0;
  for (const auto& [device, bytes] : r.vram_freed) {
    freed.push_back({{"deviceId", device.to_string()}, {"tier", "VRAM"}, {"bytes", bytes}});
    vram += bytes;
  }
  if (r.ram_freed > 0) freed.push_back({{"deviceId", "cpu"}, {"tier", "RAM"}, {"bytes", r.ram_freed}});
  return {{"dryRun", r.dry_run},
          {"moved", std::move(moved)},
          {"freed", std::move(freed)},
          {"vramBytesFreed", vram},
          {"ramBytesFreed", r.ram_freed},
          {"ramBytesAdded", r.ram_added},
          {"ramCacheBytes", r.ram_bytes},
          {"orphanBytesFreed", r.orphans_freed}};
}

}  // namespace memd
