// alloc/thread_cache.hpp — one thread's cache of small slots for one pool.
//
// Why: every pool operation under one lock made two threads on one pool
// slower in total than one (host, 2 cores: 14.9 M ops/s with one thread,
// 8.8 M with two), because the pool's lines bounce between cores on every
// call. Small blocks (slab classes, <= 8 KiB) are the most frequent requests
// of inference frameworks; a thread keeps a few free slots of each class and
// serves them without the pool lock, going to the pool once per batch.
//
// Bounded: a class keeps at most kBinBytes of slots (and kMaxPerBin), so a
// thread holds at most 32 × 64 KiB = 2 MiB of slots it does not use, all in
// slab spans that are mapped anyway. Refills and flushes move half a bin.
//
// Medium blocks (8 KiB < size <= 2 MiB, TLSF blocks) are cached too, but only
// once the pool has found its lock contended (DevicePool turns it on): their
// sizes round up to four classes per power of two, which costs up to 25 % of
// a block, and a cached block holds pages, so a single thread (every trace
// replay) keeps the exact sizes and footprint it had. A medium block is never
// refilled ahead (it is large: only frees fill these bins).
//
// Medium bounds. A class keeps kMediumBinBytes of blocks, at least
// kMediumMinPerBin and at most kMaxPerBin (small classes hold more blocks,
// as the slab bins do: a burst of 10 KiB frees flushes once per 16 frees,
// not once per 2). A thread keeps at most medium_limit bytes in all: it
// starts at kMediumBytes and doubles, up to kMediumBytesMax, only when the
// limit is what makes the thread miss — kGrowAfter misses, within
// kGrowWindow medium allocations, of classes the limit flushed since their
// last miss. Why: the 512 B – 2 MiB thread benchmark keeps 8 blocks a thread
// and needs ~21 MiB of bins to stop missing (one or two blocks of each of
// the 32 classes); at 16 MiB it missed on 2.8 % of medium allocations and
// flushed on 2.5 % of frees, each through the pool lock (~3.5 % of all
// operations), with ~100 ns (one thread) to ~650 ns (two) of lock hold
// each: the likely cap of 8 threads at ~29 M ops/s on a 16-core host. At
// 32 MiB misses fell to 0.009 % of medium allocations (mostly first uses). A thread whose blocks fit
// (or that never reuses what the limit flushed) stays at 16 MiB. Every drain
// (statistics, trim, thread exit) empties the bins and resets the limit.
//
// The cache is a plain container (alloc/thread_caches.hpp keeps one per
// thread and pool); DevicePool owns the protocol (locks,
// liveness bits, statistics). Its lock is taken by the owning thread on every
// operation (uncontended: the line stays in that core) and by the pool when it
// drains caches for statistics, trim and validation; lock order is registry
// → cache → pool, never the reverse.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>

#include "core/slab.hpp"
#include "core/spin_lock.hpp"
#include "memd/error.hpp"

namespace memd {

struct ThreadCache;

// The pool a cache belongs to, as the cache registry sees it.
class CacheOwner {
 public:
  // Cache lock held: takes everything the cache holds back (the owning
  // thread is exiting).
  virtual void take_back(ThreadCache& cache) = 0;

 protected:
  ~CacheOwner() = default;
};

struct ThreadCache {
  static constexpr std::uint32_t kMaxPerBin = 32;
  static constexpr std::uint64_t kBinBytes = 64 * 1024;

  static constexpr int class_of(std::uint64_t size) noexcept {
    return static_cast<int>(SlabAllocator::class_size(size) / SlabAllocator::kClassStep) - 1;
  }
  static constexpr std::uint64_t slot_bytes(int cls) noexcept {
    return static_cast<std::uint64_t>(cls + 1) * SlabAllocator::kClassStep;
  }
  static constexpr std::uint32_t capacity(int cls) noexcept { return kCapacities[static_cast<std::size_t>(cls)]; }
  // kBinBytes of each class, within [2, kMaxPerBin]: a table, since every
  // small free asks and a 64-bit division costs more than the rest of it.
  static constexpr std::array<std::uint32_t, SlabAllocator::kClassCount> kCapacities = [] {
    std::array<std::uint32_t, SlabAllocator::kClassCount> a{};
    for (int c = 0; c < SlabAllocator::kClassCount; ++c)
      a[static_cast<std::size_t>(c)] = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(
          kBinBytes / (static_cast<std::uint64_t>(c + 1) * SlabAllocator::kClassStep), 2, kMaxPerBin));
    return a;
  }();

