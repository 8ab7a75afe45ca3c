// alloc/retention.hpp — how much memory a pool may hold, and in what units it
// maps it: pure functions of the pool's counts and options, unit-tested
// without a pool.
//
// The retention budget: mapped bytes may reach
//   max(busy + retain_min_pages pages, peak_busy * (1 + retain_fraction)),
// where busy = bytes of the pages live blocks touch (plus huge ranges in
// use) and peak_busy its running peak. Below the historical peak nothing has
// to be unmapped, so a steady workload never pays for mapping; at the peak
// the slack is bounded, so peak footprint stays within a few percent of peak
// live.
//
// Mapping units: on CUDA one unit is one physical allocation and costs about
// the same to map whatever its size, so runs are cut into units of
// peak_busy / map_unit_divisor, clamped to [map_unit_min, map_unit_max]:
// small pools keep fine units, large pools make fewer calls. Once the layout
// fragments (a trim could not make room), units halve down to
// fragmented_unit_min, because a unit holding one live block among free
// pages cannot go back. Measurements behind each constant:
// docs/benchmarks.md ("Policy changes, chosen on exact counts", "Footprint
// on traces not tuned for: scaled vision_mix", "Retention").
//
// Thread safety: pure functions and a plain struct; the pool guards its
// RetentionState with its lock.
#pragma once

#include <cstdint>

#include "alloc/pool_options.hpp"

namespace memd::retention {

// What the budget remembers between calls.
struct RetentionState {
  std::uint64_t peak_busy = 0;
  unsigned unit_halvings = 0;  // times a trim fell short (see unit_bytes)
};

std::uint64_t round_up(std::uint64_t value, std::uint64_t to) noexcept;

// Bytes the pool may hold with `busy` bytes busy now.
std::uint64_t allowed(const PoolOptions& options, std::uint64_t page, std::uint64_t busy,
                      std::uint64_t peak_busy) noexcept;

// Within 2 % of the peak below the budget a trim is near, and a block that
// lands in a wholly free unit would keep that unit from going back.
bool near_trim(std::uint64_t reserved, std::uint64_t peak_busy, std::uint64_t allowed) noexcept;

// What a trim releases beyond the shortfall, so the next allocations do not
// trim again: 1 % of the peak, whole pages.
std::uint64_t trim_hysteresis(std::uint64_t peak_busy, std::uint64_t page) noexcept;

// Floor of units once the layout fragments: 8 MiB, or map_unit_min when
// lower, whole pages.
inline constexpr std::uint64_t kFragmentedUnitMin = 8 * kMiB;
std::uint64_t fragmented_unit_min(const PoolOptions& options, std::uint64_t page) noexcept;

// The mapping unit now, whole pages, at least one.
std::uint64_t unit_bytes(const PoolOptions& options, std::uint64_t page, const RetentionState& state) noexcept;

// The unit a run of `run_bytes` is mapped in: 0 (the whole run is one unit)
// for runs up to 1.5 units, else `unit`.
std::uint64_t run_unit(std::uint64_t run_bytes, std::uint64_t unit) noexcept;

// Whether a block of `size` growing the mapped memory may map idle pages
// after itself (small blocks only: at most map_ahead_max / 8).
bool maps_ahead(const PoolOptions& options, std::uint64_t page, std::uint64_t size) noexcept;

// Bytes that may be mapped ahead of a growing block: what the budget leaves
// (`allowed` - `used`), at most retain_fraction of the busy bytes (below an
// old peak the budget allows more, but the footprint should follow the live
// bytes there) and map_ahead_max.
std::uint64_t ahead_room(const PoolOptions& options, std::uint64_t allowed, std::uint64_t used,
                         std::uint64_t busy) noexcept;

}  // namespace memd::retention
