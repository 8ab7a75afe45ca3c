// alloc/reclaim_ladder.hpp — the one place where out of memory is retried.
//
// Out of memory is answered by the pool and retried here, not at every
// layer (nothing here relies on the pool retrying by itself). Whoever
// allocates through the ladder gets, in this order:
//   1. a request larger than the pool's capacity is refused at once: no
//      rung can make room for it, and evicting a model for it would destroy
//      cached work for nothing;
//   2. pool.allocate(size);
//   3. release_cached(): pool.trim() (thread caches, pending stream frees,
//      cached huge ranges, free pages, empty segments go back) and the
//      release callbacks (caches above their floors), then a retry;
//   4. reclaim(): the reclaim callbacks, in the order they were added, until they have
//      freed `size` bytes; if they freed anything, a retry, and if that still
//      finds no room, a trim and one more (what they freed may sit in a
//      cache or as slack rather than as a free block);
//   5. out_of_memory with the numbers that explain it (requested, device
//      free, reserved, allocated, largest free block, fragmentation,
//      capacity) and the pool's own message.
// Errors other than out_of_memory are returned as they come, without
// climbing. The pressure policy (monitor/pressure_policy.hpp) climbs rungs 3
// and 4 through the same two functions before any allocation fails. The
// ladder needs only a DevicePool, so in-process users of a
// pool (a PyTorch shim) use it without a MemoryManager; the manager owns one
// for all its pools. Quotas are not its business: a quota refusal is not a
// shortfall and never reaches it.
//
// A callback that throws counts as having freed nothing, and the climb goes
// on: an exception never leaves the ladder (the caller's undo, such as the
// manager's quota charge, would be skipped).
//
// Thread safety: every method is thread-safe. Callbacks are called with no
// lock of the ladder held, so they may call back into whatever allocates
// through it (the model manager frees through the MemoryManager); a callback
// removed while a climb is running may still be called by that climb. The
// counts are updated atomically and read without a common snapshot.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "alloc/device_pool.hpp"
#include "memd/error.hpp"

namespace memd {

// A reclaim callback is asked to free at least `needed` bytes on (device,
// type); it returns how many it freed. Registered by higher managers.
using ReclaimCallback = std::function<std::uint64_t(DeviceId, MemoryType, std::uint64_t needed)>;
// A release callback drops what a higher manager caches on (device, type)
// above its floor — memory nobody is using, such as a RAM-tier copy of a
// model beyond the tier's floor — and returns the bytes it freed.
using ReleaseCallback = std::function<std::uint64_t(DeviceId, MemoryType)>;

// How often each rung was used since the ladder was made (for metrics).
struct ReclaimLadderCounts {
  std::uint64_t trim_retries = 0;       // allocations retried after pool.trim() (rung 3)
  std::uint64_t reclaim_retries = 0;    // allocations retried after callbacks freed bytes (rung 4)
  std::uint64_t failures = 0;           // out_of_memory returned after every rung (rung 5)
  std::uint64_t capacity_refusals = 0;  // refused at once as larger than the capacity (rung 1)
  friend bool operator==(const ReclaimLadderCounts&, const ReclaimLadderCounts&) = default;
};

class ReclaimLadder {
 public:
  ReclaimLadder() = default;
  ReclaimLadder(const ReclaimLadder&) = delete;
  ReclaimLadder& operator=(const ReclaimLadder&) = delete;

  // size > 0. Memory from pool.allocate(size) (or size on stream), climbing
  // the ladder on out_of_memory.
  Result<void*> allocate(DevicePool& pool, std::uint64_t size);
  Result<void*> allocate(DevicePool& pool, std::uint64_t size, const Stream& stream);

  // Returns a handle for remove_callback(); handles are never reused (one
  // sequence for both kinds).
  std::uint64_t add_callback(ReclaimCallback callback);
  std::uint64_t add_release_callback(ReleaseCallback callback);
  // Either kind. Unknown handles are ignored.
  void remove_callback(std::uint64_t handle);

  // Rung 3: trims the pool and calls the release callbacks for its device
  // and type; returns the bytes given back.
  std::uint64_t release_cached(DevicePool& pool);
  // Rung 4: the reclaim callbacks, in order, until `needed` bytes are freed;
  // returns the bytes freed.
  std::uint64_t reclaim(DeviceId device, MemoryType type, std::uint64_t needed);

  ReclaimLadderCounts counts() const;

  // "requested … on <device>: device free …, memd reserved …, allocated …,
  // largest free block …, fragmentation …, capacity …": what an out_of_memory
  // message carries. Reads the pool's statistics (which drains its caches).
  static std::string shortfall_numbers(DevicePool& pool, std::uint64_t size);

 private:
  Result<void*> climb(DevicePool& pool, std::uint64_t size, const Stream* stream);
  std::mutex callbacks_mu_;
  std::map<std::uint64_t, ReclaimCallback> callbacks_;
  std::map<std::uint64_t, ReleaseCallback> release_callbacks_;
  std::uint64_t next_handle_ = 1;

  std::atomic<std::uint64_t> trim_retries_{0};
  std::atomic<std::uint64_t> reclaim_retries_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::uint64_t> capacity_refusals_{0};
};

}  // namespace memd
