// alloc/device_pool.hpp — the allocator of one (device, memory type).
//
// A facade that routes each call to the piece that serves it:
//   * small blocks (<= 8 KiB, the slab classes) through this thread's cache
//     (alloc/thread_caches.hpp) without the pool lock; a lock-free table of
//     which slots the user holds (core/live_slots.hpp) refuses a double free
//     in the call that makes it; the pool lock is taken once per half a bin;
//   * medium blocks (8 KiB - 2 MiB) the same way once the pool lock is
//     contended (PoolOptions::medium_cache; core/live_blocks.hpp tracks them);
//   * everything else under the pool's spin lock: the block allocator
//     (alloc/block_allocator.hpp: slabs, arena blocks, huge ranges) over an
//     arena (alloc/arena.hpp: virtual memory mapped on demand, or segments),
//     within the retention budget (alloc/footprint.hpp, alloc/retention.hpp);
//   * stream-ordered frees and reuse (alloc/stream_reuse.hpp).
// Statistics, trim, snapshots and validate are in pool_inspection.cpp.
//
// Out of memory is returned once, never retried inside the pool: the reclaim
// ladder (alloc/reclaim_ladder.hpp) trims and asks again. trim() gives back
// everything a retry could use: thread caches, pending stream frees, cached
// huge ranges, free pages, empty segments.
//
// Thread safety: all methods are thread-safe. Backend calls that map memory
// happen under the pool lock, which is rare by design. Statistics, trim and
// snapshots first take every cached block back; validate() freezes the
// caches and checks them exactly. Counts are exact at every statistics call;
// the peaks of allocated bytes and live blocks see cached operations when a
// cache is folded in (exact for one thread, an estimate when threads free
// each other's blocks). A thread whose thread-local state is being destroyed
// uses the pool lock for everything.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "alloc/arena.hpp"
#include "alloc/block_allocator.hpp"
#include "alloc/footprint.hpp"
#include "alloc/huge_blocks.hpp"
#include "alloc/pool_options.hpp"
#include "alloc/pool_stats.hpp"
#include "alloc/stream_reuse.hpp"
#include "alloc/thread_caches.hpp"
#include "backends/backend.hpp"
#include "core/defrag_plan.hpp"
#include "core/live_blocks.hpp"
#include "core/live_slots.hpp"
#include "core/spin_lock.hpp"
#include "memd/error.hpp"
#include "memd/size.hpp"

namespace memd {

struct BlockInfo {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  std::string state;  // "allocated", "free", "pending" (stream-ordered), "slab"
};

struct SegmentInfo {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  std::uint64_t mapped_bytes = 0;
  std::string kind;  // "arena", "huge", "segment"
  std::vector<BlockInfo> blocks;
};

class DevicePool final : private CacheOwner {
 public:
  static Result<std::unique_ptr<DevicePool>> create(Backend& backend, const PoolOptions& options);
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // size > 0. Returned memory is aligned to 256 bytes.
  Result<void*> allocate(std::uint64_t size);
  Result<void*> allocate(std::uint64_t size, const Stream& stream);
  // Unknown pointer or double free: invalid_argument, and nothing changes.
  Result<void> deallocate(void* ptr);
  Result<void> deallocate(void* ptr, const Stream& stream);

  // Bytes of the live block at ptr (its start), if any.
  std::optional<std::uint64_t> block_size(const void* ptr) const;

  PoolStats stats() const;
  // The counts kept as the pool runs (allocated, peaks, totals, device and
  // mapping calls, reserved), without draining thread caches or walking free
  // space: cheap and free of side effects, so a replay can read it between
  // passes without changing what follows. Derived fields (free bytes,
  // largest free block, fragmentation, footprint_ratio) are left 0; counts
  // still sitting in thread caches are not included.
  PoolStats counters() const;
  // Physical bytes held now; cheap (for replay and the limit ladder).
  std::uint64_t reserved_bytes() const;
  // Releases every free page, cached huge range and empty segment; waits for
  // pending stream frees and takes every thread cache back first. Returns
  // bytes given back to the device.
  std::uint64_t trim();
  // What trim() would give back now, and what it would leave free (see
  // TrimForecast); takes thread caches back and flushes the kept block, as
  // stats() does, and changes nothing else.
  TrimForecast trim_forecast() const;
  std::vector<SegmentInfo> snapshot() const;
  Result<void> validate() const;

