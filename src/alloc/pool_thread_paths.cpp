// DevicePool's thread-cache protocol: small slots and (once contended)
// medium blocks served from this thread's cache, and how caches are folded,
// flushed and drained. The cache is a container (alloc/thread_cache.hpp);
// the registry is alloc/thread_caches.hpp; the locks and live tables that
// keep a double free refused at once are here. Lock order: registry, cache,
// pool.
#include "alloc/device_pool.hpp"

namespace memd {

// Pool lock held: moves a cache's counters into the pool's. A thread's
// deltas can be negative (it frees what another allocated); note_peaks()
// skips the moments the sum dips below zero.
void DevicePool::fold(ThreadCache& c) {
  // The cache's own high point since the last fold, on top of the pool's
  // count now: exact with one thread; with several, an estimate (other
  // threads' unfolded operations are not in the count yet).
  auto& k = counters_;
  const auto high_allocated = static_cast<std::int64_t>(k.allocated_bytes) + c.allocated_high;
  const auto high_live = static_cast<std::int64_t>(k.live_allocations) + c.live_high;
  if (high_allocated >= 0)
    k.peak_allocated_bytes = std::max(k.peak_allocated_bytes, static_cast<std::uint64_t>(high_allocated));
  if (high_live >= 0) k.peak_live_allocations = std::max(k.peak_live_allocations, static_cast<std::uint64_t>(high_live));
  k.allocated_bytes += static_cast<std::uint64_t>(c.allocated_delta);
  k.live_allocations += static_cast<std::uint64_t>(c.live_delta);
  k.total_allocations += c.allocs;
  k.total_frees += c.frees;
  c.allocated_delta = c.live_delta = c.allocated_high = c.live_high = 0;
  c.allocs = c.frees = 0;
  note_peaks();
}

// Pool lock held: returns a bin's slots above `keep` to the slab.
void DevicePool::flush_bin(ThreadCache& c, int cls, std::uint32_t keep) {
  auto& b = c.bins[static_cast<std::size_t>(cls)];
  while (b.count > keep) {
    auto r = blocks_.slab().free(b.slots[--b.count]);
    if (r.released_span) blocks_.drop_span(*r.released_span);
  }
}

// Pool lock held: takes everything a cache holds; its medium limit starts
// over (a drain is a statistics call, a trim or a thread exit: the bins it
// emptied were grown for a working set that may be gone).
void DevicePool::absorb(ThreadCache& c) {
  fold(c);
  for (int cls = 0; cls < SlabAllocator::kClassCount; ++cls) flush_bin(c, cls, 0);
  for (int cls = 0; cls < ThreadCache::kMediumClasses; ++cls) flush_medium(c, cls, 0);
  c.reset_medium_limit();
}

void DevicePool::take_back(ThreadCache& cache) {
  std::lock_guard lock(mu_);
  absorb(cache);
}

// Pool lock held: returns a medium bin's blocks above `keep` to the arena
// (their counts left the pool when they were cached: a release, not a free).
void DevicePool::flush_medium(ThreadCache& c, int cls, std::uint32_t keep) {
  auto& b = c.medium[static_cast<std::size_t>(cls)];
  while (b.count > keep) {
    const std::uint64_t address = b.blocks[--b.count];
    c.medium_cached -= ThreadCache::medium_bytes(cls);
    // A binned block's word is "cached" and only its owner (holding the
    // cache lock, as here) changes it; anything else is a broken table, and
    // the block is then leaked rather than freed twice.
    auto e = live_blocks_->find(address);
    if (!e || !e.cached() || !live_blocks_->erase(e)) continue;
    (void)blocks_.release(address);
  }
}

// No lock held: every cache gives its slots and counts back (statistics,
// trim and snapshots see cached blocks as free). Caches stay registered.
// Returns the bytes the caches held.
std::uint64_t DevicePool::drain_caches() {
  if (!live_slots_) return 0;
  std::uint64_t taken = 0;
  caches_.for_each([&](ThreadCache& c) {
    taken += c.cached_bytes();
    std::lock_guard lock(mu_);
    absorb(c);
  });
  return taken;
}

// Cache lock held: one slot for the user, counted like any allocation, plus
// up to half a bin more from spans already open (no new span, so a refill
// never maps memory for the cache).
Result<std::uint64_t> DevicePool::refill(ThreadCache& c, std::uint64_t size) {
  auto lock = lock_pool();
  fold(c);
  auto r = allocate_locked(size);
  if (!r) return r;
  const int cls = ThreadCache::class_of(size);
  auto& b = c.bins[static_cast<std::size_t>(cls)];
  const std::uint32_t want = ThreadCache::capacity(cls) / 2;
  auto no_new_span = []() -> std::optional<std::uint64_t> { return std::nullopt; };
  while (b.count < want) {
    auto slot = blocks_.slab().allocate(size, no_new_span);
    if (!slot) break;
    b.slots[b.count++] = *slot;
  }
  return r;
}

Result<std::uint64_t> DevicePool::cached_allocate(std::uint64_t size) {
  ThreadCache& c = caches_.mine();
  std::lock_guard g(c.mu);
  const int cls = ThreadCache::class_of(size);
  auto& b = c.bins[static_cast<std::size_t>(cls)];
  std::uint64_t address = 0;
  if (b.count != 0) {
    address = b.slots[--b.count];
    c.count_allocate(ThreadCache::slot_bytes(cls));
  } else {
    auto r = refill(c, size);
    if (!r) return r;
    address = *r;
  }
  if (!live_slots_->set_live(address))
    return fail(ErrorCode::internal, "slot {:#x} handed out twice on {}", address, opt_.device.to_string());
  return address;
}

// Small blocks of a thread whose caches are gone (its thread-local
// destructors are running): through the pool lock, live bits kept.
Result<std::uint64_t> DevicePool::uncached_small_allocate(std::uint64_t size) {
  std::lock_guard lock(mu_);
  auto r = allocate_locked(size);
  if (r && !live_slots_->set_live(*r))
    return fail(ErrorCode::internal, "slot {:#x} handed out twice on {}", *r, opt_.device.to_string());
  return r;
}

Result<void> DevicePool::uncached_small_free(std::uint64_t address, const LiveSlots::Slot& slot) {
  std::lock_guard lock(mu_);
  if (!take_back(address, slot)) return refuse_double_free(address);
  return free_locked(address);
}

// Clears the live bit of a slot the user gives back; false (and nothing
// changed) when it was not live, or when the address is a stale pointer
// whose span was closed and reopened for another class between find() and
// the clear (the bit then belonged to someone else's slot, and goes back).
bool DevicePool::take_back(std::uint64_t address, const LiveSlots::Slot& slot) {
  if (!LiveSlots::clear_live(slot)) return false;
  if (live_slots_->slot_size(address) == slot.size()) return true;
  (void)LiveSlots::set_live(slot);
  return false;
}

// A small slot back from the user. The live bit is cleared under the cache
// lock, so validate() (which holds every cache lock) never sees a slot that
// is neither live nor cached.
Result<void> DevicePool::cached_free(std::uint64_t address, const LiveSlots::Slot& slot) {
  ThreadCache& c = caches_.mine();
  std::lock_guard g(c.mu);
  if (!take_back(address, slot)) return refuse_double_free(address);
  const std::uint64_t slot_size = slot.size();
  const int cls = ThreadCache::class_of(slot_size);
  auto& b = c.bins[static_cast<std::size_t>(cls)];
  if (b.count == ThreadCache::capacity(cls)) {
    auto lock = lock_pool();
    fold(c);
    flush_bin(c, cls, b.count / 2);
  }
  b.slots[b.count++] = address;
  c.count_free(slot_size);
  return {};
}

// A medium block (contended pools only): from this thread's bin of its class
// or of the next one up, else through the pool lock at the class size,
// tracked so that its free can come back to a cache. The next class (up to a
// quarter larger) cut misses and flushes by three quarters in the thread
// benchmark (docs/benchmarks.md, "medium blocks").
Result<std::uint64_t> DevicePool::cached_medium_allocate(std::uint64_t size) {
  ThreadCache& c = caches_.mine();
  std::lock_guard g(c.mu);
  const int cls = ThreadCache::medium_class(size);
  int use = cls;
  if (c.medium[static_cast<std::size_t>(cls)].count == 0 && cls + 1 < ThreadCache::kMediumClasses) use = cls + 1;
  auto& b = c.medium[static_cast<std::size_t>(use)];
  if (b.count != 0) {
    const std::uint64_t bytes = ThreadCache::medium_bytes(use);
    const std::uint64_t address = b.blocks[--b.count];
    c.medium_cached -= bytes;
    auto e = live_blocks_->find(address);
    if (!LiveBlocks::to_live(e))
      return fail(ErrorCode::internal, "cached block {:#x} is not cached in the live table", address);
    c.count_allocate(bytes);
    c.note_medium_hit();
    return address;
  }
  // A miss the byte limit caused (it flushed this class) counts toward
  // doubling the limit.
  (void)c.note_medium_miss(cls, std::min(cls + 1, ThreadCache::kMediumClasses - 1));
  const std::uint64_t bytes = ThreadCache::medium_bytes(cls);
  auto lock = lock_pool();
  fold(c);
  auto r = allocate_locked(bytes);  // out of memory: the ladder trims (which drains caches) and retries
  // Tracked only as the arena block of exactly its class size it should be;
  // untracked (the table is full) its free takes the pool lock.
  if (r && arena_->blocks().allocated_size(*r) == bytes) (void)live_blocks_->insert(*r, bytes);
  return r;
}

// A tracked medium block back from the user: into this thread's bin. The
// swap to "cached" happens under the cache lock, so validate() (which holds
// every cache lock) sees each tracked block either live or in a bin.
Result<void> DevicePool::cached_medium_free(std::uint64_t address, LiveBlocks::Entry e) {
  ThreadCache& c = caches_.mine();
  std::lock_guard g(c.mu);
  if (!LiveBlocks::to_cached(e)) {
    // Cached already (a double free), or the entry changed since find():
    // the pool lock decides.
    auto lock = lock_pool();
    return free_tracked_locked(address, kRecheckSlot);
  }
  const std::uint64_t bytes = e.size();
  const int cls = ThreadCache::medium_class(bytes);
  auto& b = c.medium[static_cast<std::size_t>(cls)];
  const std::uint32_t capacity = ThreadCache::medium_capacity(cls);
  if (b.count == capacity || c.medium_cached + bytes > c.medium_limit) {
    auto lock = lock_pool();
    fold(c);
    if (b.count == capacity) flush_medium(c, cls, b.count / 2);
    // Over the byte limit: the largest classes go first (they free the most
    // for one lock), and are marked, so that their next miss can tell the
    // limit was too small.
    for (int k = ThreadCache::kMediumClasses; k-- > 0 && c.medium_cached + bytes > c.medium_limit;)
      if (c.medium[static_cast<std::size_t>(k)].count != 0) {
        flush_medium(c, k, 0);
        c.note_limit_flush(k);
      }
  }
  b.blocks[b.count++] = address;
  c.medium_cached += bytes;
  c.count_free(bytes);
  return {};
}

}  // namespace memd
