// The retention budget and mapping units; see retention.hpp.
#include "alloc/retention.hpp"

#include <algorithm>

namespace memd::retention {

std::uint64_t round_up(std::uint64_t value, std::uint64_t to) noexcept { return (value + to - 1) / to * to; }

std::uint64_t allowed(const PoolOptions& options, std::uint64_t page, std::uint64_t busy,
                      std::uint64_t peak_busy) noexcept {
  const auto slack = static_cast<std::uint64_t>(static_cast<double>(peak_busy) * options.retain_fraction);
  return std::max(busy + options.retain_min_pages * page, peak_busy + round_up(slack, page));
}

// 2 %: it lowered the worst ratio of the scaled vision_mix traces (sizes
// x0.5..x2), and of the margins tried only 1 and 2 % kept the reference
// traces' ratios (docs/benchmarks.md, "Footprint on traces not tuned for:
// scaled vision_mix" and "Retention").
bool near_trim(std::uint64_t reserved, std::uint64_t peak_busy, std::uint64_t allowed) noexcept {
  return reserved + peak_busy / 50 > allowed;
}

std::uint64_t trim_hysteresis(std::uint64_t peak_busy, std::uint64_t page) noexcept {
  return round_up(peak_busy / 100, page);
}

std::uint64_t fragmented_unit_min(const PoolOptions& options, std::uint64_t page) noexcept {
  return std::max<std::uint64_t>(1, std::min(kFragmentedUnitMin, options.map_unit_min) / page) * page;
}

std::uint64_t unit_bytes(const PoolOptions& options, std::uint64_t page, const RetentionState& state) noexcept {
  const std::uint64_t lo = options.map_unit_min, hi = std::max(options.map_unit_min, options.map_unit_max);
  const std::uint64_t want =
      std::clamp(state.peak_busy / std::max<std::uint64_t>(1, options.map_unit_divisor), lo, hi);
  if (state.unit_halvings == 0) return std::max<std::uint64_t>(1, want / page) * page;
  return std::max(fragmented_unit_min(options, page), (want >> std::min(state.unit_halvings, 63u)) / page * page);
}

// A 22 MiB block at 16 MiB units was a 16 + 6 MiB pair; as one unit,
// llama_generate mapped fewer units and no ratio moved (docs/benchmarks.md,
// "Fewer units: map-ahead joins the block's unit").
std::uint64_t run_unit(std::uint64_t run_bytes, std::uint64_t unit) noexcept {
  return run_bytes <= unit + unit / 2 ? 0 : unit;
}

bool maps_ahead(const PoolOptions& options, std::uint64_t page, std::uint64_t size) noexcept {
  return options.map_ahead_max >= page && size <= options.map_ahead_max / 8;
}

std::uint64_t ahead_room(const PoolOptions& options, std::uint64_t allowed, std::uint64_t used,
                         std::uint64_t busy) noexcept {
  if (allowed <= used) return 0;
  const auto share = static_cast<std::uint64_t>(static_cast<double>(busy) * options.retain_fraction);
  return std::min({allowed - used, share, options.map_ahead_max});
}

}  // namespace memd::retention
