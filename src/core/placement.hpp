// core/placement.hpp — where a block goes when good fit would need mapping.
//
// The pool's allocator (TLSF) places blocks by size alone; on a device whose
// physical pages are mapped on demand, the same request can cost nothing (a
// mapped hole) or several driver calls (unmapped pages, tens of microseconds
// each on CUDA). When good fit picks unmapped pages, the pool asks this
// search for a better spot: fewest pages to map first, then the spot that
// pins the fewest bytes of wholly free mapping units (a unit can only be
// unmapped whole, so one live block in a free unit keeps all of it), then
// the smaller free block (best fit), then the lower address.
//
// Measured on exact host replay counts: the fewest-pages search cut the
// units vision_mix maps and unmaps under good fit alone, and the pinning
// tie-break cut them again and lowered its ratio (docs/benchmarks.md,
// "Policy changes, chosen on exact counts").
//
// Offset-only: nothing here maps anything. Thread safety: none; the owning
// pool serialises access.
#pragma once

#include <cstdint>
#include <optional>

#include "core/page_map.hpp"
#include "core/tlsf.hpp"

namespace memd {

// Carves out of `tlsf` a block of `bytes` (a multiple of tlsf.unit()) aligned
// to `alignment`, at the best spot by the order above; nullopt when no free
// block fits. Candidates per free block: its aligned start and end, and each
// mapped stretch inside it, start- and end-aligned. The scan looks at about
// kPlacementScanBudget free blocks, closest size classes first (a pool with
// many holes must not scan them all on every growth), and stops at the first
// position that needs no map and pins no free unit (lists are visited from
// the closest size class up, so that is a close fit already; counts over 28
// traces were the same as when it waited for an exact fit, and vision_mix
// replayed faster: docs/benchmarks.md, "CPU cost of the page map, placement
// and live slots").
inline constexpr std::size_t kPlacementScanBudget = 1024;
// Units pinned: PageMap::free_unit_bytes.
std::optional<TlsfBlock> place_over_mapped(Tlsf& tlsf, const PageMap& pages, std::uint64_t bytes,
                                           std::uint64_t alignment);

}  // namespace memd