  // ----- defragmentation (pool_relocation.cpp; transfer/defragmenter.hpp) -----
  // The pool as core/defrag_plan sees it: TLSF regions, mapping units (a
  // virtual pool) and every live arena block, all immovable (block key = its
  // address; the caller marks the ones it may move). Thread caches are taken
  // back and the kept block flushed first, so cached blocks count as free.
  // Huge ranges are not in the arena and never move.
  DefragSpace defrag_space();
  // A block at exactly [address, address + bytes) for a relocation: free,
  // mapped, counted as allocated. conflict when the range is not free
  // mapped memory (the plan is stale).
  Result<void*> reserve_at(std::uint64_t address, std::uint64_t bytes);
  // A slide lands: the gap block (reserve_at of [target, old)) and the old
  // block go, and the block of `bytes` at target is carved, in one step
  // under the pool lock, so nobody can take the range in between.
  Result<void> settle_slide(void* gap, void* old_block, void* target, std::uint64_t bytes);
  // Moves the live block at old_block, which owns whole mapping units, to
  // target (free, unmapped pages) by remapping its units: no copy. Virtual
  // pools only (unavailable otherwise); conflict when the layout changed.
  Result<void> remap_block(void* old_block, void* target);

  const PoolOptions& options() const noexcept { return opt_; }
  Backend& backend() noexcept { return backend_; }

 private:
  // range: the reserved range of a virtual pool (its arena takes it over);
  // none for a segment pool.
  DevicePool(Backend& backend, const PoolOptions& options, std::uint64_t page, std::optional<VirtualRange> range);
  std::unique_ptr<Arena> make_arena(std::optional<VirtualRange> range);

  // Routing (device_pool.cpp).
  Result<std::uint64_t> allocate_any(std::uint64_t size);
  // drain: first give back stream-ordered frees whose event completed.
  Result<std::uint64_t> allocate_locked(std::uint64_t size, bool drain = true);
  Result<void> free_locked(std::uint64_t address);
  Result<void> free_tracked_locked(std::uint64_t address, std::uint64_t spans_seen);
  Result<std::uint64_t> allocate_on(std::uint64_t size, const Stream& stream);
  Result<void> free_on(std::uint64_t address, const Stream& stream);
  Result<void> refuse_double_free(std::uint64_t address) const;
  void note_peaks();
  void count_allocation(std::uint64_t bytes);
  void count_free(std::uint64_t bytes);
  // release: free the block now (else leave it for stream-ordered reuse).
  Result<std::uint64_t> freeable(std::uint64_t address, bool release);
  std::unique_lock<SpinLock> lock_pool();

  // The thread-cache protocol (pool_thread_paths.cpp).
  Result<std::uint64_t> cached_allocate(std::uint64_t size);
  Result<void> cached_free(std::uint64_t address, const LiveSlots::Slot& slot);
  Result<std::uint64_t> cached_medium_allocate(std::uint64_t size);
  Result<void> cached_medium_free(std::uint64_t address, LiveBlocks::Entry e);
  Result<std::uint64_t> uncached_small_allocate(std::uint64_t size);
  Result<void> uncached_small_free(std::uint64_t address, const LiveSlots::Slot& slot);
  Result<std::uint64_t> refill(ThreadCache& c, std::uint64_t size);
  bool take_back(std::uint64_t address, const LiveSlots::Slot& slot);
  void take_back(ThreadCache& cache) override;  // CacheOwner: a thread exits
  void fold(ThreadCache& c);
  void absorb(ThreadCache& c);
  void flush_bin(ThreadCache& c, int cls, std::uint32_t keep);
  void flush_medium(ThreadCache& c, int cls, std::uint32_t keep);
  std::uint64_t drain_caches();

  // Inspection (pool_inspection.cpp).
  void free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const;

  // Declaration order is construction order: the pieces refer to the ones
  // above them, and go in reverse (huge ranges before the arena's range).
  Backend& backend_;
  const PoolOptions opt_;
  const std::uint64_t page_;  // mapping granularity (virtual) or 2 MiB rounding (segments)
  mutable SpinLock mu_;
  PoolCounters counters_;  // under mu_
  std::unique_ptr<LiveSlots> live_slots_;    // virtual pools with thread caches
  std::unique_ptr<LiveBlocks> live_blocks_;  // ... and medium caching not Never
  std::unique_ptr<Arena> arena_;
  HugeBlocks huge_;
  Footprint footprint_;
  BlockAllocator blocks_;
  StreamReuse streams_;
  // Medium blocks go through the thread caches once the pool lock has been
  // found held kContendedToCache times (a single thread never turns it on,
  // so replays keep exact sizes).
  static constexpr std::uint32_t kContendedToCache = 64;
  std::atomic<bool> medium_caching_{false};
  std::atomic<std::uint32_t> contended_{0};
  ThreadCaches caches_;
};

}  // namespace memd
