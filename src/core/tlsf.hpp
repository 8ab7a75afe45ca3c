// core/tlsf.hpp — O(1) good-fit allocator over offsets (Two-Level Segregated Fit).
//
// Manages one or more disjoint regions of an offset space (in memd: device
// addresses inside reserved ranges or segments). Free blocks sit in 2-level
// segregated lists (a power-of-two class, then 32 linear subclasses), found
// with two bit scans. Blocks split on allocation and coalesce with free
// neighbours immediately on free, so no two free blocks are ever adjacent.
//
// Placement is "good fit": first a short scan of the request's own list for a
// block that fits (best fit where it is cheap), then the first block of the
// next list up, which is guaranteed to fit. That keeps worst-case work O(1)
// while filling holes instead of cutting into the large tail block, which is
// what keeps the footprint close to the live bytes.
//
// All sizes and offsets are multiples of `unit` (256 by default, CUDA's
// allocation alignment). Nothing here touches memory.
//
// Thread safety: none; the owning pool serialises access.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "core/flat_map.hpp"
#include "memd/error.hpp"

namespace memd {

struct TlsfBlock {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  friend bool operator==(const TlsfBlock&, const TlsfBlock&) = default;
};

struct TlsfFreed {
  std::uint64_t size = 0;  // size of the block that was freed
  TlsfBlock merged;        // the free block it became part of
};

class Tlsf {
 public:
  explicit Tlsf(std::uint64_t unit = 256);

  // Adds [offset, offset + size) as free space. Must not overlap a region.
  Result<void> add_region(std::uint64_t offset, std::uint64_t size);
  // Removes the region starting at offset if it is entirely free.
  bool remove_region(std::uint64_t offset);

  // A block of at least `size` bytes (rounded up to the unit) whose offset is
  // a multiple of `alignment` (a power of two; 0 = unit). nullopt when no free
  // block fits.
  std::optional<TlsfBlock> allocate(std::uint64_t size, std::uint64_t alignment = 0);
  // Placement chosen by the caller, for policies TLSF cannot see (the pool's
  // "which pages are mapped"). for_each_free calls f(handle, offset, size)
  // for every free block of at least min_size bytes, largest lists last;
  // f returns false to stop. allocate_in carves [at, at + size) out of the
  // free block `handle` (valid until the next mutation); at must be a
  // multiple of the unit and the range must lie inside that block.
  template <typename F>
  void for_each_free(std::uint64_t min_size, F&& f) const {
    if (fl_bitmap_ == 0) return;
    const Index first = mapping(std::max<std::uint64_t>(1, (min_size + unit_ - 1) >> unit_shift_));
    // Non-empty lists only, through the bitmaps: walking every list head
    // from a small request's class to the arena's top block was most of a
    // placement search's cost.
    for (std::uint64_t fls = fl_bitmap_ & (~std::uint64_t{0} << first.fl); fls != 0; fls &= fls - 1) {
      const int fl = std::countr_zero(fls);
      std::uint32_t sls = sl_bitmap_[static_cast<std::size_t>(fl)];
      if (fl == first.fl) sls = first.sl < kSlCount ? sls & (~std::uint32_t{0} << first.sl) : 0;
      for (; sls != 0; sls &= sls - 1) {
        const int sl = std::countr_zero(sls);
        for (std::uint32_t i = heads_[fl][sl]; i != kNone; i = nodes_[i].next_free)
          if (nodes_[i].size >= min_size && !f(i, nodes_[i].offset, nodes_[i].size)) return;
      }
    }
  }
  std::optional<TlsfBlock> allocate_in(std::uint32_t handle, std::uint64_t at, std::uint64_t size);
  // Carves [at, at + size) (size rounded up to the unit) when that range lies
  // inside one free block; nullopt otherwise. Walks the region's blocks:
  // for rare callers (defragmentation places blocks where its plan says),
  // never for the allocation path.
  std::optional<TlsfBlock> allocate_at(std::uint64_t at, std::uint64_t size);

  // Frees the allocated block starting at offset: its size and the free block
  // it became part of after coalescing; nullopt if no block is allocated there.
  std::optional<TlsfFreed> free(std::uint64_t offset);
  // Like free(), unless the block is at least keep_min bytes: then it stays
  // allocated and `kept` is set to its size (0 otherwise). One lookup either
  // way; the pool keeps its last large block this way.
  std::optional<TlsfFreed> free_below(std::uint64_t offset, std::uint64_t keep_min, std::uint64_t& kept);
  // Size of the allocated block at offset, if any.
  std::optional<std::uint64_t> allocated_size(std::uint64_t offset) const;
  // The free block containing offset, if offset lies in free space.
  std::optional<TlsfBlock> free_block_at(std::uint64_t offset) const;

  std::uint64_t unit() const noexcept { return unit_; }
  std::uint64_t free_bytes() const noexcept { return free_bytes_; }
  std::uint64_t used_bytes() const noexcept { return used_bytes_; }
  std::size_t allocated_blocks() const noexcept { return used_.size(); }
  std::size_t free_blocks() const noexcept { return free_count_; }
  std::uint64_t largest_free() const;
  const std::map<std::uint64_t, std::uint64_t>& regions() const noexcept { return regions_; }

  // Calls f(offset, size, is_free) for every block, in address order.
  template <typename F>
  void for_each_block(F&& f) const {
    for (const auto& [offset, size] : regions_) {
      (void)size;
      for (std::uint32_t i = region_head(offset); i != kNone; i = nodes_[i].next_phys)
        f(nodes_[i].offset, nodes_[i].size, nodes_[i].free);
    }
  }

  // Checks every invariant: physical chains tile each region, no adjacent free
  // blocks, list membership and bitmaps agree, counters match.
  Result<void> validate() const;

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;
  static constexpr int kSlLog2 = 5;
  static constexpr int kSlCount = 1 << kSlLog2;
  static constexpr int kFlCount = 50;
  static constexpr int kScanLimit = 8;  // blocks examined in the request's own list

  struct Node {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    std::uint32_t prev_phys = kNone, next_phys = kNone;
    std::uint32_t prev_free = kNone, next_free = kNone;
    bool free = false;
  };

  struct Index {
    int fl = 0, sl = 0;
  };

  Index mapping(std::uint64_t units) const noexcept;
  std::uint32_t new_node();
  void delete_node(std::uint32_t i);
  void insert_free(std::uint32_t i);
  void remove_free(std::uint32_t i);
  std::uint32_t find_at_least(Index idx) const noexcept;
  std::uint32_t region_head(std::uint64_t offset) const;
  // Takes [at, at + bytes) out of the free block `chosen` (already checked to
  // contain it); the padding before and the tail after stay free.
  TlsfBlock carve(std::uint32_t chosen, std::uint64_t at, std::uint64_t bytes);

  std::uint64_t unit_;
  int unit_shift_;
  std::vector<Node> nodes_;
  std::vector<std::uint32_t> spare_nodes_;
  std::uint64_t fl_bitmap_ = 0;
  std::array<std::uint32_t, kFlCount> sl_bitmap_{};
  std::array<std::array<std::uint32_t, kSlCount>, kFlCount> heads_;
  FlatMap used_;        // offset of an allocated block → node
  FlatMap region_heads_;  // region offset → first node
  std::map<std::uint64_t, std::uint64_t> regions_;  // offset → size
  std::uint64_t free_bytes_ = 0;
  std::uint64_t used_bytes_ = 0;
  std::size_t free_count_ = 0;
};

}  // namespace memd
