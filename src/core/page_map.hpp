// core/page_map.hpp — which pages of a reserved range are mapped, and which
// of them live blocks need.
//
// Each page (the backend's mapping granularity, 2 MiB on CUDA) carries the
// count of live bytes on it. Pages a block covers entirely (its interior) can
// hold no other block, so they are tracked as one bit each and updated a
// 64-page word at a time: a 1 GiB block costs a few word operations, not 512
// counter updates. A page must be mapped while any live byte is on
// it; a mapped page with none is "free mapped": slack the pool may keep for
// reuse or unmap. The pool asks for the runs to map before handing out a
// block and for free-mapped runs (highest addresses first, so memory stays
// packed low) when it trims. Runs let one backend call cover many pages.
//
// Mapped pages come in units, one physical allocation each (the backend can
// only unmap a unit whole), kept as a bit at each unit's first page: a unit
// runs from its bit to the next bit or the next unmapped page. Placement asks
// how many bytes of wholly free units a spot would pin for every position it
// considers, so this is word operations, not a search tree (a std::map of
// units was a large share of placement's instructions on vision_mix;
// docs/benchmarks.md, "CPU cost of the page map, placement and live slots").
//
// Offset-only: nothing here maps anything.
//
// Thread safety: none; the owning pool serialises access.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "memd/error.hpp"

namespace memd {

struct PageRun {
  std::uint64_t offset = 0;  // absolute, page-aligned
  std::uint64_t size = 0;    // a multiple of the page size
  friend bool operator==(const PageRun&, const PageRun&) = default;
};

class PageMap {
 public:
  PageMap(std::uint64_t base, std::uint64_t size, std::uint64_t page);

  // [offset, offset + len) becomes live; appends the runs of its pages that
  // are not mapped yet (the caller maps them, then calls mark_mapped).
  void acquire(std::uint64_t offset, std::uint64_t len, std::vector<PageRun>& to_map);
  // [offset, offset + len) is no longer live. Must match an earlier acquire
  // exactly (a block is released whole), since interior pages are kept as bits.
  void release(std::uint64_t offset, std::uint64_t len);

  // The run is now mapped as one unit.
  void mark_mapped(const PageRun& run);
  // Every page must be free mapped, and the run whole units.
  void mark_unmapped(const PageRun& run);
  // Free-mapped runs totalling at most max_bytes, highest addresses first.
  void collect_free(std::uint64_t max_bytes, std::vector<PageRun>& out) const;
  bool is_mapped(std::uint64_t offset) const;
  // Pages touched by [offset, offset + len) that are not mapped: what placing
  // a block there would cost in new mappings.
  std::uint64_t unmapped_pages(std::uint64_t offset, std::uint64_t len) const;
  // Pages from offset (page-aligned) on, at most max_pages, that are neither
  // mapped nor touched by a live block: room to map ahead of growth.
  std::uint64_t idle_unmapped_pages(std::uint64_t offset, std::uint64_t max_pages) const;
  // Bytes of units, wholly free now, that a block at [offset, offset + len)
  // would pin (one live block keeps a whole unit from going back).
  std::uint64_t free_unit_bytes(std::uint64_t offset, std::uint64_t len) const;
  // Calls f(offset, size) for each unit that overlaps [lo, hi), whole, in
  // address order.
  template <typename F>
  void for_each_unit(std::uint64_t lo, std::uint64_t hi, F&& f) const {
    if (hi <= lo || hi <= base_ || lo >= base_ + size_) return;
    const std::size_t last = std::min(mapped_end_, page_ceil(hi));
    for (std::size_t p = first_unit_at(page_floor(lo)); p < last; p = next_unit(unit_end(p))) {
      const std::size_t q = unit_end(p);
      f(base_ + p * page_, (q - p) * page_);
    }
  }
  // Calls f(offset, size) for each maximal run of mapped pages that overlaps
  // [lo, hi), clipped to it, in address order.
  template <typename F>
  void for_each_mapped_run(std::uint64_t lo, std::uint64_t hi, F&& f) const {
    if (hi <= lo) return;
    std::size_t p = static_cast<std::size_t>((std::max(lo, base_) - base_) / page_);
    // Nothing is mapped at or past mapped_end_: a free block reaching to the
    // top of a 140 GiB arena costs a walk of the mapped part only (walking
    // the whole range was most of what placement cost on CUDA;
    // docs/benchmarks.md, "Placement costs less; the exact-size keep from
    // 16 KiB").
    const std::size_t end = std::min(
        mapped_end_, static_cast<std::size_t>((std::min(hi, base_ + size_) - base_ + page_ - 1) / page_));
    while (p < end) {
      // Skip unmapped pages a word at a time.
      std::uint64_t w = mapped_bits_[p / 64] >> (p % 64);
      if (w == 0) {
        p = (p / 64 + 1) * 64;
        continue;
      }
      p += static_cast<std::size_t>(std::countr_zero(w));
      if (p >= end) break;
      std::size_t q = p;
      while (q < end) {
        std::uint64_t m = ~(mapped_bits_[q / 64] >> (q % 64));
        if (m == 0) {
          q = (q / 64 + 1) * 64;
          continue;
        }
        q += static_cast<std::size_t>(std::countr_zero(m));
        break;
      }
      q = std::min(q, end);
      std::uint64_t a = std::max(lo, base_ + p * page_), b = std::min(hi, base_ + q * page_);
      f(a, b - a);
      p = q;
    }
  }

