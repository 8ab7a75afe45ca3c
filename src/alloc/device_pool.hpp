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
#include "memd/sleep_report.hpp"

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

  // ----- sleep and wake (pool_sleep.cpp) -----
  // A sleeping pool keeps its addresses and its blocks' bookkeeping but no
  // device memory: sleep() takes thread caches back, waits for pending
  // stream-ordered frees, then copies every mapped unit (arena units and
  // live huge ranges) into ONE pinned host buffer (backend allocate of cpu
  // SharedMemory) with a content hash per unit (core/content_hash.hpp) —
  // or drops the contents when !keep_contents — and unmaps the units. The
  // page map still calls them mapped, and the footprint is frozen, so no
  // trim or budget unmaps them again. wake() checks every unit's hash over
  // the host copy FIRST (a mismatch: internal naming the unit, and the pool
  // stays asleep with its copy), maps each unit again at its offset with its
  // size (whole-unit unmaps keep working), copies back, synchronizes and
  // frees the host buffer. Dropped contents wake as fresh memory (zeros on
  // host devices, undefined on CUDA).
  //
  // The caller stops the device work that uses the pool before sleep() (the
  // pool synchronizes only its own copy stream and the streams it saw frees
  // on) and keeps it stopped until wake() returns. While asleep:
  // allocations are unavailable; frees are bookkeeping only; trim, stats
  // and validate work (stats count no reserved bytes for the slept units);
  // defragmentation is refused. sleep() of a sleeping pool and wake() of an
  // awake one: conflict. Segment pools cannot sleep: unavailable.
  Result<SleepReport> sleep(bool keep_contents);
  Result<WakeReport> wake();
  bool asleep() const noexcept { return asleep_.load(std::memory_order_acquire); }
  // Device bytes given back by the sleep in effect (0 when awake).
  std::uint64_t asleep_bytes() const noexcept { return asleep_bytes_.load(std::memory_order_acquire); }
  // Tests only: flips the bits of one byte of the host copy (at `byte`
  // modulo its size), so wake() must find the mismatch. false when there is
  // no host copy.
  bool corrupt_host_copy_for_testing(std::uint64_t byte);

  const PoolOptions& options() const noexcept { return opt_; }
  Backend& backend() noexcept { return backend_; }

 private:
  // Sleep and wake (pool_sleep.cpp).
  struct SleptUnit {
    VirtualRange range;            // the arena's range, or a huge block's
    std::uint64_t offset = 0;      // in the range
    std::uint64_t bytes = 0;       // one mapping unit
    std::uint64_t host_offset = 0; // in the host copy
    std::uint64_t hash = 0;        // of the host copy, at sleep
  };
  struct SleepState {
    bool kept = false;
    Segment host;  // ptr null when the contents were dropped, or nothing was mapped
    std::vector<SleptUnit> units;
    std::uint64_t bytes = 0;
  };
  Error asleep_error() const;
  std::string describe() const;
  // Maps units [0, n) again and, with a host copy, copies them back.
  Result<void> restore_units(SleepState& state, std::size_t n);

  // range: the reserved range of a virtual pool (its arena takes it over);
  // none for a segment pool.
  DevicePool(Backend& backend, const PoolOptions& options, std::uint64_t page, std::optional<VirtualRange> range);
  std::unique_ptr<Arena> make_arena(std::optional<VirtualRange> range);

  // Routing (device_pool.cpp).
  Result<std::uint64_t> allocate_any(std::uint64_t size);
  // drain: first give back stream-ordered frees whose event completed.
  Result<std::uint64_t> allocate_locked(std::uint64_t size, bool drain = true);
  Result<void> free_locked(std::uint64_t address);
  // free_tracked_locked's spans_seen when the slot lookup must be redone.
  static constexpr std::uint64_t kRecheckSlot = ~std::uint64_t{0};
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
  // Sleep: asleep_ is read on the allocation paths (one relaxed load); the
  // state is guarded by sleep_mu_, which serializes sleep and wake.
  std::atomic<bool> asleep_{false};
  std::atomic<std::uint64_t> asleep_bytes_{0};
  std::mutex sleep_mu_;
  SleepState sleep_;
};

}  // namespace memd
