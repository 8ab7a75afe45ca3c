// The pool-wide retention budget; see footprint.hpp.
#include "alloc/footprint.hpp"

#include <algorithm>

#include "alloc/arena.hpp"
#include "alloc/huge_blocks.hpp"

namespace memd {

std::uint64_t Footprint::reserved() const noexcept {
  return arena_.held_bytes() + huge_.live_bytes() + huge_.cached_bytes();
}

std::uint64_t Footprint::busy() const noexcept { return arena_.busy_bytes() + huge_.live_bytes(); }

std::uint64_t Footprint::allowed(std::uint64_t extra_busy) const noexcept {
  return retention::allowed(options_, page_, busy() + extra_busy, state_.peak_busy);
}

void Footprint::note_busy(std::uint64_t extra) noexcept {
  state_.peak_busy = std::max(state_.peak_busy, busy() + extra);
}

std::uint64_t Footprint::release_slack(std::uint64_t bytes) {
  if (frozen_) return 0;
  if (before_release_) before_release_();
  arena_.flush_kept();
  std::uint64_t released = huge_.release_cache(bytes);
  if (released < bytes) released += arena_.release_free(bytes - released);
  return released;
}

}  // namespace memd
