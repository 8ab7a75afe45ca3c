// DevicePool's views and checks: statistics, the running counters, trim,
// snapshots and validate(). Each first takes every thread cache back (or,
// for validate, freezes them) and returns the arena's kept block, so what
// they report is what a user would see with no cache and no kept block.
#include <algorithm>
#include <bit>
#include <unordered_map>

#include "alloc/device_pool.hpp"

namespace memd {

void DevicePool::free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const {
  arena_->free_space(free_bytes, largest);
  free_bytes += huge_.cached_bytes();
  largest = std::max(largest, huge_.largest_cached());
}

PoolStats DevicePool::counters() const {
  std::lock_guard lock(mu_);
  PoolStats s;
  copy_counters(counters_, s);
  s.active_bytes = arena_->blocks().used_bytes() + huge_.live_bytes();
  s.reserved_bytes = footprint_.reserved() - asleep_bytes();  // slept units hold no device memory
  s.segments = arena_->regions_held() + huge_.ranges();
  return s;
}

std::uint64_t DevicePool::reserved_bytes() const {
  std::lock_guard lock(mu_);
  return footprint_.reserved() - asleep_bytes();
}

PoolStats DevicePool::stats() const {
  auto& self = const_cast<DevicePool&>(*this);  // draining caches changes no observable state
  self.drain_caches();
  std::lock_guard lock(mu_);
  arena_->flush_kept();
  PoolStats s;
  copy_counters(counters_, s);
  s.active_bytes = arena_->blocks().used_bytes() + huge_.live_bytes();
  s.reserved_bytes = footprint_.reserved() - asleep_bytes();  // slept units hold no device memory
  s.segments = arena_->regions_held() + huge_.ranges();
  free_space(s.free_bytes, s.largest_free_block);
  s.fragmentation = s.free_bytes == 0 ? 0.0
                                      : 1.0 - static_cast<double>(s.largest_free_block) /
                                                  static_cast<double>(s.free_bytes);
  s.footprint_ratio = counters_.allocated_bytes == 0 ? 0.0
                                                     : static_cast<double>(s.reserved_bytes) /
                                                           static_cast<double>(counters_.allocated_bytes);
  return s;
}

std::uint64_t DevicePool::trim() {
  drain_caches();
  std::lock_guard lock(mu_);
  arena_->flush_kept();
  if (streams_.any()) streams_.drain(/*wait=*/true);
  std::uint64_t released = 0;
  for (auto span : blocks_.slab().release_empty_spans()) blocks_.drop_span(span);
  released += footprint_.release_slack(~std::uint64_t{0} / 2);
  released += arena_->release_empty();
  released += backend_.trim();
  return released;
}

TrimForecast DevicePool::trim_forecast() const {
  auto& self = const_cast<DevicePool&>(*this);  // as stats(): draining caches changes no observable state
  self.drain_caches();
  std::lock_guard lock(mu_);
  arena_->flush_kept();
  TrimForecast f;
  f.releasable_bytes = huge_.cached_bytes() + arena_->releasable_bytes();
  std::uint64_t free_bytes = 0, largest = 0;
  arena_->free_space(free_bytes, largest);
  const std::uint64_t arena_releasable = arena_->releasable_bytes();
  f.stranded_free_bytes = free_bytes - std::min(free_bytes, arena_releasable);
  f.virtual_memory = arena_->region_kind() == "arena";
  f.unit_bytes = f.virtual_memory ? retention::unit_bytes(opt_, page_, footprint_.state()) : 0;
  return f;
}

std::vector<SegmentInfo> DevicePool::snapshot() const {
  auto& self = const_cast<DevicePool&>(*this);
  self.drain_caches();
  std::lock_guard lock(mu_);
  arena_->flush_kept();
  std::vector<SegmentInfo> out;
  const auto& tlsf = arena_->blocks();
  for (const auto& [base, size] : tlsf.regions())
    out.push_back({base, size, arena_->region_backed_bytes(size), arena_->region_kind(), {}});
  tlsf.for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
    for (auto& seg : out)
      if (off >= seg.address && off < seg.address + seg.size) {
        std::string state = is_free ? "free" : (blocks_.slab().owns_span(off) ? "slab" : "allocated");
        if (!is_free && streams_.is_pending(off)) state = "pending";
        seg.blocks.push_back({off, size, std::move(state)});
        break;
      }
  });
  huge_.for_each([&](std::uint64_t address, std::uint64_t size, bool live) {
    const char* state = !live ? "free" : streams_.is_pending(address) ? "pending" : "allocated";
    out.push_back({address, size, size, "huge", {{address, size, state}}});
  });
  return out;
}

