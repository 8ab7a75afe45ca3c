// Page occupancy for on-demand mapping; see page_map.hpp.
#include "core/page_map.hpp"

#include <algorithm>
#include <bit>

namespace memd {

PageMap::PageMap(std::uint64_t base, std::uint64_t size, std::uint64_t page)
    : base_(base), size_(size), page_(page) {
  std::size_t pages = static_cast<std::size_t>(size / page);
  live_.assign(pages, 0);
  mapped_bits_.assign((pages + 63) / 64, 0);
  free_bits_.assign((pages + 63) / 64, 0);
}

void PageMap::acquire(std::uint64_t offset, std::uint64_t len, std::vector<PageRun>& to_map) {
  std::uint64_t rel = offset - base_;
  std::size_t first = static_cast<std::size_t>(rel / page_);
  std::size_t last = static_cast<std::size_t>((rel + len - 1) / page_);
  for (std::size_t p = first; p <= last; ++p) {
    std::uint64_t page_start = p * page_;
    std::uint64_t lo = std::max(rel, page_start);
    std::uint64_t hi = std::min(rel + len, page_start + page_);
    if (live_[p] == 0) {
      ++busy_pages_;
      if (mapped(p)) {
        ++mapped_busy_pages_;
        set_bit(free_bits_, p, false);
      } else if (!to_map.empty() && to_map.back().offset + to_map.back().size == base_ + page_start) {
        to_map.back().size += page_;
      } else {
        to_map.push_back({base_ + page_start, page_});
      }
    }
    live_[p] += hi - lo;
    live_total_ += hi - lo;
  }
}

void PageMap::release(std::uint64_t offset, std::uint64_t len) {
  std::uint64_t rel = offset - base_;
  std::size_t first = static_cast<std::size_t>(rel / page_);
  std::size_t last = static_cast<std::size_t>((rel + len - 1) / page_);
  for (std::size_t p = first; p <= last; ++p) {
    std::uint64_t page_start = p * page_;
    std::uint64_t lo = std::max(rel, page_start);
    std::uint64_t hi = std::min(rel + len, page_start + page_);
    live_[p] -= hi - lo;
    live_total_ -= hi - lo;
    if (live_[p] == 0) {
      --busy_pages_;
      if (mapped(p)) {
        --mapped_busy_pages_;
        set_bit(free_bits_, p, true);
      }
    }
  }
}

void PageMap::mark_mapped(const PageRun& run) {
  for (std::uint64_t o = run.offset; o < run.offset + run.size; o += page_) {
    auto p = static_cast<std::size_t>((o - base_) / page_);
    if (mapped(p)) continue;
    set_bit(mapped_bits_, p, true);
    ++mapped_pages_;
    if (live_[p] == 0) set_bit(free_bits_, p, true);
    else ++mapped_busy_pages_;
  }
}

void PageMap::mark_unmapped(const PageRun& run) {
  for (std::uint64_t o = run.offset; o < run.offset + run.size; o += page_) {
    auto p = static_cast<std::size_t>((o - base_) / page_);
    if (!mapped(p)) continue;
    set_bit(mapped_bits_, p, false);
    set_bit(free_bits_, p, false);
    --mapped_pages_;
    if (live_[p] != 0) --mapped_busy_pages_;  // caller broke the contract; validate() reports it
  }
}

void PageMap::collect_free(std::uint64_t max_bytes, std::vector<PageRun>& out) const {
  std::uint64_t taken = 0;
  for (std::size_t w = free_bits_.size(); w-- > 0 && taken + page_ <= max_bytes;) {
    std::uint64_t bits = free_bits_[w];
    while (bits != 0 && taken + page_ <= max_bytes) {
      int b = 63 - std::countl_zero(bits);
      bits &= ~(std::uint64_t{1} << b);
      std::uint64_t off = base_ + (w * 64 + static_cast<std::size_t>(b)) * page_;
      if (!out.empty() && out.back().offset == off + page_) {
        out.back().offset = off;
        out.back().size += page_;
      } else {
        out.push_back({off, page_});
      }
      taken += page_;
    }
  }
}

bool PageMap::is_mapped(std::uint64_t offset) const {
  if (offset < base_ || offset >= base_ + size_) return false;
  return mapped(static_cast<std::size_t>((offset - base_) / page_));
}

Result<void> PageMap::validate() const {
  std::uint64_t m = 0, busy = 0, mbusy = 0, total = 0;
  for (std::size_t p = 0; p < live_.size(); ++p) {
    total += live_[p];
    bool is_m = mapped(p);
    bool is_f = (free_bits_[p / 64] >> (p % 64)) & 1u;
    if (live_[p] > page_) return fail(ErrorCode::internal, "pagemap: page {} over-full", p);
    if (live_[p] != 0 && !is_m) return fail(ErrorCode::internal, "pagemap: live page {} not mapped", p);
    if (is_f != (is_m && live_[p] == 0)) return fail(ErrorCode::internal, "pagemap: free bit wrong at {}", p);
    m += is_m;
    busy += live_[p] != 0;
    mbusy += is_m && live_[p] != 0;
  }
  if (m != mapped_pages_ || busy != busy_pages_ || mbusy != mapped_busy_pages_ || total != live_total_)
    return fail(ErrorCode::internal, "pagemap: counters disagree");
  return {};
}

}  // namespace memd
