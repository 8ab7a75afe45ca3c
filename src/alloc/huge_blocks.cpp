// Huge blocks in ranges of their own; see huge_blocks.hpp.
#include "alloc/huge_blocks.hpp"

#include <algorithm>

#include "alloc/footprint.hpp"
#include "alloc/retention.hpp"

namespace memd {

HugeBlocks::~HugeBlocks() {
  for (auto& [address, h] : live_) destroy(h);
  for (auto& h : cache_) destroy(h);
}

void HugeBlocks::destroy(const Huge& h) {
  ++counters_.device_calls;
  if (virtual_) (void)backend_.release(h.range);
  else (void)backend_.free(h.segment);
}

Result<HugeBlocks::Huge> HugeBlocks::create(std::uint64_t bytes) {
  Huge h;
  h.size = bytes;
  if (virtual_) {
    ++counters_.device_calls;
    auto r = backend_.reserve(options_.device, bytes);
    if (!r) return fail(r.error());
    ++counters_.device_calls;
    if (auto m = backend_.map(*r, 0, bytes); !m) {
      (void)backend_.release(*r);
      return fail(m.error());
    }
    h.range = *r;
  } else {
    ++counters_.device_calls;
    auto s = backend_.allocate(options_.device, options_.memory_type, bytes);
    if (!s) return fail(s.error());
    h.segment = *s;
  }
  return h;
}

Result<std::uint64_t> HugeBlocks::take(std::uint64_t size, Footprint& footprint) {
  const std::uint64_t need = retention::round_up(size, page_);
  // A cached range big enough but not wastefully so: the smallest such.
  auto best = cache_.end();
  for (auto it = cache_.begin(); it != cache_.end(); ++it)
    if (it->size >= need && it->size <= need + need / 8 && (best == cache_.end() || it->size < best->size)) best = it;
  if (best != cache_.end()) {
    Huge h = *best;
    cache_.erase(best);
    cached_bytes_ -= h.size;
    live_bytes_ += h.size;
    const std::uint64_t address = h.address(virtual_);
    live_.emplace(address, h);
    return address;
  }
  // Counted as busy before it exists, so the budget sees the growth; a
  // range that cannot be made leaves the peak where it was.
  const std::uint64_t peak_before = footprint.state().peak_busy;
  footprint.note_busy(need);
  if (const std::uint64_t limit = footprint.allowed(need); footprint.reserved() + need > limit)
    footprint.release_slack(footprint.reserved() + need - limit);
  auto h = create(need);
  if (!h) {
    footprint.state().peak_busy = peak_before;
    return fail(h.error());
  }
  const std::uint64_t address = h->address(virtual_);
  live_.emplace(address, *h);
  live_bytes_ += need;
  return address;
}

std::optional<std::uint64_t> HugeBlocks::release(std::uint64_t address) {
  auto it = live_.find(address);
  if (it == live_.end()) return std::nullopt;
  Huge h = it->second;
  live_.erase(it);
  live_bytes_ -= h.size;
  cache_.push_back(h);
  cached_bytes_ += h.size;
  return h.size;
}

std::optional<std::uint64_t> HugeBlocks::live_size(std::uint64_t address) const {
  if (auto it = live_.find(address); it != live_.end()) return it->second.size;
  return std::nullopt;
}

std::uint64_t HugeBlocks::release_cache(std::uint64_t bytes) {
  std::sort(cache_.begin(), cache_.end(), [](const Huge& a, const Huge& b) { return a.size < b.size; });
  std::uint64_t released = 0;
  while (released < bytes && !cache_.empty()) {
    Huge h = cache_.back();
    cache_.pop_back();
    destroy(h);
    cached_bytes_ -= h.size;
    released += h.size;
  }
  return released;
}

std::uint64_t HugeBlocks::largest_cached() const noexcept {
  std::uint64_t largest = 0;
  for (const auto& h : cache_) largest = std::max(largest, h.size);
  return largest;
}

Result<void> HugeBlocks::validate() const {
  std::uint64_t live = 0, cached = 0;
  for (const auto& [address, h] : live_) {
    if (h.address(virtual_) != address) return fail(ErrorCode::internal, "huge: range {:#x} filed under {:#x}",
                                                    h.address(virtual_), address);
    live += h.size;
  }
  for (const auto& h : cache_) cached += h.size;
  if (live != live_bytes_) return fail(ErrorCode::internal, "huge: live bytes {} != ranges {}", live_bytes_, live);
  if (cached != cached_bytes_)
    return fail(ErrorCode::internal, "huge: cached bytes {} != ranges {}", cached_bytes_, cached);
  return {};
}

}  // namespace memd
