// Page occupancy for on-demand mapping; see page_map.hpp.
#include "core/page_map.hpp"

#include <algorithm>
#include <bit>

namespace memd {
namespace {

// Without -mpopcnt (the x86-64 baseline) std::popcount is a call into
// libgcc, which perf showed as a large share of a 1 GiB alloc+free pair
// (docs/benchmarks.md, "CPU cost of the page map, placement and live
// slots"). Full words, the common case inside large blocks, skip it.
std::uint64_t bits_in(std::uint64_t w) noexcept {
#if defined(__POPCNT__) || !(defined(__x86_64__) || defined(__i386__))
  return static_cast<std::uint64_t>(std::popcount(w));
#else
  if (w == ~std::uint64_t{0}) return 64;
  // SWAR count, inline: a handful of ALU operations instead of a call.
  w -= (w >> 1) & 0x5555555555555555ull;
  w = (w & 0x3333333333333333ull) + ((w >> 2) & 0x3333333333333333ull);
  w = (w + (w >> 4)) & 0x0F0F0F0F0F0F0F0Full;
  return (w * 0x0101010101010101ull) >> 56;
#endif
}

}  // namespace

PageMap::PageMap(std::uint64_t base, std::uint64_t size, std::uint64_t page)
    : base_(base), size_(size), page_(page) {
  std::size_t pages = static_cast<std::size_t>(size / page);
  live_.assign(pages, 0);
  full_bits_.assign((pages + 63) / 64, 0);
  mapped_bits_.assign((pages + 63) / 64, 0);
  free_bits_.assign((pages + 63) / 64, 0);
  unit_bits_.assign((pages + 63) / 64, 0);
}

void PageMap::append_run(std::vector<PageRun>& runs, std::size_t p, std::size_t count) const {
  std::uint64_t off = base_ + p * page_;
  if (!runs.empty() && runs.back().offset + runs.back().size == off) runs.back().size += count * page_;
  else runs.push_back({off, count * page_});
}

void PageMap::add_partial(std::size_t p, std::uint64_t bytes, std::vector<PageRun>* to_map) {
  if (!busy(p)) {
    ++busy_pages_;
    if (mapped(p)) {
      ++mapped_busy_pages_;
      set_bit(free_bits_, p, false);
    } else {
      append_run(*to_map, p, 1);
    }
  }
  live_[p] += bytes;
  live_total_ += bytes;
}

void PageMap::remove_partial(std::size_t p, std::uint64_t bytes) {
  live_[p] -= bytes;
  live_total_ -= bytes;
  if (!busy(p)) {
    --busy_pages_;
    if (mapped(p)) {
      --mapped_busy_pages_;
      set_bit(free_bits_, p, true);
    }
  }
}

void PageMap::acquire(std::uint64_t offset, std::uint64_t len, std::vector<PageRun>& to_map) {
  std::uint64_t rel = offset - base_, end = rel + len;
  std::size_t first = static_cast<std::size_t>(rel / page_);
  std::size_t last = static_cast<std::size_t>((end - 1) / page_);
  if (first == last) {
    add_partial(first, len, &to_map);
    return;
  }
  add_partial(first, (first + 1) * page_ - rel, &to_map);
  // Interior pages: free before (a block covers them alone now), so each is
  // either free mapped or unmapped.
  std::size_t unmapped_from = 0;
  bool in_gap = false;
  const std::uint64_t interior = last - first - 1;
  std::uint64_t interior_mapped = 0;
  for_words(first + 1, last, [&](std::size_t w, std::uint64_t mask) {
    std::uint64_t m = mapped_bits_[w] & mask;
    full_bits_[w] |= mask;
    free_bits_[w] &= ~mask;
    if (m == mask && !in_gap) {  // all mapped: the common case
      interior_mapped += bits_in(mask);
      return;
    }
    interior_mapped += bits_in(m);
    for (std::uint64_t bits = mask; bits != 0; bits &= bits - 1) {
      int b = std::countr_zero(bits);
      std::size_t p = w * 64 + static_cast<std::size_t>(b);
      bool is_mapped = (m >> b) & 1u;
      if (!is_mapped && !in_gap) {
        in_gap = true;
        unmapped_from = p;
      } else if (is_mapped && in_gap) {
        in_gap = false;
        append_run(to_map, unmapped_from, p - unmapped_from);
      }
    }
  });
  busy_pages_ += interior;
  mapped_busy_pages_ += interior_mapped;
  live_total_ += interior * page_;
  if (in_gap) append_run(to_map, unmapped_from, last - unmapped_from);
  add_partial(last, end - last * page_, &to_map);
}

void PageMap::release(std::uint64_t offset, std::uint64_t len) {
  std::uint64_t rel = offset - base_, end = rel + len;
  std::size_t first = static_cast<std::size_t>(rel / page_);
  std::size_t last = static_cast<std::size_t>((end - 1) / page_);
  if (first == last) {
    remove_partial(first, len);
    return;
  }
  remove_partial(first, (first + 1) * page_ - rel);
  const std::uint64_t interior = last - first - 1;
  std::uint64_t interior_mapped = 0;
  for_words(first + 1, last, [&](std::size_t w, std::uint64_t mask) {
    std::uint64_t m = mapped_bits_[w] & mask;
    full_bits_[w] &= ~mask;
    free_bits_[w] |= m;
    interior_mapped += bits_in(m);
  });
  busy_pages_ -= interior;
  mapped_busy_pages_ -= interior_mapped;
  live_total_ -= interior * page_;
  remove_partial(last, end - last * page_);
}

void PageMap::mark_mapped(const PageRun& run) {
  set_bit(unit_bits_, static_cast<std::size_t>((run.offset - base_) / page_), true);
  for (std::uint64_t o = run.offset; o < run.offset + run.size; o += page_) {
    auto p = static_cast<std::size_t>((o - base_) / page_);
    if (mapped(p)) continue;
    set_bit(mapped_bits_, p, true);
    ++mapped_pages_;
    mapped_end_ = std::max(mapped_end_, p + 1);
    if (!busy(p)) set_bit(free_bits_, p, true);
    else ++mapped_busy_pages_;
  }
}

void PageMap::mark_unmapped(const PageRun& run) {
  for (std::uint64_t o = run.offset; o < run.offset + run.size; o += page_) {
    auto p = static_cast<std::size_t>((o - base_) / page_);
    if (!mapped(p)) continue;
    set_bit(mapped_bits_, p, false);
    set_bit(free_bits_, p, false);
    set_bit(unit_bits_, p, false);
    --mapped_pages_;
    if (busy(p)) --mapped_busy_pages_;  // caller broke the contract; validate() reports it
  }
  // Lower the bound past the pages just unmapped (a word at a time).
  while (mapped_end_ > 0) {
    const std::size_t w = (mapped_end_ - 1) / 64;
    const std::size_t in_word = mapped_end_ - w * 64;  // bits of word w below mapped_end_
    const std::uint64_t below = in_word == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << in_word) - 1;
    const std::uint64_t bits = mapped_bits_[w] & below;
    if (bits != 0) {
      mapped_end_ = w * 64 + 64 - static_cast<std::size_t>(std::countl_zero(bits));
      break;
    }
    mapped_end_ = w * 64;
  }
}

