// ReclaimLadder: allocate, trim and retry, reclaim and retry, then explain.
#include "alloc/reclaim_ladder.hpp"

#include <vector>

#include "memd/size.hpp"

namespace memd {
namespace {

bool out_of_memory(const Result<void*>& r) { return !r && r.error().code == ErrorCode::out_of_memory; }

// A callback that throws freed nothing the ladder can count on. The climb
// must go on to its answer: an exception through it would skip the
// caller's undo (the manager's quota charge) and reach a transport thread.
template <typename F>
std::uint64_t freed_by(F&& call) noexcept {
  try {
    return call();
  } catch (...) {
    return 0;
  }
}

}  // namespace

Result<void*> ReclaimLadder::allocate(DevicePool& pool, std::uint64_t size) { return climb(pool, size, nullptr); }

Result<void*> ReclaimLadder::allocate(DevicePool& pool, std::uint64_t size, const Stream& stream) {
  return climb(pool, size, &stream);
}

Result<void*> ReclaimLadder::climb(DevicePool& pool, std::uint64_t size, const Stream* stream) {
  const PoolOptions& opt = pool.options();
  if (opt.capacity != 0 && size > opt.capacity) {
    capacity_refusals_.fetch_add(1, std::memory_order_relaxed);
    return fail(ErrorCode::out_of_memory, "out of memory: {} (larger than the pool's capacity)",
                shortfall_numbers(pool, size));
  }
  auto attempt = [&] { return stream ? pool.allocate(size, *stream) : pool.allocate(size); };

  auto ptr = attempt();
  if (!out_of_memory(ptr)) return ptr;

  release_cached(pool);
  trim_retries_.fetch_add(1, std::memory_order_relaxed);
  ptr = attempt();
  if (!out_of_memory(ptr)) return ptr;

  if (reclaim(opt.device, opt.memory_type, size) > 0) {
    reclaim_retries_.fetch_add(1, std::memory_order_relaxed);
    ptr = attempt();
    // Freed blocks are usually free blocks at once; the trim is for what
    // went to a cache or stayed as slack. Retrying first keeps the freed
    // memory in the pool, where another process cannot take it meanwhile.
    if (out_of_memory(ptr)) {
      pool.trim();
      ptr = attempt();
    }
    if (!out_of_memory(ptr)) return ptr;
  }
  failures_.fetch_add(1, std::memory_order_relaxed);
  return fail(ErrorCode::out_of_memory, "out of memory: {} ({})", shortfall_numbers(pool, size), ptr.error().message);
}

std::uint64_t ReclaimLadder::release_cached(DevicePool& pool) {
  std::uint64_t released = pool.trim();
  std::vector<ReleaseCallback> callbacks;
  {
    std::lock_guard lock(callbacks_mu_);
    for (const auto& [handle, cb] : release_callbacks_) callbacks.push_back(cb);
  }
  if (callbacks.empty()) return released;
  const PoolOptions& opt = pool.options();
  std::uint64_t dropped = 0;
  for (auto& cb : callbacks) dropped += freed_by([&] { return cb(opt.device, opt.memory_type); });
  // What the callbacks freed sits in the pool as free blocks: give it back.
  if (dropped > 0) released += pool.trim();
  return released;
}

std::uint64_t ReclaimLadder::reclaim(DeviceId device, MemoryType type, std::uint64_t needed) {
  std::vector<ReclaimCallback> callbacks;
  {
    std::lock_guard lock(callbacks_mu_);
    callbacks.reserve(callbacks_.size());
    for (const auto& [handle, cb] : callbacks_) callbacks.push_back(cb);
  }
  // Copies, called unlocked: a callback may free through the manager, add or
  // remove callbacks, or validate.
  std::uint64_t freed = 0;
  for (auto& cb : callbacks) {
    if (freed >= needed) break;
    freed += freed_by([&] { return cb(device, type, needed - freed); });
  }
  return freed;
}

std::uint64_t ReclaimLadder::add_callback(ReclaimCallback callback) {
  std::lock_guard lock(callbacks_mu_);
  const std::uint64_t handle = next_handle_++;
  callbacks_.emplace(handle, std::move(callback));
  return handle;
}

std::uint64_t ReclaimLadder::add_release_callback(ReleaseCallback callback) {
  std::lock_guard lock(callbacks_mu_);
  const std::uint64_t handle = next_handle_++;
  release_callbacks_.emplace(handle, std::move(callback));
  return handle;
}

void ReclaimLadder::remove_callback(std::uint64_t handle) {
  std::lock_guard lock(callbacks_mu_);
  callbacks_.erase(handle);
  release_callbacks_.erase(handle);
}

ReclaimLadderCounts ReclaimLadder::counts() const {
  return {.trim_retries = trim_retries_.load(std::memory_order_relaxed),
          .reclaim_retries = reclaim_retries_.load(std::memory_order_relaxed),
          .failures = failures_.load(std::memory_order_relaxed),
          .capacity_refusals = capacity_refusals_.load(std::memory_order_relaxed)};
}

std::string ReclaimLadder::shortfall_numbers(DevicePool& pool, std::uint64_t size) {
  const PoolOptions& opt = pool.options();
  const PoolStats s = pool.stats();
  std::string free_text = "unknown";
  if (auto mi = pool.backend().memory_info(opt.device)) free_text = format_size(mi->free_bytes);
  return fmt::format(
      "requested {} ({} bytes) on {}: device free {}, memd reserved {}, allocated {}, largest free block {}, "
      "fragmentation {:.3f}, capacity {}",
      format_size(size), size, opt.device.to_string(), free_text, format_size(s.reserved_bytes),
      format_size(s.allocated_bytes), format_size(s.largest_free_block), s.fragmentation, format_size(opt.capacity));
}

}  // namespace memd
