// alloc/segment_arena.hpp — an arena of whole backend segments.
//
// For memory without virtual memory (pinned host, managed, or a device whose
// backend cannot reserve and map) and for comparison: each growth takes one
// segment of at least PoolOptions::segment_size from the backend
// (cudaMalloc, cudaHostAlloc, mmap) and adds it to the TLSF as a region;
// wholly empty segments go back on trim. Nothing is mapped on demand, so
// busy_bytes() is 0 and the budget only ever sees huge ranges.
//
// Out of memory (the capacity or the device) is returned, never retried
// here (alloc/reclaim_ladder.hpp).
//
// Thread safety: none; used under the pool lock.
#pragma once

#include <map>

#include "alloc/arena.hpp"
#include "alloc/pool_options.hpp"
#include "alloc/pool_stats.hpp"
#include "backends/backend.hpp"

namespace memd {

class SegmentArena final : public Arena {
 public:
  SegmentArena(Backend& backend, const PoolOptions& options, std::uint64_t page, PoolCounters& counters) noexcept
      : backend_(backend), options_(options), page_(page), counters_(counters) {}
  ~SegmentArena() override;

  Result<std::uint64_t> take(std::uint64_t size, std::uint64_t alignment, Footprint& footprint) override;
  std::optional<std::uint64_t> give_back(std::uint64_t address) override;
  std::optional<std::uint64_t> release(std::uint64_t address) override { return give_back(address); }
  std::optional<std::uint64_t> take_kept(std::uint64_t) override { return std::nullopt; }
  void flush_kept() override {}
  bool is_kept(std::uint64_t) const override { return false; }
  std::uint64_t kept_bytes() const override { return 0; }

  std::uint64_t held_bytes() const override { return segment_bytes_; }
  std::uint64_t busy_bytes() const override { return 0; }
  std::uint64_t release_free(std::uint64_t) override { return 0; }
  std::uint64_t release_empty() override;
  std::uint64_t releasable_bytes() const override;

  void free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const override;
  std::string region_kind() const override { return "segment"; }
  std::uint64_t region_backed_bytes(std::uint64_t region_size) const override { return region_size; }
  std::uint64_t regions_held() const override { return segments_.size(); }
  Result<void> validate() const override;
  Result<std::uint64_t> take_at(std::uint64_t address, std::uint64_t size) override;

 private:
  Backend& backend_;
  const PoolOptions& options_;
  const std::uint64_t page_;
  PoolCounters& counters_;
  std::map<std::uint64_t, Segment> segments_;  // base → segment
  std::uint64_t segment_bytes_ = 0;
};

}  // namespace memd