void PageMap::collect_free(std::uint64_t max_bytes, std::vector<PageRun>& out) const {
  std::uint64_t taken = 0;
  for (std::size_t w = (mapped_end_ + 63) / 64; w-- > 0 && taken + page_ <= max_bytes;) {
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

std::uint64_t PageMap::unmapped_pages(std::uint64_t offset, std::uint64_t len) const {
  if (len == 0) return 0;
  const auto first = static_cast<std::size_t>((offset - base_) / page_);
  const auto last = static_cast<std::size_t>((offset + len - base_ + page_ - 1) / page_);
  std::uint64_t mapped_n = 0;
  for_words(first, last, [&](std::size_t w, std::uint64_t mask) { mapped_n += bits_in(mapped_bits_[w] & mask); });
  return (last - first) - mapped_n;
}

std::uint64_t PageMap::idle_unmapped_pages(std::uint64_t offset, std::uint64_t max_pages) const {
  if (offset < base_ || offset >= base_ + size_) return 0;
  auto p = static_cast<std::size_t>((offset - base_) / page_);
  std::uint64_t n = 0;
  while (n < max_pages && p < live_.size() && !mapped(p) && !busy(p)) ++n, ++p;
  return n;
}

std::size_t PageMap::next_unit(std::size_t p) const noexcept {
  while (p < mapped_end_) {
    const std::uint64_t w = unit_bits_[p / 64] >> (p % 64);
    if (w != 0) return std::min(mapped_end_, p + static_cast<std::size_t>(std::countr_zero(w)));
    p = (p / 64 + 1) * 64;
  }
  return mapped_end_;
}

std::size_t PageMap::unit_end(std::size_t p) const noexcept {
  // The first page after p that starts a unit or is not mapped.
  std::size_t q = p + 1;
  while (q < mapped_end_) {
    const std::uint64_t w = (unit_bits_[q / 64] | ~mapped_bits_[q / 64]) >> (q % 64);
    if (w != 0) return std::min(mapped_end_, q + static_cast<std::size_t>(std::countr_zero(w)));
    q = (q / 64 + 1) * 64;
  }
  return mapped_end_;
}

std::size_t PageMap::first_unit_at(std::size_t p) const noexcept {
  if (p >= mapped_end_) return mapped_end_;
  if (!mapped(p)) return next_unit(p);
  // Mapped: walk back to the unit's first page (it is mapped, so it exists).
  std::size_t w = p / 64;
  std::uint64_t bits = unit_bits_[w] & (p % 64 == 63 ? ~std::uint64_t{0} : (std::uint64_t{2} << (p % 64)) - 1);
  while (bits == 0 && w > 0) bits = unit_bits_[--w];
  if (bits == 0) return p;  // no unit starts below: a cut unit (validate() reports it)
  return w * 64 + 63 - static_cast<std::size_t>(std::countl_zero(bits));
}

std::uint64_t PageMap::free_unit_bytes(std::uint64_t offset, std::uint64_t len) const {
  if (len == 0) return 0;
  const std::size_t p1 = std::min(mapped_end_, page_ceil(offset + len));
  const std::size_t a = first_unit_at(page_floor(offset));
  if (a >= p1) return 0;
  // [a, b): the units that overlap the range, whole. Count their pages, then
  // take away the units that hold a busy page, visiting busy pages rather
  // than units: a spot placement considers lies in a free block, so busy
  // pages are rare there (its edges) while units may be dozens.
  const std::size_t b = mapped(p1 - 1) ? unit_end(p1 - 1) : p1;
  std::uint64_t pages = 0;
  for_words(a, b, [&](std::size_t w, std::uint64_t mask) { pages += bits_in(mapped_bits_[w] & mask); });
  for (std::size_t p = a; p < b;) {
    const std::uint64_t w = (mapped_bits_[p / 64] & ~free_bits_[p / 64]) >> (p % 64);
    if (w == 0) {
      p = (p / 64 + 1) * 64;
      continue;
    }
    const std::size_t busy_page = p + static_cast<std::size_t>(std::countr_zero(w));
    if (busy_page >= b) break;
    const std::size_t s = first_unit_at(busy_page), e = unit_end(busy_page);
    pages -= e - s;
    p = e;
  }
  return pages * page_;
}

Result<void> PageMap::validate() const {
  std::uint64_t m = 0, busy_n = 0, mbusy = 0, total = 0;
  for (std::size_t p = 0; p < live_.size(); ++p) {
    bool is_m = mapped(p);
    bool is_f = (free_bits_[p / 64] >> (p % 64)) & 1u;
    bool is_full = (full_bits_[p / 64] >> (p % 64)) & 1u;
    if (live_[p] > page_) return fail(ErrorCode::internal, "pagemap: page {} over-full", p);
    if (is_full && live_[p] != 0) return fail(ErrorCode::internal, "pagemap: page {} both full and shared", p);
    total += is_full ? page_ : live_[p];
    if (busy(p) && !is_m) return fail(ErrorCode::internal, "pagemap: live page {} not mapped", p);
    if (is_f != (is_m && !busy(p))) return fail(ErrorCode::internal, "pagemap: free bit wrong at {}", p);
    const bool unit_start = (unit_bits_[p / 64] >> (p % 64)) & 1u;
    if (unit_start && !is_m) return fail(ErrorCode::internal, "pagemap: unit starts at unmapped page {}", p);
    if (is_m && (p == 0 || !mapped(p - 1)) && !unit_start)
      return fail(ErrorCode::internal, "pagemap: mapped page {} after a gap starts no unit", p);
    m += is_m;
    busy_n += busy(p);
    mbusy += is_m && busy(p);
  }
  if (m != mapped_pages_ || busy_n != busy_pages_ || mbusy != mapped_busy_pages_ || total != live_total_)
    return fail(ErrorCode::internal, "pagemap: counters disagree");
  for (std::size_t p = mapped_end_; p < live_.size(); ++p)
    if (mapped(p)) return fail(ErrorCode::internal, "pagemap: page {} mapped above the bound {}", p, mapped_end_);
  return {};
}

}  // namespace memd
