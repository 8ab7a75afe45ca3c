// core/defrag_plan.hpp — where a compaction moves live blocks (offsets only).
//
// Defragmentation (issue 14, item 7) plans here and moves elsewhere
// (transfer/defragmenter.hpp). The input is a picture of one pool: its TLSF
// regions (the virtual arena's one reserved range, or a segment arena's
// segments), the mapping units that back a virtual range (whole pages,
// DevicePool's page map), and its live blocks, each movable or not (API
// allocations that are neither pinned, exportable nor held move; in-process
// blocks, slab spans and everything else are obstacles).
//
// What the plan optimises: the pool's reserved bytes and its fragmentation
// (1 − largest free run ÷ free bytes over MAPPED memory, pool_stats.hpp), and
// nothing can give memory back but a unit (or segment) with no live byte.
// So the plan packs live bytes toward the front of a compaction order:
//   * regions are ranked densest first (live bytes ÷ size; ties by address),
//     so the sparsest segments empty into holes of the densest — a virtual
//     pool has one region, and within it the order is the address: its page
//     map maps low pages first and trims from the top, so packing low is what
//     empties its (sparsest, highest) units;
//   * phase 1 takes movable blocks from the BACK of that order, each to the
//     first range before it that was free before any move and holds it (a
//     Copy). None of these lands where another move was, so the executor
//     batches them under one wait; and every-other-block-freed packs by
//     moving the back half into the front half's holes, half the bytes of
//     shifting every block down;
//   * phase 2 takes what is left from the FRONT, each to the FIRST free
//     mapped range before it that holds it (a Copy, now also into what
//     phase 1 freed); failing that, when the free range directly below it
//     in the same region is too small, the block slides down over it (a
//     Slide: source and target overlap, copied front to back in chunks no
//     larger than the distance);
//   * a block that owns whole units (it starts on a page, the units exactly
//     tile its pages and no other block touches them) and found no mapped
//     range may instead move its units to unmapped address space before it
//     (a Remap: per unit, no bytes copied). A mapped range wins when there is
//     one: filling memory that is held anyway is what lets units go back,
//     while a remap carries its units along.
// Copies and slides only land on mapped pages, so a plan never maps memory:
// the footprint never rises while it runs.
//
// Phase 2's moves may depend on the moves before them (a target is often
// what an earlier move freed): any prefix of a plan, run in order, is consistent, which is
// how the executor bounds a pass. apply_moves() replays a plan and checks every
// move (the plan's validate), trimmed() drops what became wholly free, so
// tests can predict fragmentation and footprint without a device.
//
// Cost: O(blocks × free ranges) in the worst case (first fit scans the
// ranges before each block); a pass is bounded by the executor's limits,
// the planning is not (thousands of blocks plan in milliseconds).
//
// Thread safety: pure functions over values.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "memd/error.hpp"

namespace memd {

struct DefragRange {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  friend bool operator==(const DefragRange&, const DefragRange&) = default;
};

struct DefragBlock {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;  // the block's bytes (what the allocator carved)
  bool movable = false;
  std::uint64_t key = 0;   // the caller's tag, echoed in moves
  friend bool operator==(const DefragBlock&, const DefragBlock&) = default;
};

struct DefragSpace {
  // Mapping granularity of a virtual range; 0 for segments, whose regions
  // are backed whole (units are then ignored).
  std::uint64_t page = 0;
  std::vector<DefragRange> regions;  // sorted by offset, disjoint
  std::vector<DefragRange> units;    // page > 0: mapped units, sorted, disjoint, inside regions
  std::vector<DefragBlock> blocks;   // live blocks, sorted by offset, disjoint, inside regions
};

enum class DefragMoveKind : std::uint8_t { Copy, Slide, Remap };
std::string_view to_string(DefragMoveKind kind) noexcept;

struct DefragMove {
  std::uint64_t key = 0;
  std::uint64_t from = 0;
  std::uint64_t to = 0;
  std::uint64_t size = 0;  // block bytes
  DefragMoveKind kind = DefragMoveKind::Copy;
  // Remap: the bytes of the units that move (the block's pages); else 0.
  std::uint64_t remap_bytes = 0;
  friend bool operator==(const DefragMove&, const DefragMove&) = default;
};

struct DefragPlan {
  std::vector<DefragMove> moves;
  std::uint64_t copy_bytes = 0;   // Copy and Slide
  std::uint64_t remap_bytes = 0;  // Remap (units' bytes)
};

struct DefragPlanOptions {
  bool allow_remap = true;
  // Blocks larger than this stay (a pass could never move them).
  std::uint64_t max_block_bytes = ~std::uint64_t{0};
  // A slide copies in chunks no larger than its distance; one needing more
  // chunks than this (a big block moved a few bytes) is not planned.
  std::uint64_t max_slide_chunks = 1024;
};

// Regions sorted and disjoint; units (page > 0) page-aligned, disjoint and
// inside regions; blocks disjoint, inside regions, and on mapped pages.
Result<void> validate(const DefragSpace& space);
Result<DefragPlan> plan_defrag(const DefragSpace& space, const DefragPlanOptions& options = {});
// The space after the moves, each checked: the block is where the move says,
// a Copy's or Slide's target is free (a Slide's overlapping only its own
// block) and mapped, a Remap's block owns whole units and its target pages
// are free and unmapped. Any failure names the move.
Result<DefragSpace> apply_moves(const DefragSpace& space, const std::vector<DefragMove>& moves);
// The space after a trim: units (or segments) with no live byte dropped.
DefragSpace trimmed(const DefragSpace& space);
// 1 − largest free run ÷ free bytes, over mapped memory (0 when none free):
// the pool statistic's definition.
double fragmentation(const DefragSpace& space);
// Bytes backed: the units' (page > 0) or the regions'.
std::uint64_t mapped_bytes(const DefragSpace& space);

}  // namespace memd
