// alloc/block_allocator.hpp — which structure serves a block of a given size.
//
// Small requests (<= 8 KiB) are slab slots (core/slab.hpp) in 64 KiB spans
// that are themselves arena blocks; requests at or above huge_threshold get
// a range of their own (alloc/huge_blocks.hpp); everything else is a TLSF
// block of the arena (alloc/arena.hpp), rounded to 256 bytes. Frees look the
// address up in the same order. The budget (alloc/footprint.hpp) sees every
// byte the three hold.
//
// Slab spans opening and closing are reported to the live-slot table when
// the pool has thread caches (core/live_slots.hpp), and counted, so a free
// that missed a slot without the pool lock knows whether to look again.
//
// Thread safety: none; used under the pool lock (spans_opened() may be read
// without it).
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>

#include "alloc/arena.hpp"
#include "alloc/footprint.hpp"
#include "alloc/huge_blocks.hpp"
#include "alloc/pool_options.hpp"
#include "core/live_slots.hpp"
#include "core/slab.hpp"
#include "memd/error.hpp"

namespace memd {

class BlockAllocator {
 public:
  // live_slots: null when the pool has no thread caches.
  BlockAllocator(const PoolOptions& options, std::uint64_t page, Arena& arena, HugeBlocks& huge,
                 Footprint& footprint, LiveSlots* live_slots) noexcept
      : options_(options), page_(page), arena_(arena), huge_(huge), footprint_(footprint), live_slots_(live_slots) {}

  // Bytes the block serving `size` will have.
  std::uint64_t block_bytes_for(std::uint64_t size) const noexcept;
  // A block for `size` > 0 and its bytes.
  Result<std::uint64_t> allocate(std::uint64_t size, std::uint64_t& block_bytes);
  // Frees the live block at `address` (no stream semantics): its bytes,
  // nullopt (nothing changed) when `address` starts no live block. One
  // lookup per structure, in the order sizes are most common.
  std::optional<std::uint64_t> release(std::uint64_t address);
  // Bytes of the live block at `address`; nullopt if none.
  std::optional<std::uint64_t> live_size(std::uint64_t address) const;
  // Returns an empty slab span to the arena.
  void drop_span(std::uint64_t span);

  SlabAllocator& slab() noexcept { return slab_; }
  const SlabAllocator& slab() const noexcept { return slab_; }
  // Spans opened so far: written under the pool lock, read without it.
  std::uint64_t spans_opened() const noexcept { return spans_opened_.load(std::memory_order_acquire); }
  // Bytes of blocks users hold in the three structures (slots, TLSF blocks
  // that are not spans, huge ranges).
  std::uint64_t block_bytes() const noexcept;
  // Every span is a live arena block of span size.
  Result<void> validate() const;

 private:
  const PoolOptions& options_;
  const std::uint64_t page_;
  Arena& arena_;
  HugeBlocks& huge_;
  Footprint& footprint_;
  LiveSlots* const live_slots_;
  SlabAllocator slab_;
  std::atomic<std::uint64_t> spans_opened_{0};
};

}  // namespace memd
