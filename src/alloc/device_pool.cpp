// DevicePool: creation and the routing of calls; see device_pool.hpp. The
// thread-cache protocol is in pool_thread_paths.cpp, statistics and checks in
// pool_inspection.cpp.
#include "alloc/device_pool.hpp"

#include <algorithm>

#include "alloc/segment_arena.hpp"
#include "alloc/virtual_arena.hpp"

namespace memd {

std::string_view to_string(PoolPolicy policy) noexcept {
  return policy == PoolPolicy::Throughput ? "throughput" : "footprint";
}

std::optional<PoolPolicy> parse_pool_policy(std::string_view text) noexcept {
  if (text == "footprint") return PoolPolicy::Footprint;
  if (text == "throughput") return PoolPolicy::Throughput;
  return std::nullopt;
}

Result<std::pair<DeviceId, PoolPolicy>> parse_device_pool_policy(std::string_view text) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos)
    return fail(ErrorCode::invalid_argument, "pool policy '{}' is not DEVICE=POLICY (e.g. cuda:0=throughput)", text);
  auto device = DeviceId::parse(text.substr(0, eq));
  if (!device) return fail(ErrorCode::invalid_argument, "pool policy '{}': {}", text, device.error().message);
  auto policy = parse_pool_policy(text.substr(eq + 1));
  if (!policy)
    return fail(ErrorCode::invalid_argument, "pool policy '{}': '{}' is not footprint or throughput", text,
                text.substr(eq + 1));
  return std::pair{*device, *policy};
}

PoolOptions apply_policy(PoolOptions options) noexcept {
  if (options.policy == PoolPolicy::Throughput) options.map_unit_min = options.map_unit_max = kThroughputUnit;
  return options;
}

DevicePool::DevicePool(Backend& backend, const PoolOptions& options, std::uint64_t page,
                       std::optional<VirtualRange> range)
    : backend_(backend),
      opt_(options),
      page_(page),
      live_slots_(range && options.thread_cache ? std::make_unique<LiveSlots>(range->base, range->size)
                                                : nullptr),
      live_blocks_(live_slots_ && options.medium_cache != PoolOptions::MediumCache::Never
                       ? std::make_unique<LiveBlocks>(range->base)
                       : nullptr),
      arena_(make_arena(range)),
      huge_(backend, opt_, range.has_value(), page, counters_),
      footprint_(opt_, page, *arena_, huge_, [this] { streams_.settle(); }),
      blocks_(opt_, page, *arena_, huge_, footprint_, live_slots_.get()),
      streams_(backend, opt_.stream_batch, counters_, [this](std::uint64_t address) { (void)blocks_.release(address); },
               opt_.home_stream),
      medium_caching_(live_blocks_ && options.medium_cache == PoolOptions::MediumCache::Always),
      caches_(*this) {}

std::unique_ptr<Arena> DevicePool::make_arena(std::optional<VirtualRange> range) {
  if (range) return std::make_unique<VirtualArena>(backend_, opt_, page_, counters_, *range);
  return std::make_unique<SegmentArena>(backend_, opt_, page_, counters_);
}

DevicePool::~DevicePool() {
  // Threads that still hold a cache of this pool find it orphaned.
  caches_.orphan_all();
  // A pool closed asleep: its host copy goes; its ranges go with their
  // owners below (a release unmaps what is mapped, and the slept units are
  // not).
  if (sleep_.host.ptr != nullptr) (void)backend_.free(sleep_.host);
  std::lock_guard lock(mu_);
  streams_.abandon();
  // Then the members go in reverse order: huge ranges, then the arena.
}