  std::uint64_t page_size() const noexcept { return page_; }
  std::uint64_t base() const noexcept { return base_; }
  std::uint64_t size() const noexcept { return size_; }
  std::uint64_t mapped_bytes() const noexcept { return mapped_pages_ * page_; }
  std::uint64_t busy_bytes() const noexcept { return busy_pages_ * page_; }
  std::uint64_t free_mapped_bytes() const noexcept { return (mapped_pages_ - mapped_busy_pages_) * page_; }
  std::uint64_t live_bytes() const noexcept { return live_total_; }

  Result<void> validate() const;

 private:
  bool mapped(std::size_t p) const noexcept { return (mapped_bits_[p / 64] >> (p % 64)) & 1u; }
  std::size_t page_floor(std::uint64_t offset) const noexcept {
    return static_cast<std::size_t>((std::max(offset, base_) - base_) / page_);
  }
  std::size_t page_ceil(std::uint64_t offset) const noexcept {
    return static_cast<std::size_t>((std::min(offset, base_ + size_) - base_ + page_ - 1) / page_);
  }
  // Units: the start of the unit holding page p, or the first unit start
  // after p when p is unmapped; the page past the unit that starts at p; the
  // first unit start at or after p (mapped_end_ when none).
  std::size_t first_unit_at(std::size_t p) const noexcept;
  std::size_t unit_end(std::size_t p) const noexcept;
  std::size_t next_unit(std::size_t p) const noexcept;
  void set_bit(std::vector<std::uint64_t>& v, std::size_t p, bool on) noexcept {
    if (on) v[p / 64] |= std::uint64_t{1} << (p % 64);
    else v[p / 64] &= ~(std::uint64_t{1} << (p % 64));
  }

  std::uint64_t base_, size_, page_;
  // Applies f(word, mask) to the words of pages [first, last).
  template <typename F>
  static void for_words(std::size_t first, std::size_t last, F&& f) {
    while (first < last) {
      std::size_t w = first / 64, lo = first % 64;
      std::size_t n = std::min<std::size_t>(64 - lo, last - first);
      std::uint64_t mask = (n == 64 ? ~std::uint64_t{0} : ((std::uint64_t{1} << n) - 1)) << lo;
      f(w, mask);
      first += n;
    }
  }
  void add_partial(std::size_t p, std::uint64_t bytes, std::vector<PageRun>* to_map);
  void remove_partial(std::size_t p, std::uint64_t bytes);
  void append_run(std::vector<PageRun>& runs, std::size_t p, std::size_t count) const;
  bool busy(std::size_t p) const noexcept {
    return live_[p] != 0 || ((full_bits_[p / 64] >> (p % 64)) & 1u);
  }

  std::vector<std::uint64_t> live_;         // live bytes per page from blocks that cover it partly
  std::vector<std::uint64_t> full_bits_;    // page lies inside one block entirely
  std::vector<std::uint64_t> mapped_bits_;  // page is mapped
  std::vector<std::uint64_t> free_bits_;    // page is mapped and has no live byte
  std::vector<std::uint64_t> unit_bits_;    // a unit (one backend allocation) starts at this page
  std::uint64_t mapped_pages_ = 0;
  std::size_t mapped_end_ = 0;           // one past the highest mapped page (0: none)
  std::uint64_t busy_pages_ = 0;         // pages with live bytes
  std::uint64_t mapped_busy_pages_ = 0;  // mapped pages with live bytes
  std::uint64_t live_total_ = 0;
};

}  // namespace memd
