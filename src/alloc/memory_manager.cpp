// MemoryManager: the pools, and allocate/free through registry, quotas and ladder.
#include "alloc/memory_manager.hpp"

#include "memd/size.hpp"
#include "memd/text.hpp"

namespace memd {
namespace {

constexpr std::size_t kMaxNameLength = 256;
constexpr std::size_t kMaxTags = 64;
constexpr std::size_t kMaxTagLength = 128;

Result<void> check_request(const AllocationRequest& request) {
  if (request.size_bytes == 0) return fail(ErrorCode::invalid_argument, "sizeBytes must be positive");
  // Well-formed but larger than anything memd will try to place: no device can hold it.
  if (request.size_bytes > kMaxRequestBytes)
    return fail(ErrorCode::out_of_memory, "sizeBytes {} is larger than any device ({} max)", request.size_bytes,
                kMaxRequestBytes);
  if (request.memory_type == MemoryType::Unknown)
    return fail(ErrorCode::invalid_argument, "memoryType must be RAM, VRAM, SharedMemory or UnifiedMemory");
  if (auto owner = check_owner(request.owner); !owner) return owner;
  if (utf8_chars(request.name) > kMaxNameLength)
    return fail(ErrorCode::invalid_argument, "name must be at most {} characters", kMaxNameLength);
  if (request.tags.size() > kMaxTags) return fail(ErrorCode::invalid_argument, "at most {} tags", kMaxTags);
  for (const auto& t : request.tags)
    if (t.empty() || utf8_chars(t) > kMaxTagLength)
      return fail(ErrorCode::invalid_argument, "tags must be 1..{} characters", kMaxTagLength);
  return {};
}

QuotaCharge charge_of(const AllocationRecord& r) { return {r.owner, r.device, r.memory_type, r.size_bytes}; }


}  // namespace

MemoryManager::MemoryManager(const DeviceCatalog& catalog, ManagerOptions options)
    : catalog_(catalog), options_(options) {}

MemoryManager::~MemoryManager() {
  // Free what is left before the pools go, so backends see every release.
  for (auto& e : registry_.take_all()) (void)finish_free(e);
  pools_.clear();
}

const DeviceCatalog& MemoryManager::catalog() const noexcept { return catalog_; }

std::uint64_t MemoryManager::pinned_limit() const noexcept {
  if (options_.pinned_limit_bytes != 0) return options_.pinned_limit_bytes;
  auto cpu = catalog_.info(DeviceId::cpu());
  return cpu && cpu->total_bytes != 0 ? cpu->total_bytes / 4 : 0;
}

Result<std::pair<Backend*, PoolOptions>> MemoryManager::pool_options(DeviceId device, MemoryType type) const {
  auto backend = catalog_.backend_for(device, type);
  if (!backend) return fail(backend.error());
  auto info = catalog_.info(device);
  PoolOptions po;
  po.device = device;
  po.memory_type = type;
  bool virtual_ok = info && info->virtual_memory && type == MemoryType::VRAM;
  po.mode = virtual_ok ? PoolMode::Virtual : PoolMode::Segments;
  if (auto policy = options_.pool_policies.find(device); policy != options_.pool_policies.end())
    po.policy = policy->second;
  // The fraction caps every pool, so memd never claims a device whole.
  if (info && info->total_bytes != 0)
    po.capacity = static_cast<std::uint64_t>(static_cast<double>(info->total_bytes) * options_.max_device_fraction);
  if (device == DeviceId::cpu() && type == MemoryType::SharedMemory) po.capacity = pinned_limit();
  return std::pair{*backend, po};
}

Result<DevicePool*> MemoryManager::pool_for(DeviceId device, MemoryType type) {
  std::lock_guard lock(pools_mu_);
  PoolKey key{device, type};
  if (auto it = pools_.find(key); it != pools_.end()) return it->second.get();
  auto made = pool_options(device, type);
  if (!made) return fail(made.error());
  auto created = DevicePool::create(*made->first, made->second);
  if (!created) return fail(created.error());
  auto* raw = created->get();
  pools_.emplace(key, std::move(*created));
  return raw;
}

DeviceId MemoryManager::default_device_for(MemoryType type) const {
  switch (type) {
    case MemoryType::VRAM: return catalog_.default_device();
    case MemoryType::UnifiedMemory: {
      auto d = catalog_.default_device();
      return d.kind() == DeviceKind::Cuda ? d : DeviceId::cpu();
    }
    default: return DeviceId::cpu();
  }
}

Result<AllocationRecord> MemoryManager::allocate(const AllocationRequest& request) {
  if (auto ok = check_request(request); !ok) return fail(ok.error());
  DeviceId device = request.device.value_or(default_device_for(request.memory_type));
  auto pool = pool_for(device, request.memory_type);
  if (!pool) return fail(pool.error());

  const QuotaCharge charge{request.owner, device, request.memory_type, request.size_bytes};
  if (auto q = quotas_.reserve(charge); !q) return fail(q.error());
  auto entry = std::make_shared<AllocationRegistry::Entry>();
  void* block = nullptr;
  if (request.exportable) {
    auto shareable = allocate_shareable(device, request);
    if (!shareable) {
      quotas_.cancel(charge);
      return fail(shareable.error());
    }
    block = shareable->segment.ptr;
    entry->backend = &(*pool)->backend();
    entry->shareable = *shareable;
    {
      std::lock_guard lock(pools_mu_);
      auto& [bytes, count] = exportable_[device];
      bytes += shareable->segment.size;
      ++count;
    }
  } else {
    // No lock held here: reclaim callbacks may call back into the manager.
    auto ptr = ladder_.allocate(**pool, request.size_bytes);
    if (!ptr) {
      quotas_.cancel(charge);
      return fail(ptr.error());
    }
    block = *ptr;
    entry->pool = *pool;
    entry->backend = &(*pool)->backend();
  }

  auto& r = entry->record;
  r.id = AllocationId::generate();
  r.owner = request.owner;
  r.name = request.name;
  r.device = device;
  r.memory_type = request.memory_type;
  r.allocation_type = request.allocation_type;
  r.status = MemoryAllocationStatus::Allocated;
  r.priority = request.priority;
  r.size_bytes = request.size_bytes;
  r.address = reinterpret_cast<std::uint64_t>(block);
  r.tags = request.tags;
  r.pinned = request.pinned || request.exportable;
  r.exportable = request.exportable;
  r.created_at = r.last_used_at = Clock::now();
  entry->ptr = block;
  AllocationRecord copy = r;
  {
    std::shared_lock books(books_mu_);
    auto keep = entry;
    if (auto inserted = registry_.insert(std::move(entry)); !inserted) {
      quotas_.cancel(charge);
      (void)finish_free(keep);
      return fail(inserted.error());
    }
    quotas_.land(charge);
  }
  return copy;
}

Result<AllocationRecord> MemoryManager::deallocate(const AllocationId& id) {
  AllocationRegistry::FreeStart start;
  {
    std::shared_lock books(books_mu_);
    auto begun = registry_.begin_free(id);
    if (!begun) return fail(begun.error());
    start = std::move(*begun);
    // owner, size never change after insertion, device and type only under
    // a hold (a move), which a free with no hold cannot meet.
    if (!start.deferred) quotas_.release(charge_of(start.entry->record));
  }
  // Held: the last hold may let go (and unlink it) at any moment now, so
  // the record is the copy taken when it was marked.
  if (start.deferred) return start.record;
  if (auto r = finish_free(start.entry); !r) return fail(r.error());
  // A copy: get() may still be copying entry->record (it found the entry
  // before it was unlinked), so the shared record is never written here. No
  // touch() can run now (they hold io), so reading it whole is safe.
  AllocationRecord freed = start.entry->record;
  freed.status = MemoryAllocationStatus::Freed;
  return freed;
}

Result<ShareableSegment> MemoryManager::allocate_shareable(DeviceId device, const AllocationRequest& request) {
  auto backend = catalog_.backend_for(device, request.memory_type);
  if (!backend) return fail(backend.error());
  // Made directly, not through the ladder: an exportable allocation is not
  // pool memory, so trimming pools is the only help; try once more after it.
  auto made = (*backend)->allocate_shareable(device, request.memory_type, request.size_bytes);
  if (!made && made.error().code == ErrorCode::out_of_memory) {
    trim();
    made = (*backend)->allocate_shareable(device, request.memory_type, request.size_bytes);
  }
  return made;
}

Result<std::pair<int, ShareableSegment>> MemoryManager::export_fd(const AllocationHold& hold) {
  const auto& entry = hold.entry();
  if (!entry.shareable)
    return fail(ErrorCode::conflict, "allocation {} is not exportable: allocate it with \"exportable\": true",
                hold.id().to_string());
  auto fd = entry.backend->export_fd(*entry.shareable);
  if (!fd) return fail(fd.error());
  return std::pair{*fd, *entry.shareable};
}

Result<void> MemoryManager::finish_free(const AllocationRegistry::EntryPtr& entry) {
  std::unique_lock io(entry->io);  // wait for in-flight reads/writes
  if (entry->shareable) {
    {
      std::lock_guard lock(pools_mu_);
      auto& [bytes, count] = exportable_[entry->record.device];
      bytes -= std::min(bytes, entry->shareable->segment.size);
      count -= std::min<std::uint64_t>(count, 1);
    }
    return entry->backend->free_shareable(*entry->shareable);
  }
  if (auto r = entry->pool->deallocate(entry->ptr); !r)
    return fail(ErrorCode::internal, "registry and pool disagree on {}: {}", entry->record.id.to_string(),
                r.error().message);
  return {};
}

Result<AllocationRecord> MemoryManager::get(const AllocationId& id) const { return registry_.get(id); }

std::vector<AllocationRecord> MemoryManager::list(const AllocationFilter& filter) const {
  return registry_.list(filter);
}

Result<AllocationHold> MemoryManager::hold(const AllocationId& id) {
  auto entry = registry_.hold(id);
  if (!entry) return fail(entry.error());
  return AllocationHold(this, std::move(*entry));
}

void MemoryManager::touch(const AllocationHold& hold) { registry_.touch(hold.entry()); }

Result<void> MemoryManager::set_exported(const AllocationId& id, bool exported) {
  auto held = hold(id);
  if (!held) return fail(held.error());
  registry_.set_status(held->entry(), exported ? MemoryAllocationStatus::Exported : MemoryAllocationStatus::Allocated);
  return {};
}

Result<void> MemoryManager::rename(const AllocationId& id, std::string name) {
  auto held = hold(id);
  if (!held) return fail(held.error());
  registry_.set_name(held->entry(), std::move(name));
  return {};
}

void MemoryManager::unhold(AllocationRegistry::Entry& entry) noexcept {
  AllocationRegistry::EntryPtr gone;
  {
    std::shared_lock books(books_mu_);
    gone = registry_.unhold(entry);
    if (gone) quotas_.release(charge_of(gone->record));
  }
  // A deferred free lands here; nobody is left to tell of a failure, which
  // only a registry/pool disagreement (a bug validate() reports) could cause.
  if (gone) (void)finish_free(gone);
}

Result<MemoryManager::MoveTarget> MemoryManager::reserve_move(const AllocationHold& hold, DeviceId device,
                                                              MemoryType type) {
  auto& entry = hold.entry();
  auto record = registry_.get(hold.id());
  if (!record) return fail(record.error());
  if (record->pinned)
    return fail(ErrorCode::conflict, "allocation {} is pinned: it never moves", hold.id().to_string());
  if (record->status == MemoryAllocationStatus::Exported)
    return fail(ErrorCode::conflict, "allocation {} is exported: it stays where other processes map it",
                hold.id().to_string());
  if (record->status == MemoryAllocationStatus::Moving)
    return fail(ErrorCode::conflict, "allocation {} is being moved already", hold.id().to_string());
  if (record->device == device && record->memory_type == type)
    return fail(ErrorCode::conflict, "allocation {} is on {} {} already", hold.id().to_string(),
                device.to_string(), to_string(type));
  if (type == MemoryType::Unknown) return fail(ErrorCode::invalid_argument, "a move needs a memory type");
  auto pool = pool_for(device, type);
  if (!pool) return fail(pool.error());
  const QuotaCharge charge{record->owner, device, type, record->size_bytes};
  if (auto q = quotas_.reserve(charge); !q) return fail(q.error());
  auto ptr = ladder_.allocate(**pool, record->size_bytes);
  if (!ptr) {
    quotas_.cancel(charge);
    return fail(ptr.error());
  }
  registry_.set_status(entry, MemoryAllocationStatus::Moving);
  return MoveTarget{*pool, *ptr, device, type};
}

Result<AllocationRecord> MemoryManager::commit_move(const AllocationHold& hold, const MoveTarget& target) {
  auto& entry = hold.entry();
  DevicePool* old_pool = nullptr;
  void* old_ptr = nullptr;
  {
    std::unique_lock io(entry.io);  // readers of the old block finish first
    old_pool = entry.pool;
    old_ptr = entry.ptr;
    const QuotaCharge old_charge = charge_of(entry.record);
    const QuotaCharge new_charge{old_charge.owner, target.device, target.type, old_charge.bytes};
    std::shared_lock books(books_mu_);
    registry_.relocate(entry, target.pool, &target.pool->backend(), target.ptr, target.device, target.type);
    quotas_.land(new_charge);
    quotas_.release(old_charge);
  }
  registry_.set_status(entry, MemoryAllocationStatus::Allocated);
  if (auto r = old_pool->deallocate(old_ptr); !r)
    return fail(ErrorCode::internal, "the old block of moved allocation {} was not live: {}",
                hold.id().to_string(), r.error().message);
  auto record = registry_.get(hold.id());
  if (!record) {  // freed meanwhile: its final record
    AllocationRecord gone = entry.record;
    return gone;
  }
  return record;
}

void MemoryManager::abort_move(const AllocationHold& hold, const MoveTarget& target) {
  auto& entry = hold.entry();
  quotas_.cancel({entry.record.owner, target.device, target.type, entry.record.size_bytes});
  (void)target.pool->deallocate(target.ptr);
  registry_.set_status(entry, MemoryAllocationStatus::Allocated);
}

Result<void> MemoryManager::set_limits(const Limits& limits) {
  for (const auto& [device, bytes] : limits.per_device)
    if (!catalog_.info(device)) return fail(ErrorCode::not_found, "no device {}", device.to_string());
  return quotas_.set_limits(limits);
}

Limits MemoryManager::limits() const { return quotas_.limits(); }

std::map<PoolKey, PoolStats> MemoryManager::pool_stats() const {
  std::lock_guard lock(pools_mu_);
  std::map<PoolKey, PoolStats> out;
  for (const auto& [key, pool] : pools_) out.emplace(key, pool->stats());
  return out;
}

std::map<std::string, OwnerUsage> MemoryManager::usage_by_owner() const { return quotas_.usage_by_owner(); }
std::map<DeviceId, std::uint64_t> MemoryManager::requested_by_device() const { return quotas_.usage_by_device(); }
std::map<MemoryType, std::uint64_t> MemoryManager::requested_by_type() const { return quotas_.usage_by_type(); }

std::uint64_t MemoryManager::trim() {
  std::lock_guard lock(pools_mu_);
  std::uint64_t released = 0;
  for (auto& [key, pool] : pools_) released += pool->trim();
  return released;
}

std::map<PoolKey, TrimForecast> MemoryManager::trim_forecasts() const {
  std::lock_guard lock(pools_mu_);
  std::map<PoolKey, TrimForecast> out;
  for (const auto& [key, pool] : pools_) out.emplace(key, pool->trim_forecast());
  return out;
}

std::vector<AllocationRecord> MemoryManager::free_matching(const AllocationFilter& filter, bool include_pinned) {
  std::vector<AllocationId> ids;
  registry_.for_each([&](const AllocationRegistry::Entry& e) {
    if (matches(e.record, filter) && (include_pinned || !e.record.pinned)) ids.push_back(e.record.id);
    return true;
  });
  // Freed one by one, unlocked: one that went meanwhile is skipped.
  std::vector<AllocationRecord> freed;
  for (const auto& id : ids)
    if (auto r = deallocate(id)) freed.push_back(std::move(*r));
  return freed;
}

std::uint64_t MemoryManager::add_reclaim_callback(ReclaimCallback callback) {
  return ladder_.add_callback(std::move(callback));
}

std::uint64_t MemoryManager::add_release_callback(ReleaseCallback callback) {
  return ladder_.add_release_callback(std::move(callback));
}

void MemoryManager::remove_reclaim_callback(std::uint64_t handle) { ladder_.remove_callback(handle); }

std::uint64_t MemoryManager::release_cached(DeviceId device) {
  // Pools live as long as the manager: pointers taken under the lock stay
  // good after it, and the callbacks run unlocked.
  std::vector<DevicePool*> pools;
  {
    std::lock_guard lock(pools_mu_);
    for (auto& [key, pool] : pools_)
      if (key.device == device) pools.push_back(pool.get());
  }
  std::uint64_t released = 0;
  for (DevicePool* pool : pools) released += ladder_.release_cached(*pool);
  return released;
}

std::uint64_t MemoryManager::reclaim(DeviceId device, MemoryType type, std::uint64_t needed) {
  return ladder_.reclaim(device, type, needed);
}

MemoryManager::DeviceCounters MemoryManager::device_counters(DeviceId device) const {
  DeviceCounters out;
  std::lock_guard lock(pools_mu_);
  for (const auto& [key, pool] : pools_) {
    if (key.device != device) continue;
    const PoolStats c = pool->counters();
    out.allocated_bytes += c.allocated_bytes;
    out.reserved_bytes += c.reserved_bytes;
    out.allocations += c.live_allocations;
    out.pools.emplace(key.memory_type, c);
  }
  if (auto it = exportable_.find(device); it != exportable_.end()) {
    out.exportable_bytes = it->second.first;
    out.exportable_allocations = it->second.second;
    out.allocated_bytes += it->second.first;
    out.reserved_bytes += it->second.first;
    out.allocations += it->second.second;
  }
  return out;
}

ReclaimLadderCounts MemoryManager::reclaim_counts() const { return ladder_.counts(); }

Result<DevicePool*> MemoryManager::pool(DeviceId device, MemoryType type) { return pool_for(device, type); }

Result<std::unique_ptr<DevicePool>> MemoryManager::create_pool(DeviceId device, MemoryType type, std::string region) {
  auto made = pool_options(device, type);
  if (!made) return fail(made.error());
  made->second.region = std::move(region);
  return DevicePool::create(*made->first, made->second);
}

std::map<PoolKey, std::vector<SegmentInfo>> MemoryManager::snapshot() const {
  std::lock_guard lock(pools_mu_);
  std::map<PoolKey, std::vector<SegmentInfo>> out;
  for (const auto& [key, pool] : pools_) out.emplace(key, pool->snapshot());
  return out;
}

Result<void> MemoryManager::validate() const {
  {
    std::lock_guard lock(pools_mu_);
    for (const auto& [key, pool] : pools_)
      if (auto r = pool->validate(); !r) return r;
  }
  std::unique_lock books(books_mu_);
  std::map<std::string, OwnerUsage> registered;
  Result<void> blocks;
  registry_.for_each([&](const AllocationRegistry::Entry& e) {
    auto size = e.shareable ? std::optional<std::uint64_t>(e.shareable->segment.size) : e.pool->block_size(e.ptr);
    if (!size || *size < e.record.size_bytes) {
      blocks = fail(ErrorCode::internal, "allocation {} has no live block of its size", e.record.id.to_string());
      return false;
    }
    registered[e.record.owner].bytes += e.record.size_bytes;
    registered[e.record.owner].allocations += 1;
    return true;
  });
  if (!blocks) return blocks;
  return quotas_.reconcile(registered);
}

}  // namespace memd
