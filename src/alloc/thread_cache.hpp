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
// The cache is a plain container; DevicePool owns the protocol (locks,
// liveness bits, statistics). Its lock is taken by the owning thread on every
// operation (uncontended: the line stays in that core) and by the pool when it
// drains caches for statistics, trim and validation; lock order is registry
// → cache → pool, never the reverse.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "core/slab.hpp"
#include "core/spin_lock.hpp"

namespace memd {

struct ThreadCache {
  static constexpr std::uint32_t kMaxPerBin = 32;
  static constexpr std::uint64_t kBinBytes = 64 * 1024;

  static constexpr int class_of(std::uint64_t size) noexcept {
    return static_cast<int>(SlabAllocator::class_size(size) / SlabAllocator::kClassStep) - 1;
  }
  static constexpr std::uint64_t slot_bytes(int cls) noexcept {
    return static_cast<std::uint64_t>(cls + 1) * SlabAllocator::kClassStep;
  }
  static constexpr std::uint32_t capacity(int cls) noexcept {
    return static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(kBinBytes / slot_bytes(cls), 2, kMaxPerBin));
  }

  struct Bin {
    std::uint32_t count = 0;
    std::array<std::uint64_t, kMaxPerBin> slots{};
  };

  SpinLock mu;
  void* pool = nullptr;  // the pool's state while it lives; null once it is gone
  // Called (cache lock held) at thread exit to give everything back to the pool.
  void (*return_to_pool)(ThreadCache&) = nullptr;
  bool exited = false;   // the owning thread ended; the pool forgets this cache
  std::array<Bin, SlabAllocator::kClassCount> bins{};
  // Operations served from the cache since the pool last folded them in.
  std::int64_t allocated_delta = 0;  // bytes given to the user minus bytes returned
  std::int64_t live_delta = 0;
  std::int64_t allocated_high = 0, live_high = 0;  // highest deltas since the last fold (for the peaks)
  std::uint64_t allocs = 0, frees = 0;

  std::uint64_t cached_bytes() const noexcept {
    std::uint64_t b = 0;
    for (int c = 0; c < SlabAllocator::kClassCount; ++c) b += bins[c].count * slot_bytes(c);
    return b;
  }
};

}  // namespace memd
