// transfer/defrag_report.hpp — what a defragmentation is asked, and answers.
//
// DefragOptions bound the work (passes, moves and bytes per pass) and pick
// the devices; DefragReport is what the API returns (bytes copied and
// remapped, moves, skips, time, and per pool fragmentation and reserved
// bytes before and after); DefragEvent is what the event hook hears.
//
// Thread safety: values.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/defrag_plan.hpp"
#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/memory_types.hpp"
#include "memd/size.hpp"

namespace memd {

struct DefragOptions {
  std::optional<DeviceId> device;  // none: every device
  // Bytes one pass relocates (copied and remapped alike); a block larger
  // than this never moves.
  std::uint64_t max_bytes_per_pass = 1 * kGiB;
  std::uint64_t max_moves_per_pass = 4096;
  std::uint64_t max_passes = 8;
  bool allow_remap = true;
  bool dry_run = false;  // plan only: nothing moves
};

// Bounds the protocol checks too (one place for both).
inline constexpr std::uint64_t kMaxDefragPasses = 1024;
inline constexpr std::uint64_t kMaxDefragMovesPerPass = 1'000'000;

// One pool (device and memory type), measured before and after.
struct DefragPoolReport {
  DeviceId device;
  MemoryType memory_type = MemoryType::Unknown;
  double fragmentation_before = 0, fragmentation_after = 0;
  std::uint64_t reserved_bytes_before = 0, reserved_bytes_after = 0;
  std::uint64_t free_bytes_before = 0, free_bytes_after = 0;
  std::uint64_t moves = 0;
  std::uint64_t bytes_moved = 0;     // copied (copies and slides)
  std::uint64_t bytes_remapped = 0;  // units remapped
};

// A move of the plan (dry run), with the pass it would run in.
struct DefragPlannedMove {
  AllocationId id;
  DeviceId device;
  MemoryType memory_type = MemoryType::Unknown;
  DefragMove move;
  std::uint64_t pass = 1;
};

struct DefragReport {
  bool dry_run = false;
  std::uint64_t bytes_moved = 0;     // copied
  std::uint64_t bytes_remapped = 0;  // remapped (units' bytes)
  std::uint64_t moves = 0;           // relocations done (remaps included)
  std::uint64_t remaps = 0;
  std::uint64_t skipped = 0;    // movable allocations left: held by a transfer or an import
  std::uint64_t abandoned = 0;  // planned moves given up: the layout changed meanwhile
  std::uint64_t passes = 0;
  std::chrono::nanoseconds duration{0};
  // Of duration: giving the emptied memory back to the device (the trims;
  // on CUDA, unmapping and releasing units). The rest is planning, copying,
  // remapping and switching.
  std::chrono::nanoseconds release_duration{0};
  // Of duration: taking each pass's picture of the pools and planning it
  // (the pools' caches drained, every live block listed). What remains is
  // the moving: copies, remaps and switches.
  std::chrono::nanoseconds plan_duration{0};
  // Of the moving: issuing copies and waiting for them on the stream
  // (copy_duration), and switching moved allocations over (switch_duration:
  // io locks, the registry, freeing the old blocks; remaps' map calls).
  // What is left of duration besides stats_duration: the stream, passes'
  // bookkeeping.
  std::chrono::nanoseconds copy_duration{0};
  std::chrono::nanoseconds switch_duration{0};
  // Of duration: the pools' statistics before and after (the report's
  // fragmentation and footprint figures).
  std::chrono::nanoseconds stats_duration{0};
  std::vector<DefragPoolReport> pools;
  std::vector<DefragPlannedMove> plan;  // dry run only
};

struct DefragEvent {
  enum class Kind : std::uint8_t { Started, Finished };
  Kind kind = Kind::Started;
  std::optional<DeviceId> device;  // as asked (none: every device)
  std::uint64_t planned_moves = 0;  // Started: the first pass's plan, all pools
  std::uint64_t planned_bytes = 0;
  DefragReport report;              // Finished
};

}  // namespace memd
