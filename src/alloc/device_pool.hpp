// alloc/device_pool.hpp — the allocator of one (device, memory type).
//
// Two modes:
//   * Virtual (default where the backend supports it): one reserved address
//     range the size of the device; physical pages are mapped on demand and
//     unmapped when free pages exceed the retention budget, so the bytes held
//     from the device follow the live bytes without moving anything. Small
//     requests go to slabs, the rest to TLSF. Where good fit would need pages
//     mapped, placement looks for the free block that needs fewest (usually
//     a mapped hole elsewhere), since each map costs tens of microseconds.
//     The last freed TLSF block (>= 16 KiB) is kept whole for an immediate
//     re-allocation of its size (returned to TLSF before anything else).
//   * Segments: whole segments from the backend (cudaMalloc, cudaHostAlloc,
//     mmap) carved by the same TLSF; for memory without virtual memory and for
//     comparison.
//
// Retention budget: mapped bytes may reach max(busy + retain_min,
// peak_busy * (1 + retain_fraction)), where busy = bytes of pages live blocks
// touch. Below the historical peak nothing is unmapped, so steady workloads
// never pay for mapping; at the peak the slack is bounded, so peak footprint
// stays within a few percent of peak live.
//
// Stream-ordered reuse: deallocate(ptr, stream) makes the block reusable at
// once by allocations on the same stream; it returns to the shared free
// structures (for every stream) only after an event recorded on that stream
// after the free has completed. Events are recorded per batch of frees, not
// per free, so the fast path records none.
//
// Thread safety: all methods are thread-safe. Small blocks (<= 8 KiB, the
// slab classes) go through a per-thread cache of free slots and a lock-free
// table of which slots the user holds (core/live_slots.hpp), so a double free
// is still refused by the call that makes it; a thread takes the pool lock
// only once per half a cache bin. Everything else takes the pool's spin lock
// (with backoff; backend calls that map memory happen under it, which is rare
// by design). Statistics, trim and snapshots first take every cached slot
// back; validate() freezes the caches and checks them exactly. Counts are
// exact at every statistics call; the peaks of allocated bytes and live
// blocks see cached operations when a cache is folded in (exact for one
// thread, an estimate when threads free each other's blocks). A thread whose
// thread-local state is being destroyed uses the pool lock for everything.
// Once the pool lock is contended, medium blocks (8 KiB – 2 MiB) are cached
// per thread as well, tracked by a lock-free table (core/live_blocks.hpp) so
// their double frees are refused at once too (PoolOptions::medium_cache).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "alloc/pool_stats.hpp"
#include "backends/backend.hpp"
#include "memd/error.hpp"
#include "memd/size.hpp"

namespace memd {

enum class PoolMode { Virtual, Segments };

struct PoolOptions {
  DeviceId device = DeviceId::host(0);
  MemoryType memory_type = MemoryType::VRAM;
  PoolMode mode = PoolMode::Virtual;
  std::uint64_t capacity = 0;               // 0: the device's total bytes
  // Requests at least this get a range (Segments: a segment) of their own.
  // 0: 1 GiB in Segments mode, never in Virtual mode, where a huge block in
  // the arena lets its pages serve the next blocks of any size (own ranges
  // made synth_segmentation unmap and remap 1006 times, the arena 359).
  std::uint64_t huge_threshold = 0;
  // Slack above the peak of busy bytes. 0.03: same ratios as 0.02 on every
  // trace measured, 5–15% fewer units mapped (docs/benchmarks.md).
  double retain_fraction = 0.03;
  std::uint64_t retain_min_pages = 2;       // slack always allowed, in pages
  std::uint64_t segment_size = 32 * kMiB;   // Segments mode: growth unit
  std::uint64_t stream_batch = 64;          // frees per stream before an event is recorded
  // Virtual mode maps physical memory in units: a unit is one physical
  // allocation (one backend map() call maps a run of them), and only whole
  // units are unmapped. On CUDA a unit costs ~44 us to map and ~35 us to
  // unmap whatever its size up to 256 MiB (cuMemSetAccess and cuMemUnmap
  // dominate; bench/vmm_calls.cpp), so fewer, larger units are faster; but a
  // unit that later holds one live block among free pages cannot go back, so
  // larger units raise the footprint (vision_mix: 1.0070 at 16 MiB, 1.0355 at
  // 32 MiB, 1.0924 uncapped). The run of pages a block needs is cut into
  // units of peak_busy / map_unit_divisor, clamped to [map_unit_min,
  // map_unit_max]: small pools keep fine units, large pools (where 16 MiB is
  // a sliver) make fewer calls. A run of up to 1.5 units is one unit.
  std::uint64_t map_unit_min = 16 * kMiB;
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
};

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

class DevicePool {
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
  // pending stream frees first. Returns bytes given back to the device.
  std::uint64_t trim();
  std::vector<SegmentInfo> snapshot() const;
  Result<void> validate() const;

  const PoolOptions& options() const noexcept;
  Backend& backend() noexcept;

 private:
  DevicePool();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memd