Result<void> DevicePool::validate() const {
  auto& self = const_cast<DevicePool&>(*this);
  // Freeze every thread cache (registry, caches, then the pool: the lock
  // order), so the check is exact even while other threads use the pool.
  auto frozen = self.caches_.freeze();
  std::lock_guard lock(mu_);
  arena_->flush_kept();
  std::unordered_map<std::uint64_t, std::uint64_t> cached;  // block → bytes, every cache
  for (auto& c : frozen.caches()) {
    if (c->owner == nullptr) continue;
    if (auto r = c->validate(); !r) return r;
    self.fold(*c);
    for (int cls = 0; cls < SlabAllocator::kClassCount; ++cls)
      for (std::uint32_t i = 0; i < c->bins[static_cast<std::size_t>(cls)].count; ++i)
        if (!cached.emplace(c->bins[static_cast<std::size_t>(cls)].slots[i], ThreadCache::slot_bytes(cls)).second)
          return fail(ErrorCode::internal, "pool: a slot sits in two thread caches");
    std::uint64_t medium_bytes = 0;
    for (int cls = 0; cls < ThreadCache::kMediumClasses; ++cls)
      for (std::uint32_t i = 0; i < c->medium[static_cast<std::size_t>(cls)].count; ++i) {
        medium_bytes += ThreadCache::medium_bytes(cls);
        if (!cached.emplace(c->medium[static_cast<std::size_t>(cls)].blocks[i], ThreadCache::medium_bytes(cls)).second)
          return fail(ErrorCode::internal, "pool: a medium block sits in two thread caches");
      }
    if (medium_bytes != c->medium_cached)
      return fail(ErrorCode::internal, "pool: a cache counts {} medium bytes, its bins hold {}", c->medium_cached,
                  medium_bytes);
  }
  if (auto r = arena_->validate(); !r) return r;
  if (auto r = blocks_.validate(); !r) return r;
  if (auto r = huge_.validate(); !r) return r;
  if (auto r = streams_.validate(); !r) return r;
  // allocated = live slots + live arena blocks + live huge ranges, minus
  // pending and cached ones.
  std::uint64_t pending_bytes = 0;
  streams_.for_each_pending([&](std::uint64_t, std::uint64_t bytes) { pending_bytes += bytes; });
  std::uint64_t cached_bytes = 0;
  for (const auto& [block, bytes] : cached) cached_bytes += bytes;
  if (blocks_.block_bytes() != counters_.allocated_bytes + pending_bytes + cached_bytes)
    return fail(ErrorCode::internal, "pool: allocated {} + pending {} + cached {} != blocks {}",
                counters_.allocated_bytes, pending_bytes, cached_bytes, blocks_.block_bytes());
  const auto& tlsf = arena_->blocks();
  const auto& slab = blocks_.slab();
  if (live_slots_) {
    // Each slot the slab holds is exactly one of: held by the user (live
    // bit), cached by a thread, or pending a stream-ordered free; no live bit
    // is set anywhere else.
    std::optional<Error> bad;
    std::uint64_t user_slots = 0, user_bits = 0;
    slab.for_each_slot([&](std::uint64_t off, std::uint64_t size) {
      const bool user = live_slots_->is_live(off), in_cache = cached.contains(off);
      const bool pend = streams_.is_pending(off);
      if (int(user) + int(in_cache) + int(pend) != 1 && !bad)
        bad = Error{ErrorCode::internal,
                    fmt::format("pool: slot {:#x} is live {} / cached {} / pending {}", off, user, in_cache, pend)};
      if (live_slots_->slot_size(off) != size && !bad)
        bad = Error{ErrorCode::internal, fmt::format("pool: slot {:#x} has size {} in the live table", off, size)};
      user_slots += user ? 1 : 0;
    });
    if (bad) return fail(std::move(*bad));
    tlsf.for_each_block([&](std::uint64_t off, std::uint64_t, bool is_free) {
      if (is_free || !slab.owns_span(off)) return;
      for (auto w : live_slots_->live_bits(off)) user_bits += static_cast<std::uint64_t>(std::popcount(w));
    });
    if (user_bits != user_slots)
      return fail(ErrorCode::internal, "pool: {} live bits set, {} slots held by users", user_bits, user_slots);
  }
  if (live_blocks_) {
    if (auto r = live_blocks_->validate(); !r) return r;
    // Each tracked medium block is a live arena block of its size, cached
    // exactly when it sits in a thread's bin, and never pending.
    std::optional<Error> bad;
    std::size_t entries = 0, cached_entries = 0, medium_in_bins = 0;
    for (const auto& [address, size] : cached) medium_in_bins += ThreadCache::is_medium(size) ? 1 : 0;
    live_blocks_->for_each([&](std::uint64_t address, std::uint64_t size, bool is_cached) {
      ++entries;
      cached_entries += is_cached ? 1 : 0;
      const auto in_cache = cached.find(address);
      if (bad) return;
      if (tlsf.allocated_size(address) != size)
        bad = Error{ErrorCode::internal,
                    fmt::format("pool: tracked block {:#x} of {} is no arena block of that size", address, size)};
      else if (is_cached != (in_cache != cached.end() && in_cache->second == size))
        bad = Error{ErrorCode::internal, fmt::format("pool: tracked block {:#x} cached {} but in a bin {}", address,
                                                     is_cached, in_cache != cached.end())};
      else if (streams_.is_pending(address))
        bad = Error{ErrorCode::internal, fmt::format("pool: tracked block {:#x} is pending", address)};
    });
    if (bad) return fail(std::move(*bad));
    if (cached_entries != medium_in_bins)
      return fail(ErrorCode::internal, "pool: {} medium blocks in bins, {} cached in the table", medium_in_bins,
                  cached_entries);
    if (entries != live_blocks_->size())
      return fail(ErrorCode::internal, "pool: live table counts {} entries, holds {}", live_blocks_->size(), entries);
  }
  return {};
}

}  // namespace memd
