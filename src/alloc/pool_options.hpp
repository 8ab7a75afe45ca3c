// alloc/pool_options.hpp — what a DevicePool is asked to be.
//
// Every knob of one pool: its device and memory type, the arena behind it
// (virtual memory or plain segments), the retention budget and mapping units
// (alloc/retention.hpp says how they are used), the thread caches. Policies
// are named presets of those knobs (PoolPolicy), so a user picks a trade-off
// rather than tuning units.
//
// Thread safety: a value type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"
#include "memd/size.hpp"

namespace memd {

// Which mechanism backs the pool's blocks (alloc/arena.hpp): one reserved
// range mapped on demand (alloc/virtual_arena.hpp) or whole segments
// (alloc/segment_arena.hpp).
enum class PoolMode { Virtual, Segments };

// The trade-off a pool makes between memory held and time spent mapping.
//   Footprint (default): mapping units follow the pool's size and shrink once
//     the layout fragments, so peak footprint stays within a few percent of
//     peak live bytes on every trace we have, at the cost of more map calls.
//   Throughput: one unit per mapped run (each map is one backend call however
//     large), so growth costs the fewest calls; a unit that later holds one
//     live block among free pages cannot go back, so the footprint can rise
//     well above peak live where the layout fragments (docs/benchmarks.md,
//     "Pool policies"). Opt-in.
enum class PoolPolicy { Footprint, Throughput };
std::string_view to_string(PoolPolicy policy) noexcept;
std::optional<PoolPolicy> parse_pool_policy(std::string_view text) noexcept;
// "DEVICE=POLICY" (e.g. "cuda:0=throughput"), as `memd serve --pool-policy`
// takes it; invalid_argument naming what is wrong.
Result<std::pair<DeviceId, PoolPolicy>> parse_device_pool_policy(std::string_view text);

struct PoolOptions {
  DeviceId device = DeviceId::host(0);
  MemoryType memory_type = MemoryType::VRAM;
  PoolMode mode = PoolMode::Virtual;
  std::uint64_t capacity = 0;               // 0: the device's total bytes
  // Throughput sets map_unit_min/max to kThroughputUnit when the pool is
  // created; Footprint leaves the fields below as they are.
  PoolPolicy policy = PoolPolicy::Footprint;
  // Requests at least this get a range (Segments: a segment) of their own.
  // 0: 1 GiB in Segments mode, never in Virtual mode, where a huge block in
  // the arena lets its pages serve the next blocks of any size (own ranges
  // made synth_segmentation unmap and remap far more often than the arena;
  // docs/benchmarks.md, "Policy changes, chosen on exact counts").
  std::uint64_t huge_threshold = 0;
  // Slack above the peak of busy bytes. 0.03 rather than 0.02: the same
  // ratios on every trace measured, fewer units mapped (docs/benchmarks.md,
  // "Retention").
  double retain_fraction = 0.03;
  std::uint64_t retain_min_pages = 2;       // slack always allowed, in pages
  std::uint64_t segment_size = 32 * kMiB;   // Segments mode: growth unit
  std::uint64_t stream_batch = 64;          // frees per stream before an event is recorded
  // The first stream is the pool's home: its frees go straight back
  // (alloc/stream_reuse.hpp). Off: every stream's frees are pending.
  bool home_stream = true;
  // Virtual mode maps physical memory in units: a unit is one physical
  // allocation (one backend map() call maps a run of them), and only whole
  // units are unmapped. On CUDA a unit costs about the same to map, and to
  // unmap, whatever its size up to 256 MiB (cuMemSetAccess and cuMemUnmap
  // dominate; bench/vmm_calls.cpp; docs/benchmarks.md, "Driver call costs"),
  // so fewer, larger units are faster; but a unit that later holds one live
  // block among free pages cannot go back, so larger units raise the
  // footprint (vision_mix at 16 MiB, 32 MiB and uncapped units:
  // docs/benchmarks.md, "Policy changes, chosen on exact counts"). The run of
  // pages a block needs is cut into
  // units of peak_busy / map_unit_divisor, clamped to [map_unit_min,
  // map_unit_max]: small pools keep fine units, large pools (where 16 MiB is
  // a sliver) make fewer calls. A run of up to 1.5 units is one unit. The
  // floor is 4 MiB: with 16 MiB, pools under 1 GiB had units of 2-4 % of
  // themselves, and free pages pinned in partly used units put repeated and
  // scaled replays over 1.05 (vision_mix stopped at 50 %, five passes:
  // 1.0531); 4 MiB holds every replay of the grid, costs more units while a
  // small pool grows and fewer once it repeats (docs/benchmarks.md,
  // session 6, "the unit floor").
  std::uint64_t map_unit_min = 4 * kMiB;
  std::uint64_t map_unit_max = 1 * kGiB;
  std::uint64_t map_unit_divisor = 64;
  // Growth of small blocks (<= map_ahead_max / 8) at the end of mapped memory
  // maps up to this many idle bytes after the block, in one unit with the
  // block's last pages, when the retention budget has room.
  std::uint64_t map_ahead_max = 64 * kMiB;
  // Virtual mode: small blocks (<= 8 KiB) are served from per-thread caches
  // without the pool lock (alloc/thread_cache.hpp); false sends every call
  // through the lock (for comparison).
  bool thread_cache = true;
  // Medium blocks (8 KiB – 2 MiB) through the same caches, their sizes rounded
  // up to four classes per power of two: WhenContended turns this on the
  // first time an allocation or free has found the pool lock held 64 times
  // (one thread alone never does, so its sizes and footprint stay exact;
  // statistics or trims from another thread can count); Always and Never
  // are for tests and comparison. Needs thread_cache; sizes whose class
  // reaches huge_threshold are never cached.
  enum class MediumCache { Never, WhenContended, Always };
  MediumCache medium_cache = MediumCache::WhenContended;
  // The region this pool serves (memd/engine.hpp, Engine::create_region);
  // empty for a device's default pool. Only named in messages.
  std::string region;
};

// The unit of PoolPolicy::Throughput: larger than any run a pool maps.
inline constexpr std::uint64_t kThroughputUnit = 64 * kGiB;

// The options with the policy applied (what the pool runs with).
PoolOptions apply_policy(PoolOptions options) noexcept;

}  // namespace memd