Result<std::unique_ptr<DevicePool>> DevicePool::create(Backend& backend, const PoolOptions& requested) {
  PoolOptions options = apply_policy(requested);
  DeviceInfo info;
  bool found = false;
  for (auto& d : backend.devices())
    if (d.id == options.device) {
      info = d;
      found = true;
    }
  if (!found && options.device.kind() != DeviceKind::Cpu)
    return fail(ErrorCode::not_found, "backend {} has no device {}", backend.name(), options.device.to_string());
  if (options.retain_fraction < 0 || options.retain_fraction > 10)
    return fail(ErrorCode::invalid_argument, "retain_fraction must be within [0, 10]");
  std::uint64_t page = 0;
  std::optional<VirtualRange> range;
  if (options.mode == PoolMode::Virtual) {
    if (!info.virtual_memory || info.granularity == 0)
      return fail(ErrorCode::invalid_argument, "{} has no virtual memory; use PoolMode::Segments",
                  options.device.to_string());
    page = info.granularity;
    if (options.capacity == 0) options.capacity = info.total_bytes;
    options.capacity = options.capacity / page * page;
    if (options.capacity == 0) return fail(ErrorCode::invalid_argument, "pool capacity below one page");
    auto reserved = VirtualArena::reserve(backend, options);
    if (!reserved) return fail(reserved.error());
    range = *reserved;
  } else {
    page = info.granularity != 0 ? info.granularity : 2 * kMiB;
  }
  if (options.huge_threshold == 0)
    options.huge_threshold = options.mode == PoolMode::Segments ? kGiB : ~std::uint64_t{0};
  if (options.huge_threshold < 2 * SlabAllocator::kMaxSize) options.huge_threshold = 2 * SlabAllocator::kMaxSize;
  std::unique_ptr<DevicePool> pool(new DevicePool(backend, options, page, range));
  if (range && pool->arena_->blocks().regions().empty())
    return fail(ErrorCode::internal, "the reserved range of {} could not be carved", options.device.to_string());
  return pool;
}

// ----- routing ---------------------------------------------------------------------

// The pool lock, for the calls users make: counts the times it was found
// held, and turns medium caching on at kContendedToCache.
std::unique_lock<SpinLock> DevicePool::lock_pool() {
  if (mu_.try_lock()) return std::unique_lock<SpinLock>(mu_, std::adopt_lock);
  // Counted only until caching is on: the counter shares a line with what
  // every cached call reads, and a write per contended lock would bounce it.
  if (live_blocks_ && !medium_caching_.load(std::memory_order_relaxed) &&
      contended_.fetch_add(1, std::memory_order_relaxed) + 1 == kContendedToCache)
    medium_caching_.store(true, std::memory_order_release);
  return std::unique_lock<SpinLock>(mu_);
}

void DevicePool::note_peaks() {
  footprint_.note_busy();
  counters_.peak_reserved_bytes = std::max(counters_.peak_reserved_bytes, footprint_.reserved());
  counters_.peak_active_bytes =
      std::max(counters_.peak_active_bytes, arena_->blocks().used_bytes() + huge_.live_bytes());
  // allocated and live wrap below zero for a moment when a thread's cache
  // folds in frees of blocks another thread's cache handed out and has not
  // folded yet; such a moment is no peak.
  if (static_cast<std::int64_t>(counters_.allocated_bytes) >= 0)
    counters_.peak_allocated_bytes = std::max(counters_.peak_allocated_bytes, counters_.allocated_bytes);
  if (static_cast<std::int64_t>(counters_.live_allocations) >= 0)
    counters_.peak_live_allocations = std::max(counters_.peak_live_allocations, counters_.live_allocations);
}

// A block of `size` by whichever path serves it: the thread caches (small;
// medium when contended) or the pool lock.
[[gnu::always_inline]] inline Result<std::uint64_t> DevicePool::allocate_any(std::uint64_t size) {
  // Before any cache hit: frees while asleep refill the caches.
  if (asleep_.load(std::memory_order_relaxed)) [[unlikely]]
    return std::unexpected(asleep_error());
  // Memory the home stream freed may still be in its queued work; the host
  // (no stream) takes it only after that work ran.
  if (streams_.dirty()) [[unlikely]] {
    auto lock = lock_pool();
    streams_.settle();
  }
  if (live_slots_ && size != 0 && SlabAllocator::is_small(size))
    return ThreadCaches::thread_exiting() ? uncached_small_allocate(size) : cached_allocate(size);
  if (ThreadCache::is_medium(size) && medium_caching_.load(std::memory_order_acquire) &&
      !ThreadCaches::thread_exiting() && ThreadCache::medium_bytes(ThreadCache::medium_class(size)) < opt_.huge_threshold)
    return cached_medium_allocate(size);
  auto lock = lock_pool();
  return allocate_locked(size);
}

