// alloc/huge_blocks.hpp — requests at or above PoolOptions::huge_threshold,
// each in a range (or segment) of its own.
//
// A huge block gets its own reserved-and-mapped range (virtual memory) or
// its own backend segment, so freeing it can hand the whole thing back. A
// freed range is kept in a cache as slack — the retention budget
// (alloc/footprint.hpp) decides when it goes — and a later request of a size
// it fits without wasting more than an eighth is served from it with no
// backend call. By default only segment pools use huge blocks (1 GiB and up):
// in a virtual arena a huge block's pages serve the next blocks of any size
// once it is freed.
//
// Out of memory is returned, never retried here (alloc/reclaim_ladder.hpp).
//
// Thread safety: none; used under the pool lock.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "alloc/pool_options.hpp"
#include "alloc/pool_stats.hpp"
#include "backends/backend.hpp"
#include "memd/error.hpp"

namespace memd {

class Footprint;

class HugeBlocks {
 public:
  // virtual_memory: ranges from reserve + map, else segments from allocate.
  HugeBlocks(Backend& backend, const PoolOptions& options, bool virtual_memory, std::uint64_t page,
             PoolCounters& counters) noexcept
      : backend_(backend), options_(options), virtual_(virtual_memory), page_(page), counters_(counters) {}
  ~HugeBlocks();
  HugeBlocks(const HugeBlocks&) = delete;
  HugeBlocks& operator=(const HugeBlocks&) = delete;

  // A range of at least `size` bytes (whole pages): a cached one that fits,
  // else a new one, after giving slack back to stay within the budget.
  Result<std::uint64_t> take(std::uint64_t size, Footprint& footprint);
  // The live range at `address` goes to the cache; its bytes, nullopt if none.
  std::optional<std::uint64_t> release(std::uint64_t address);
  std::optional<std::uint64_t> live_size(std::uint64_t address) const;
  // Gives cached ranges back, largest first, until `bytes` went or none is
  // left; returns the bytes.
  std::uint64_t release_cache(std::uint64_t bytes);

  std::uint64_t live_bytes() const noexcept { return live_bytes_; }
  std::uint64_t cached_bytes() const noexcept { return cached_bytes_; }
  std::uint64_t largest_cached() const noexcept;
  std::uint64_t ranges() const noexcept { return live_.size() + cache_.size(); }
  template <typename F>  // f(address, size, live)
  void for_each(F&& f) const {
    for (const auto& [address, h] : live_) f(address, h.size, true);
    for (const auto& h : cache_) f(h.address(virtual_), h.size, false);
  }
  // Virtual memory: f(range, bytes) for every live range (one mapping unit
  // of `bytes` at its start), for a sleeping pool to unmap and map again.
  template <typename F>
  void for_each_live_range(F&& f) const {
    if (virtual_)
      for (const auto& [address, h] : live_) f(h.range, h.size);
  }
  Result<void> validate() const;

 private:
  struct Huge {
    VirtualRange range;  // virtual memory
    Segment segment;     // segments
    std::uint64_t size = 0;
    std::uint64_t address(bool virtual_memory) const noexcept {
      return virtual_memory ? range.base : reinterpret_cast<std::uint64_t>(segment.ptr);
    }
  };
  Result<Huge> create(std::uint64_t bytes);
  void destroy(const Huge& h);

  Backend& backend_;
  const PoolOptions& options_;
  const bool virtual_;
  const std::uint64_t page_;
  PoolCounters& counters_;
  std::unordered_map<std::uint64_t, Huge> live_;
  std::vector<Huge> cache_;
  std::uint64_t live_bytes_ = 0, cached_bytes_ = 0;
};

}  // namespace memd
