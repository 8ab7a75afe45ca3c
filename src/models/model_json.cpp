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
  out["progress"] = {{"stage", s.stage}, {"bytesDone", s.progress_bytes}, {"bytesTotal", s.progress_total}};
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

}  // namespace memd
