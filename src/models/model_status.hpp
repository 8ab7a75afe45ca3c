// models/model_status.hpp — what the model manager is asked and answers:
// load requests, a model's status, estimates. Values.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "models/dtype.hpp"

namespace memd {

enum class ModelState : std::uint8_t { Loading, Loaded, Failed };
// Where a model lives: VRAM (every component on its device), RAM (every
// component at least in memd's RAM cache), Disk (some component only in its
// files).
enum class ModelTier : std::uint8_t { VRAM, RAM, Disk };

std::string_view to_string(ModelState state) noexcept;
std::string_view to_string(ModelTier tier) noexcept;

// Where a load without a deviceId goes, among the GPUs (or host devices) the
// model fits on at all. Both first prefer the device that needs the least
// eviction; they differ when several need none:
//   Spread: the one with the most room: models spread over the devices,
//           each keeps headroom for activations (the default).
//   Fit:    the one with the least room that still holds it (best fit):
//           small models pack together and a large one still finds a
//           device with the room for it.
enum class ModelPlacement : std::uint8_t { Spread, Fit };
std::string_view to_string(ModelPlacement placement) noexcept;  // "spread", "fit"
std::optional<ModelPlacement> parse_model_placement(std::string_view text) noexcept;

struct ModelLoadRequest {
  std::string name;
  std::string path;                 // under a --model-root
  std::optional<DeviceId> device;   // none: placed by `placement`
  ModelPlacement placement = ModelPlacement::Spread;
  int priority = 1;                 // higher stays longer (MemoryPriority: Low 0 .. Critical 3)
  std::chrono::seconds keep_alive{0};
  bool pinned = false;              // never evicted
  // F16 or BF16: the model's F32 tensors land narrowed to it
  // (models/layout_narrowing.hpp); none: every tensor as the file holds it.
  std::optional<Dtype> dtype;
};

struct ComponentStatus {
  std::string name;
  std::uint64_t bytes = 0;
  std::size_t tensors = 0;
  ModelTier tier = ModelTier::Disk;
  std::optional<AllocationId> allocation;  // the VRAM buffer, when resident
  std::size_t holders = 0;                 // models sharing it (1: its own)
  std::string hash;                        // content hash, when computed
};

struct ModelStatus {
  std::string name;
  std::string path;
  std::string kind;  // Safetensors, Sharded, Diffusers, Checkpoint
  ModelState state = ModelState::Loading;
  ModelTier tier = ModelTier::Disk;
  std::optional<DeviceId> device;
  int priority = 0;
  bool pinned = false;
  std::chrono::seconds keep_alive{0};
  std::uint64_t bytes = 0;           // every component
  std::uint64_t vram_bytes = 0;      // of those, on the device
  std::uint64_t ram_bytes = 0;       // of those, in the RAM cache
  std::uint64_t shared_bytes = 0;    // components another model holds too
  std::size_t tensors = 0;
  std::vector<std::string> dtypes;  // in VRAM (after any narrowing)
  std::optional<Dtype> narrowed_to;  // the load's dtype, when it asked for one
  std::vector<ComponentStatus> components;
  // The load: bytes read and landed, the stage, how long, how fast.
  std::uint64_t progress_bytes = 0;
  std::uint64_t progress_total = 0;
  std::string stage;
  // The last job's stages that ended, in order, each with its seconds.
  std::vector<std::pair<std::string, double>> stage_seconds;
  // Bytes landed per second since the job began (0 before any landed).
  double rate_bytes_per_second = 0;
  double load_seconds = 0;
  double load_gbps = 0;
  std::uint64_t hits = 0;   // loads asked for while it was resident
  bool preloaded = false;   // brought up on a prediction, not used since
  std::chrono::system_clock::time_point last_use{};
  std::string error;        // Failed: why
};

struct ModelEstimate {
  DeviceId device;
  std::uint64_t bytes = 0;          // the model's components
  std::uint64_t new_bytes = 0;      // not on the device already (shared components excluded)
  std::uint64_t room_bytes = 0;     // free for memd on the device now
  bool fits = false;                // after the evictions below
  std::vector<std::pair<std::string, std::uint64_t>> evict;  // models, bytes each frees
  std::uint64_t evictable_bytes = 0;
};

// memory_model_optimize (issue 15, item 5): what to look at, and whether to
// move anything.
struct ModelOptimizeRequest {
  // Only this device: a GPU or host device offloads its idle models and
  // leaves the RAM tier alone; `cpu` only brings the RAM tier to its floor.
  // None: every device and the RAM tier.
  std::optional<DeviceId> device;
  bool dry_run = false;  // plan only: report what would move, move nothing
  // Tests: the clock keep-alives are measured against (none: now).
  std::optional<std::chrono::steady_clock::time_point> now;
};

// One model that went down a tier (or would, in a dry run).
struct ModelMove {
  std::string name;
  std::optional<DeviceId> device;
  ModelTier from = ModelTier::VRAM;
  ModelTier to = ModelTier::RAM;
  std::uint64_t bytes = 0;  // its components' bytes that moved (a shared one under each holder)
};

struct ModelOptimizeReport {
  bool dry_run = false;
  std::vector<ModelMove> moved;
  std::map<DeviceId, std::uint64_t> vram_freed;  // per device, each component once
  std::uint64_t ram_freed = 0;                   // RAM-tier copies dropped (to its floor)
  std::uint64_t ram_added = 0;                   // VRAM components offloaded into the RAM tier
  std::uint64_t ram_bytes = 0;                   // the RAM tier after it
  std::uint64_t orphans_freed = 0;               // components no model held (none by construction)
};

}  // namespace memd