Result<std::uint64_t> DevicePool::allocate_locked(std::uint64_t size, bool drain) {
  if (size == 0) return fail(ErrorCode::invalid_argument, "allocation size must be positive");
  // Again under the lock: sleep() sets the flag before it takes the lock to
  // list the units, so an allocation after that list sees it.
  if (asleep_.load(std::memory_order_relaxed)) [[unlikely]]
    return std::unexpected(asleep_error());
  if (size > kMaxRequestBytes || (opt_.capacity != 0 && size > opt_.capacity)) {
    ++counters_.failed_allocations;
    return fail(ErrorCode::out_of_memory, "requested {} exceeds the capacity {} of {}", format_size(size),
                format_size(opt_.capacity), opt_.device.to_string());
  }
  // Blocks whose stream-ordered free has completed go back first (one event
  // query per stream with a batch in flight; nothing when no stream is
  // used), so memory freed on streams serves every allocation without
  // waiting for an out-of-memory and the ladder.
  if (drain && streams_.any_fenced()) streams_.drain(/*wait=*/false);
  std::uint64_t bytes = 0;
  auto r = blocks_.allocate(size, bytes);
  if (!r) {
    ++counters_.failed_allocations;
    return r;
  }
  count_allocation(bytes);
  return r;
}

void DevicePool::count_allocation(std::uint64_t bytes) {
  counters_.allocated_bytes += bytes;
  ++counters_.live_allocations;
  ++counters_.total_allocations;
  note_peaks();
}

void DevicePool::count_free(std::uint64_t bytes) {
  counters_.allocated_bytes -= bytes;
  --counters_.live_allocations;
  ++counters_.total_frees;
}

// Pool lock held: the live block at `address` and its bytes, or the error a
// free of it gets (pending in stream order, or no live block).
Result<std::uint64_t> DevicePool::freeable(std::uint64_t address, bool release) {
  if (streams_.is_pending(address))
    return fail(ErrorCode::invalid_argument, "double free of {:#x} (a stream-ordered free is pending)", address);
  auto size = release ? blocks_.release(address) : blocks_.live_size(address);
  if (!size) return fail(ErrorCode::invalid_argument, "{:#x} is not a live block of this pool", address);
  return *size;
}

Result<void> DevicePool::free_locked(std::uint64_t address) {
  auto size = freeable(address, /*release=*/true);
  if (!size) return fail(size.error());
  count_free(*size);
  return {};
}

Result<void> DevicePool::refuse_double_free(std::uint64_t address) const {
  return fail(ErrorCode::invalid_argument, "double free of {:#x} (a small block that is not live)", address);
}

// Pool lock held: a free that did not go through a cache. A tracked block is
// live (its entry goes) or cached (a double free, refused). `spans_seen`:
// the spans opened when the caller's lock-free slot lookup found nothing
// (kRecheckSlot: look again regardless).
Result<void> DevicePool::free_tracked_locked(std::uint64_t address, std::uint64_t spans_seen) {
  // The table is empty until medium caching first tracks a block: no lookup
  // on the free path of a pool that never did (every replay).
  if (live_blocks_ && live_blocks_->size() != 0)
    if (auto e = live_blocks_->find(address)) {
      if (e.cached() || !live_blocks_->erase(e))
        return fail(ErrorCode::invalid_argument, "double free of {:#x} (a medium block that is not live)", address);
      auto r = free_locked(address);
      if (!r) (void)live_blocks_->insert(address, e.size());
      return r;
    }
  // A slot address here missed the lock-free lookup (its span was not open
  // then): a stale pointer. If a span opened there since, the slot must
  // still be live to be freed, or a cached slot would be freed too. (Only if
  // any span opened since: a lookup on every large free cost llama_generate
  // measurably more instructions; docs/benchmarks.md, "What a replay costs
  // on the CPU".)
  if (live_slots_ && blocks_.spans_opened() != spans_seen)
    if (const auto slot = live_slots_->find(address); slot && !take_back(address, slot))
      return refuse_double_free(address);
  return free_locked(address);
}

