// Placement over mapped pages; see placement.hpp for the order and why.
#include "core/placement.hpp"

#include <algorithm>
#include <tuple>

namespace memd {

std::uint64_t pinned_bytes(const PageMap& pages, const UnitIndex& units, std::uint64_t at, std::uint64_t bytes,
                           std::uint64_t stop) {
  std::uint64_t total = 0;
  auto it = units.upper_bound(at);
  if (it != units.begin()) --it;
  for (; it != units.end() && it->first < at + bytes && total <= stop; ++it)
    if (it->first + it->second > at && pages.all_free(it->first, it->second)) total += it->second;
  return total;
}

std::optional<TlsfBlock> place_over_mapped(Tlsf& tlsf, const PageMap& pages, const UnitIndex& units,
                                           std::uint64_t bytes, std::uint64_t alignment) {
  if (alignment < tlsf.unit()) alignment = tlsf.unit();
  struct Best {
    std::uint32_t handle = 0;
    std::uint64_t at = 0, cost = ~std::uint64_t{0}, free_size = 0, pinned = 0;
  } best;
  bool found = false;
  std::size_t seen = 0;
  tlsf.for_each_free(bytes, [&](std::uint32_t handle, std::uint64_t off, std::uint64_t fsize) {
    if (found && (++seen > kPlacementScanBudget || (best.cost == 0 && best.pinned == 0)))
      return false;
    const std::uint64_t lo = (off + alignment - 1) / alignment * alignment;
    if (lo + bytes > off + fsize) return true;
    const std::uint64_t hi = (off + fsize - bytes) / alignment * alignment;
    auto consider = [&](std::uint64_t at) {
      at = std::clamp(at, lo, hi);
      const std::uint64_t cost = pages.unmapped_pages(at, bytes);
      if (found && cost > best.cost) return;
      const std::uint64_t pin =
          pinned_bytes(pages, units, at, bytes, found && cost == best.cost ? best.pinned : ~std::uint64_t{0});
      if (!found || cost < best.cost || std::tie(pin, fsize, at) < std::tie(best.pinned, best.free_size, best.at)) {
        best = {handle, at, cost, fsize, pin};
        found = true;
      }
    };
    consider(lo);
    consider(hi);
    pages.for_each_mapped_run(off, off + fsize, [&](std::uint64_t ms, std::uint64_t msz) {
      consider((ms + alignment - 1) / alignment * alignment);
      if (ms + msz >= bytes) consider((ms + msz - bytes) / alignment * alignment);
    });
    return true;
  });
  if (!found) return std::nullopt;
  return tlsf.allocate_in(best.handle, best.at, bytes);
}

}  // namespace memd
