// alloc/arena.hpp — what backs a pool's TLSF blocks with memory.
//
// A pool carves blocks with one TLSF over offsets (core/tlsf.hpp); the arena
// decides what those offsets are and makes them real. Two implementations,
// composed into the pool like RMM's upstream resources rather than chosen by
// branches:
//   * VirtualArena (alloc/virtual_arena.hpp): one reserved address range the
//     size of the device; physical pages mapped on demand and unmapped when
//     the retention budget (alloc/retention.hpp) asks for slack back.
//   * SegmentArena (alloc/segment_arena.hpp): whole segments from the backend
//     (cudaMalloc, cudaHostAlloc, mmap) added to the TLSF as regions.
//
// Out of memory is returned, never retried here: the reclaim ladder
// (alloc/reclaim_ladder.hpp) trims the pool and asks again.
//
// Thread safety: none; the pool calls an arena under its lock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <vector>

#include "core/defrag_plan.hpp"
#include "core/tlsf.hpp"
#include "memd/error.hpp"

namespace memd {

class Footprint;

class Arena {
 public:
  // TLSF granularity: every block is whole 256-byte units (and so aligned).
  static constexpr std::uint64_t kUnit = 256;

  virtual ~Arena() = default;

  Tlsf& blocks() noexcept { return tlsf_; }
  const Tlsf& blocks() const noexcept { return tlsf_; }

  // A TLSF block of at least `size` bytes at `alignment`, backed by memory.
  // May give slack back through `footprint` first to stay within its budget.
  virtual Result<std::uint64_t> take(std::uint64_t size, std::uint64_t alignment, Footprint& footprint) = 0;
  // Frees a TLSF block the pool carved for itself (a slab span): its bytes,
  // nullopt when `address` starts no live block.
  virtual std::optional<std::uint64_t> give_back(std::uint64_t address) = 0;
  // Frees a block a user held. An arena may keep the last such block whole
  // for an immediate re-allocation of its size (VirtualArena does); it then
  // counts as freed. Its bytes, nullopt when `address` starts no live block.
  virtual std::optional<std::uint64_t> release(std::uint64_t address) = 0;
  // The kept block, if `size` (whole units) is its size; any other size
  // returns the kept block to the free structures first.
  virtual std::optional<std::uint64_t> take_kept(std::uint64_t size) = 0;
  // Returns the kept block to the free structures (views, trims, budgets
  // see it freed).
  virtual void flush_kept() = 0;
  virtual bool is_kept(std::uint64_t address) const = 0;
  // Bytes of the kept block (0 when none).
  virtual std::uint64_t kept_bytes() const = 0;

  // Physical bytes held from the device for blocks (the arena's footprint).
  virtual std::uint64_t held_bytes() const = 0;
  // Bytes of the pages live blocks touch (0 where nothing is mapped on demand).
  virtual std::uint64_t busy_bytes() const = 0;
  // Gives back at least `bytes` of free memory if it can, from the top, in
  // whole mapping units; returns what it gave.
  virtual std::uint64_t release_free(std::uint64_t bytes) = 0;
  // Gives back every wholly empty segment; returns the bytes.
  virtual std::uint64_t release_empty() = 0;
  // What release_free(everything) and release_empty() would give back now,
  // changing nothing (the kept block must be flushed first): the dry run
  // behind the recommendations' predictions (monitor/recommendations.hpp).
  virtual std::uint64_t releasable_bytes() const = 0;

  // Free bytes that are backed by memory, and the largest run of them.
  virtual void free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const = 0;
  // "arena" or "segment", and the bytes backed in the region at `base`.
  virtual std::string region_kind() const = 0;
  virtual std::uint64_t region_backed_bytes(std::uint64_t region_size) const = 0;
  // Reserved ranges or segments held.
  virtual std::uint64_t regions_held() const = 0;
  // Defragmentation (transfer/defragmenter.hpp):
  // The mapping units backing the arena (virtual memory; none for segments,
  // which are backed whole), in address order.
  virtual void units(std::vector<DefragRange>& out) const { (void)out; }
  // Carves [address, address + size) when it lies in one free block on
  // mapped pages (conflict otherwise; never maps: a relocation must not
  // raise the footprint). The kept block is flushed first.
  virtual Result<std::uint64_t> take_at(std::uint64_t address, std::uint64_t size) = 0;
  // Moves the live block at `from`, which owns whole units, to `to`, whose
  // pages are free and unmapped, by remapping its units (Backend::remap).
  // Segments cannot: unavailable.
  virtual Result<void> move_units(std::uint64_t from, std::uint64_t to) {
    (void)from;
    (void)to;
    return fail(ErrorCode::unavailable, "a {} arena cannot move mappings", region_kind());
  }
  // TLSF, the page map and the arena's own counts agree.
  virtual Result<void> validate() const = 0;

 protected:
  Tlsf tlsf_{kUnit};
};

}  // namespace memd
