// Placement over mapped pages; see placement.hpp for the order and why.
#include "core/placement.hpp"

#include <algorithm>
#include <tuple>

namespace memd {

std::optional<TlsfBlock> place_over_mapped(Tlsf& tlsf, const PageMap& pages, std::uint64_t bytes,
                                           std::uint64_t alignment) {
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
      const std::uint64_t cost = pages.unmapped_pages(at, bytes);
      if (found && cost > best.cost) return;
      const std::uint64_t pin = pages.free_unit_bytes(at, bytes);
      if (!found || cost < best.cost || std::tie(pin, fsize, at) < std::tie(best.pinned, best.free_size, best.at)) {
        best = {handle, at, cost, fsize, pin};
        found = true;
      }
    };
    consider(lo);
    if (hi != lo) consider(hi);
    // Each mapped stretch, start- and end-aligned; a stretch that reaches an
    // end of the block gives that end again, which was weighed already.
    std::uint64_t last = lo;
    auto consider_inner = [&](std::uint64_t at) {
      at = std::clamp(at, lo, hi);
      if (at == lo || at == hi || at == last) return;
      last = at;
      consider(at);
    };
    pages.for_each_mapped_run(off, off + fsize, [&](std::uint64_t ms, std::uint64_t msz) {
      consider_inner((ms + alignment - 1) / alignment * alignment);
      if (ms + msz >= bytes) consider_inner((ms + msz - bytes) / alignment * alignment);
    });
    return true;
  });
  if (!found) return std::nullopt;
  return tlsf.allocate_in(best.handle, best.at, bytes);
}

}  // namespace memd
