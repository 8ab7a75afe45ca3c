// monitor/recommendations.hpp — what an operator (or a script) could do to
// get memory back, ranked, each with the request that does it.
//
// A pure function of the current state (RecommendationInputs, gathered by
// the service) to a ranked list. Each recommendation says what it predicts
// (bytes freed and/or fragmentation removed), why, with the numbers, and
// the action that carries it out — {action, params} ready for the stdio door
// or the action's REST route. Kinds, in their tie-break order:
//   release_cached    memory_optimize {}: what a trim gives back now. The
//                     allocator's dry run (DevicePool::trim_forecast) walks
//                     exactly what trim() would unmap — whole free mapping
//                     units, cached huge ranges, empty segments — so on the
//                     host backend the prediction is exact but for empty slab
//                     spans (≤ 64 KiB a size class) and pending stream frees.
//                     memory_optimize trims every device: one recommendation
//                     for the machine (or the device asked about).
//   defragment        memory_defragment {deviceId}: a device whose pools are
//                     fragmented. fragmentationRemoved is today's
//                     fragmentation (compaction packs live blocks, leaving one
//                     free run). bytesFreed is an estimate: the free mapped
//                     bytes a trim leaves stranded in partly used units,
//                     rounded down to whole units of the pool's current
//                     mapping unit (units mapped earlier may be other sizes);
//                     0 for segment pools. Offered only while the action
//                     exists (defragment_available).
//   free_idle         memory_deallocate {allocationId}: an allocation not
//                     touched (last_used_at) for idle_after; bytes = its size.
//                     Pinned and exported allocations are left out (something
//                     outside memd may be using them without memd seeing it).
//   raise_limit       memory_limits {deviceId|memoryType|owner, bytes}: a
//                     limit that refused allocations within quota_recent and
//                     is still short; bytes = the new limit (old + the last
//                     shortfall). Frees nothing: bytesFreed 0, bytesNeeded the
//                     shortfall.
//   unload_model      memory_model_unload {name}: a model idle for idle_after
//                     (input from the model manager, issue 15: empty until it
//                     exists, so this kind never appears today).
// Ranking: bytes freed, then fragmentation removed, both descending; ties
// by kind (the order above), then by the action's params for a stable order.
//
// Thread safety: pure.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "alloc/allocation_record.hpp"
#include "alloc/limits.hpp"
#include "alloc/memory_manager.hpp"
#include "monitor/analytics.hpp"
#include "monitor/status_report.hpp"

namespace memd {

enum class RecommendationKind : std::uint8_t { release_cached, defragment, free_idle, raise_limit, unload_model };
std::string_view to_string(RecommendationKind kind) noexcept;

// A model as the model manager (issue 15) will report it: enough to decide
// that unloading it is worth recommending. Nothing fills this yet.
struct ModelInput {
  std::string name;
  DeviceId device;
  MemoryType memory_type = MemoryType::VRAM;  // the tier it sits in
  std::uint64_t bytes = 0;
  std::chrono::system_clock::time_point last_used_at;
};

struct RecommendationOptions {
  std::optional<DeviceId> device;  // only this device's (release_cached: its share)
  std::chrono::seconds idle_after{600};
  std::chrono::seconds quota_recent{3600};
  double min_fragmentation = 0.2;  // defragment below this is not worth a move
  std::size_t max_free_idle = 32;  // the largest idle allocations, at most
  bool defragment_available = false;
};

struct RecommendationInputs {
  std::chrono::system_clock::time_point now;
  MemoryStatusReport status;  // devices with pools
  Limits limits;
  std::vector<AllocationRecord> allocations;  // live ones
  std::map<PoolKey, TrimForecast> trim;       // MemoryManager::trim_forecasts()
  std::vector<QuotaShortfall> shortfalls;     // Analytics::shortfalls()
  std::vector<ModelInput> models;             // issue 15; empty today
};

struct Recommendation {
  RecommendationKind kind = RecommendationKind::release_cached;
  std::optional<DeviceId> device;
  std::uint64_t bytes_freed = 0;
  double fragmentation_removed = 0;
  std::uint64_t bytes_needed = 0;  // raise_limit: the shortfall
  std::string reason;
  std::string action;      // "memory_optimize", …
  nlohmann::json params;   // the action's params
};

std::vector<Recommendation> recommend(const RecommendationInputs& in, const RecommendationOptions& options);

}  // namespace memd
