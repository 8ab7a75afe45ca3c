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
// The home stream. Pending blocks serve only exact sizes on their own
// stream, so while the host runs ahead of the device (every inference
// loop) frees of other sizes sit idle and the pool grows: PyTorch's
// ResNet-50 held 1.42x its live bytes that way. Most users of a pool have
// one stream, so the first stream a pool sees is its home: a block freed on
// it goes straight back to the free structures ("dirty": the stream's queued
// work may still touch it). Only the home stream may take dirty memory
// without waiting; anyone else first waits for the home stream (settle():
// another stream's or the host's allocation, giving memory back to the
// device, a defragmentation run). The first other stream ends home mode for
// good: the home stream is waited for once and every stream's frees are
// pending from then on. `stream_syncs` counts the waits.
//
// Thread safety: none; used under the pool lock.
#pragma once

#include <atomic>
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
  // home: whether the first stream becomes the home stream (else every
  // stream's frees are pending from the start).
  StreamReuse(Backend& backend, std::uint64_t batch, PoolCounters& counters,
              std::function<void(std::uint64_t)> release, bool home = true)
      : backend_(backend), batch_(batch), counters_(counters), release_(std::move(release)), shared_(!home) {}
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
  // stream is remembered from now on (and made home when it is the first).
  std::optional<std::uint64_t> reuse(const Stream& stream, std::uint64_t bytes);
  // The user freed the live block at `address` (`bytes`) on `stream`.
  // True when it went straight back to the free structures (through the
  // release callback: `stream` is home); false when it is pending.
  bool add(const Stream& stream, std::uint64_t address, std::uint64_t bytes);
  // Releases the batches whose event completed; with wait, fences every
  // stream and waits for all of them (and settles).
  void drain(bool wait);
  // Whether the home stream freed memory since it was last waited for. Read
  // without the pool lock by the host's allocation path (a stale false is
  // harmless there: the home stream's frees and that allocation are not
  // ordered anyway unless the caller orders them, which publishes the flag).
  bool dirty() const noexcept { return dirty_.load(std::memory_order_acquire); }
  // Waits for the home stream if it freed memory since the last wait, so
  // that memory is safe for anyone.
  void settle();
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
  // Ends home mode (the first time another stream shows up).
  void leave_home();

  std::vector<StreamState> streams_;
  std::optional<Stream> home_;   // set while the pool has seen one stream only
  bool shared_ = false;          // a second stream was seen (or home is off): no home
  std::atomic<bool> dirty_{false};
  FlatMap pending_;  // address → 1 while a stream-ordered free is in flight
  std::size_t fenced_batches_ = 0;
};

}  // namespace memd
