// alloc/stream_reuse.hpp — blocks freed in stream order, reused in stream
// order.
//
// deallocate(ptr, stream) makes a block reusable at once by allocations on
// the same stream (the stream's order protects it); it goes back to the
// shared free structures, for every stream, only after an event recorded on
// that stream after the free has completed. Events are recorded per batch of
// `batch` frees, not per free, so the fast path records none. Until then the
// block is "pending": neither the user's nor free.
//
// Thread safety: none; used under the pool lock.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <vector>

#include "alloc/pool_stats.hpp"
#include "backends/backend.hpp"
#include "core/flat_map.hpp"
#include "memd/error.hpp"

namespace memd {

class StreamReuse {
 public:
  // release(address): gives a pending block back to the free structures.
  StreamReuse(Backend& backend, std::uint64_t batch, PoolCounters& counters,
              std::function<void(std::uint64_t)> release)
      : backend_(backend), batch_(batch), counters_(counters), release_(std::move(release)) {}
  StreamReuse(const StreamReuse&) = delete;
  StreamReuse& operator=(const StreamReuse&) = delete;

  // Whether any stream has been used (so something may be pending).
  bool any() const noexcept { return !streams_.empty(); }
  bool is_pending(std::uint64_t address) const noexcept {
    return pending_.size() != 0 && pending_.find(address).has_value();
  }
  std::size_t pending_count() const noexcept { return pending_.size(); }
  // Whether any batch waits for its event (a drain may release something).
  bool any_fenced() const noexcept { return fenced_batches_ != 0; }

  // A block of exactly `bytes` freed earlier on `stream`, newest first; the
  // stream is remembered from now on.
  std::optional<std::uint64_t> reuse(const Stream& stream, std::uint64_t bytes);
  // The user freed the live block at `address` (`bytes`) on `stream`.
  void add(const Stream& stream, std::uint64_t address, std::uint64_t bytes);
  // Releases the batches whose event completed; with wait, fences every
  // stream and waits for all of them.
  void drain(bool wait);
  // Waits for and destroys every event without releasing anything (the pool
  // is going away with its blocks).
  void abandon();

  template <typename F>  // f(address, bytes)
  void for_each_pending(F&& f) const {
    for (const auto& st : streams_) {
      for (const auto& p : st.open) f(p.address, p.size);
      for (const auto& b : st.fenced)
        for (const auto& p : b.blocks) f(p.address, p.size);
    }
  }
  // The pending index and the per-stream lists agree.
  Result<void> validate() const;

 private:
  struct Pending {
    std::uint64_t address = 0;
    std::uint64_t size = 0;
  };
  struct Batch {
    Event event;
    std::vector<Pending> blocks;
  };
  struct StreamState {
    Stream stream;
    std::vector<Pending> open;  // freed, not yet fenced by an event
    std::deque<Batch> fenced;   // fenced, waiting for their event
  };
  StreamState& state_for(const Stream& stream);
  void fence(StreamState& st);
  void finish(const Pending& p);

  Backend& backend_;
  const std::uint64_t batch_;
  PoolCounters& counters_;
  std::function<void(std::uint64_t)> release_;
  std::vector<StreamState> streams_;
  FlatMap pending_;  // address → 1 while a stream-ordered free is in flight
  std::size_t fenced_batches_ = 0;
};

}  // namespace memd
