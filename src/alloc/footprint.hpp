// alloc/footprint.hpp — the pool-wide retention budget and the one way to
// give slack back.
//
// The bytes a pool holds are its arena's plus its huge ranges' (live and
// cached); the budget (alloc/retention.hpp) bounds them by the running peak
// of busy bytes. Whoever is about to hold more — the arena mapping pages, a
// new huge range, a huge range going to the cache — asks here what is
// allowed and releases slack here: the arena's kept block first (so its pages
// count as free), then cached huge ranges (largest first, one call each),
// then free arena pages from the top.
//
// Thread safety: none; used under the pool lock.
#pragma once

#include <cstdint>
#include <functional>

#include "alloc/pool_options.hpp"
#include "alloc/retention.hpp"

namespace memd {

class Arena;
class HugeBlocks;

class Footprint {
 public:
  // before_release runs before any memory goes back to the device: the pool
  // waits there for stream work that may still touch freed memory
  // (alloc/stream_reuse.hpp, the home stream).
  Footprint(const PoolOptions& options, std::uint64_t page, Arena& arena, HugeBlocks& huge,
            std::function<void()> before_release = {}) noexcept
      : options_(options), page_(page), arena_(arena), huge_(huge), before_release_(std::move(before_release)) {}

  // Physical bytes held now: arena, huge ranges in use and cached.
  std::uint64_t reserved() const noexcept;
  // Pages live blocks touch, plus huge ranges in use.
  std::uint64_t busy() const noexcept;
  // What the budget allows with today's busy bytes (and `extra_busy` more).
  std::uint64_t allowed(std::uint64_t extra_busy = 0) const noexcept;
  // Raises the peak of busy bytes to today's (and `extra` more, for a range
  // about to be taken).
  void note_busy(std::uint64_t extra = 0) noexcept;
  // Gives back at least `bytes` of slack (see above); returns what went.
  // Nothing while frozen.
  std::uint64_t release_slack(std::uint64_t bytes);
  // While the pool sleeps (alloc/device_pool.hpp, sleep()) its units are
  // unmapped behind the page map's back, which still calls them mapped;
  // releasing slack would unmap them a second time (or release a cached
  // huge range that wake maps again), so nothing is released until thawed.
  void set_frozen(bool frozen) noexcept { frozen_ = frozen; }
  bool frozen() const noexcept { return frozen_; }

  retention::RetentionState& state() noexcept { return state_; }
  const retention::RetentionState& state() const noexcept { return state_; }
  const PoolOptions& options() const noexcept { return options_; }
  std::uint64_t page() const noexcept { return page_; }

 private:
  const PoolOptions& options_;
  const std::uint64_t page_;
  Arena& arena_;
  HugeBlocks& huge_;
  std::function<void()> before_release_;
  retention::RetentionState state_;
  bool frozen_ = false;
};

}  // namespace memd