  struct Bin {
    std::uint32_t count = 0;
    std::array<std::uint64_t, kMaxPerBin> slots{};
  };

  static constexpr std::uint64_t kMediumMax = 2 * 1024 * 1024;
  static constexpr int kMediumClasses = 32;  // (8 KiB, 2 MiB], four per power of two
  static constexpr std::uint64_t kMediumBinBytes = 512 * 1024;
  static constexpr std::uint32_t kMediumMinPerBin = 4;
  static constexpr std::uint64_t kMediumBytes = 16 * 1024 * 1024;     // a thread's limit at first
  static constexpr std::uint64_t kMediumBytesMax = 32 * 1024 * 1024;  // ... and at most
  static constexpr std::uint32_t kGrowAfter = 8;
  static constexpr std::uint32_t kGrowWindow = 1024;
  static constexpr bool is_medium(std::uint64_t size) noexcept {
    return size > SlabAllocator::kMaxSize && size <= kMediumMax;
  }
  // Class of a medium size: with size in (2^p, 2^(p+1)], the quarter steps
  // of 2^p above 2^p; a class size maps to its own class.
  // (Shifts, not divisions: a 64-bit divide on every cached call showed in
  // profiles of the free path.)
  static constexpr int medium_class(std::uint64_t size) noexcept {
    const int p = 63 - std::countl_zero(size - 1);
    const std::uint64_t step = std::uint64_t{1} << (p - 2);
    const auto k = static_cast<int>((size - (std::uint64_t{1} << p) + step - 1) >> (p - 2));
    return (p - 13) * 4 + k - 1;
  }
  static constexpr std::uint64_t medium_bytes(int cls) noexcept {
    return kMediumSizes[static_cast<std::size_t>(cls)];
  }
  static constexpr std::array<std::uint64_t, kMediumClasses> kMediumSizes = [] {
    std::array<std::uint64_t, kMediumClasses> a{};
    for (int c = 0; c < kMediumClasses; ++c) {
      const std::uint64_t base = std::uint64_t{1} << (13 + c / 4);
      a[static_cast<std::size_t>(c)] = base + static_cast<std::uint64_t>(c % 4 + 1) * (base / 4);
    }
    return a;
  }();
  static constexpr std::uint32_t medium_capacity(int cls) noexcept {
    return kMediumCapacities[static_cast<std::size_t>(cls)];
  }
  struct MediumBin {
    std::uint32_t count = 0;
    std::array<std::uint64_t, kMaxPerBin> blocks{};
  };
  // kMediumBinBytes of each class, within [kMediumMinPerBin, kMaxPerBin]
  // (a table, as kCapacities).
  static constexpr std::array<std::uint32_t, kMediumClasses> kMediumCapacities = [] {
    std::array<std::uint32_t, kMediumClasses> a{};
    for (int c = 0; c < kMediumClasses; ++c)
      a[static_cast<std::size_t>(c)] = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(
          kMediumBinBytes / kMediumSizes[static_cast<std::size_t>(c)], kMediumMinPerBin, kMaxPerBin));
    return a;
  }();

  SpinLock mu;
  CacheOwner* owner = nullptr;  // the pool while it lives; null once it is gone
  bool exited = false;          // the owning thread ended; the pool forgets this cache
  std::array<Bin, SlabAllocator::kClassCount> bins{};
  std::array<MediumBin, kMediumClasses> medium{};
  std::uint64_t medium_cached = 0;  // bytes in the medium bins
  std::uint64_t medium_limit = kMediumBytes;
  std::uint32_t limit_flushed = 0;  // a bit per medium class the limit flushed since its last miss
  std::uint32_t limit_misses = 0;   // misses of such classes in this window
  std::uint32_t window = 0;         // medium allocations in this window
  // Operations served from the cache since the pool last folded them in.
  std::int64_t allocated_delta = 0;  // bytes given to the user minus bytes returned
  std::int64_t live_delta = 0;
  std::int64_t allocated_high = 0, live_high = 0;  // highest deltas since the last fold (for the peaks)
  std::uint64_t allocs = 0, frees = 0;

  // A block of `bytes` served from a bin / taken into one (the counts the
  // pool folds in later).
  void count_allocate(std::uint64_t bytes) noexcept {
    allocated_delta += static_cast<std::int64_t>(bytes);
    ++live_delta;
    ++allocs;
    allocated_high = std::max(allocated_high, allocated_delta);
    live_high = std::max(live_high, live_delta);
  }
  void count_free(std::uint64_t bytes) noexcept {
    allocated_delta -= static_cast<std::int64_t>(bytes);
    --live_delta;
    ++frees;
  }

  static constexpr std::uint32_t class_bit(int cls) noexcept { return std::uint32_t{1} << cls; }

  // The limit's bookkeeping (the pool calls these; the cache lock held).
  // A medium allocation served from a bin.
  void note_medium_hit() noexcept {
    if (++window == kGrowWindow) window = limit_misses = 0;
  }
  // A miss of class `cls` (its bin and the one it may borrow from, `next`,
  // empty). Returns true when it doubled the limit.
  bool note_medium_miss(int cls, int next) noexcept {
    note_medium_hit();
    const std::uint32_t bits = class_bit(cls) | class_bit(next);
    if ((limit_flushed & bits) == 0) return false;
    limit_flushed &= ~bits;
    if (medium_limit >= kMediumBytesMax || ++limit_misses < kGrowAfter) return false;
    medium_limit = std::min(medium_limit * 2, kMediumBytesMax);
    limit_misses = 0;
    return true;
  }
  // The limit flushed the bin of `cls`.
  void note_limit_flush(int cls) noexcept { limit_flushed |= class_bit(cls); }
  // Bins emptied by a drain: the limit starts over.
  void reset_medium_limit() noexcept {
    medium_limit = kMediumBytes;
    limit_flushed = limit_misses = window = 0;
  }

  // Cache lock held: the bounds above hold, and medium_cached counts the
  // medium bins (which blocks they hold is the pool's to check).
  Result<void> validate() const {
    std::uint64_t medium_sum = 0;
    for (int c = 0; c < kMediumClasses; ++c) {
      const auto n = medium[static_cast<std::size_t>(c)].count;
      if (n > medium_capacity(c))
        return fail(ErrorCode::internal, "thread cache: medium bin {} holds {} of at most {}", c, n, medium_capacity(c));
      medium_sum += n * medium_bytes(c);
    }
    for (int c = 0; c < SlabAllocator::kClassCount; ++c)
      if (bins[static_cast<std::size_t>(c)].count > capacity(c))
        return fail(ErrorCode::internal, "thread cache: bin {} holds {} of at most {}", c,
                    bins[static_cast<std::size_t>(c)].count, capacity(c));
    if (medium_sum != medium_cached)
      return fail(ErrorCode::internal, "thread cache: counts {} medium bytes, its bins hold {}", medium_cached,
                  medium_sum);
    if (medium_limit < kMediumBytes || medium_limit > kMediumBytesMax || medium_cached > medium_limit)
      return fail(ErrorCode::internal, "thread cache: {} medium bytes, limit {} (bounds {} - {})", medium_cached,
                  medium_limit, kMediumBytes, kMediumBytesMax);
    if (limit_misses >= kGrowAfter || window >= kGrowWindow)
      return fail(ErrorCode::internal, "thread cache: {} limit misses in a window at {}", limit_misses, window);
    return {};
  }

  std::uint64_t cached_bytes() const noexcept {
    std::uint64_t b = 0;
    for (int c = 0; c < SlabAllocator::kClassCount; ++c) b += bins[c].count * slot_bytes(c);
    return b + medium_cached;
  }
};

static_assert(ThreadCache::medium_class(SlabAllocator::kMaxSize + 1) == 0);
static_assert(ThreadCache::medium_class(ThreadCache::kMediumMax) == ThreadCache::kMediumClasses - 1);
static_assert(ThreadCache::medium_bytes(ThreadCache::kMediumClasses - 1) == ThreadCache::kMediumMax);
static_assert(ThreadCache::medium_class(ThreadCache::medium_bytes(13)) == 13);
static_assert(ThreadCache::kMediumClasses <= 32, "limit_flushed has a bit per medium class");
static_assert(ThreadCache::medium_capacity(0) == ThreadCache::kMaxPerBin);
static_assert(ThreadCache::medium_capacity(ThreadCache::kMediumClasses - 1) == ThreadCache::kMediumMinPerBin);
static_assert(ThreadCache::medium_capacity(9) == ThreadCache::kMediumBinBytes / ThreadCache::medium_bytes(9));

}  // namespace memd