Result<std::uint64_t> DevicePool::allocate_on(std::uint64_t size, const Stream& stream) {
  if (size == 0) return fail(ErrorCode::invalid_argument, "allocation size must be positive");
  // Before stream reuse, which hands out blocks without allocate_locked.
  if (asleep_.load(std::memory_order_relaxed)) [[unlikely]]
    return std::unexpected(asleep_error());
  const std::uint64_t want = size > kMaxRequestBytes ? 0 : blocks_.block_bytes_for(size);
  if (auto hit = streams_.reuse(stream, want)) {
    count_allocation(want);
    return *hit;
  }
  // No event queries while the stream is captured into a CUDA graph (they
  // would invalidate the capture); memory freed since waits for later.
  const bool drain = streams_.any_fenced() && !backend_.capturing(stream);
  if (drain) streams_.drain(/*wait=*/false);
  return allocate_locked(size, /*drain=*/false);
}

Result<void> DevicePool::free_on(std::uint64_t address, const Stream& stream) {
  auto size = freeable(address, /*release=*/false);
  if (!size) return fail(size.error());
  count_free(*size);
  streams_.add(stream, address, *size);
  return {};
}

// ----- the public calls ------------------------------------------------------------

Result<void*> DevicePool::allocate(std::uint64_t size) {
  auto r = allocate_any(size);
  if (!r) return fail(r.error());
  return reinterpret_cast<void*>(*r);
}

Result<void*> DevicePool::allocate(std::uint64_t size, const Stream& stream) {
  std::lock_guard lock(mu_);
  auto r = allocate_on(size, stream);
  if (!r) return fail(r.error());
  if (const auto slot = live_slots_ ? live_slots_->find(*r) : LiveSlots::Slot{}; slot && !LiveSlots::set_live(slot))
    return fail(ErrorCode::internal, "slot {:#x} handed out twice on {}", *r, opt_.device.to_string());
  return reinterpret_cast<void*>(*r);
}

Result<void> DevicePool::deallocate(void* ptr) {
  const auto address = reinterpret_cast<std::uint64_t>(ptr);
  // Read before the lookup: a span opening after it makes the locked path look again.
  const std::uint64_t spans_seen = blocks_.spans_opened();
  if (live_slots_)
    if (auto slot = live_slots_->find(address))
      return ThreadCaches::thread_exiting() ? uncached_small_free(address, slot) : cached_free(address, slot);
  if (medium_caching_.load(std::memory_order_acquire) && !ThreadCaches::thread_exiting())
    if (auto e = live_blocks_->find(address)) return cached_medium_free(address, e);
  auto lock = lock_pool();
  return free_tracked_locked(address, spans_seen);
}

Result<void> DevicePool::deallocate(void* ptr, const Stream& stream) {
  const auto address = reinterpret_cast<std::uint64_t>(ptr);
  std::lock_guard lock(mu_);  // before the live bit, so validate() sees no half-done free
  // Looked up under the lock: spans open and close under it, so a stale
  // pointer cannot miss a span that opens between lookup and free.
  const LiveSlots::Slot slot = live_slots_ ? live_slots_->find(address) : LiveSlots::Slot{};
  if (slot && !take_back(address, slot)) return refuse_double_free(address);
  // A tracked medium block leaves the table (a cached one is not the user's).
  LiveBlocks::Entry tracked =
      live_blocks_ && live_blocks_->size() != 0 ? live_blocks_->find(address) : LiveBlocks::Entry{};
  if (tracked && (tracked.cached() || !live_blocks_->erase(tracked)))
    return fail(ErrorCode::invalid_argument, "double free of {:#x} (a medium block that is not live)", address);
  auto r = free_on(address, stream);
  if (!r && slot) (void)LiveSlots::set_live(slot);  // refused: the user still holds it
  if (!r && tracked) (void)live_blocks_->insert(address, tracked.size());
  return r;
}

std::optional<std::uint64_t> DevicePool::block_size(const void* ptr) const {
  const auto address = reinterpret_cast<std::uint64_t>(ptr);
  if (live_slots_)
    if (auto slot = live_slots_->find(address))
      return LiveSlots::is_live(slot) ? std::optional<std::uint64_t>(slot.size()) : std::nullopt;
  if (live_blocks_)
    if (auto e = live_blocks_->find(address))
      return e.cached() ? std::nullopt : std::optional<std::uint64_t>(e.size());
  std::lock_guard lock(mu_);
  if (streams_.is_pending(address)) return std::nullopt;
  return blocks_.live_size(address);
}

}  // namespace memd
