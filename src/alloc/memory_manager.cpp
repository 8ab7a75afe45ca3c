// MemoryManager: registry, limits, pools and the reclaim ladder.
#include "alloc/memory_manager.hpp"

#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "memd/size.hpp"

namespace memd {
namespace {

constexpr std::size_t kMaxOwnerLength = 256;
constexpr std::size_t kMaxNameLength = 256;
constexpr std::size_t kMaxTags = 64;
constexpr std::size_t kMaxTagLength = 128;

}  // namespace

struct MemoryManager::Impl {
  // One registry entry. io guards the bytes: reads/writes hold it shared,
  // deallocation takes it exclusively after unlinking, so a free waits for
  // in-flight copies instead of pulling memory from under them.
  struct Entry {
    AllocationRecord record;
    DevicePool* pool = nullptr;
    void* ptr = nullptr;
    std::shared_mutex io;
  };

  Impl(const DeviceCatalog& c, ManagerOptions o) : catalog(c), options(o) {}

  const DeviceCatalog& catalog;
  ManagerOptions options;

  mutable std::mutex pools_mu;
  std::map<PoolKey, std::unique_ptr<DevicePool>> pools;

  mutable std::mutex mu;  // registry, usage counters, limits
  std::unordered_map<AllocationId, std::shared_ptr<Entry>> entries;
  std::map<std::string, OwnerUsage> by_owner;
  // Quota counted for allocations still on their way to the registry, so
  // validate() can reconcile counters while allocations are in flight.
  std::map<std::string, OwnerUsage> in_flight;
  std::map<DeviceId, std::uint64_t> by_device;
  std::map<MemoryType, std::uint64_t> by_type;
  Limits limits;

  std::mutex reclaim_mu;
  std::map<std::uint64_t, ReclaimCallback> reclaimers;
  std::uint64_t next_reclaimer = 1;

  Result<DevicePool*> pool_for(DeviceId device, MemoryType type) {
    std::lock_guard lock(pools_mu);
    PoolKey key{device, type};
    if (auto it = pools.find(key); it != pools.end()) return it->second.get();
    auto backend = catalog.backend_for(device, type);
    if (!backend) return fail(backend.error());
    auto info = catalog.info(device);
    PoolOptions po;
    po.device = device;
    po.memory_type = type;
    bool virtual_ok = info && info->virtual_memory && type == MemoryType::VRAM;
    po.mode = virtual_ok ? PoolMode::Virtual : PoolMode::Segments;
    // The fraction caps every pool, so memd never claims a device whole.
    if (info && info->total_bytes != 0)
      po.capacity = static_cast<std::uint64_t>(static_cast<double>(info->total_bytes) * options.max_device_fraction);
    auto created = DevicePool::create(**backend, po);
    if (!created) return fail(created.error());
    auto* raw = created->get();
    pools.emplace(key, std::move(*created));
    return raw;
  }

  DeviceId default_device_for(MemoryType type) const {
    switch (type) {
      case MemoryType::VRAM: return catalog.default_device();
      case MemoryType::UnifiedMemory: {
        auto d = catalog.default_device();
        return d.kind() == DeviceKind::Cuda ? d : DeviceId::cpu();
      }
      default: return DeviceId::cpu();
    }
  }

  // Checks limits for `size` more bytes; on success the bytes are counted.
  Result<void> reserve_quota(const AllocationRequest& r, DeviceId device, std::uint64_t size) {
    auto check = [&](auto& table, const auto& key, std::uint64_t used, std::string_view scope) -> Result<void> {
      auto it = table.find(key);
      if (it == table.end()) return {};
      if (used + size > it->second)
        return fail(ErrorCode::quota_exceeded,
                    "{} limit exceeded: requested {} ({} bytes), in use {} ({} bytes), limit {} ({} bytes)", scope,
                    format_size(size), size, format_size(used), used, format_size(it->second), it->second);
      return {};
    };
    std::uint64_t dev_used = by_device.contains(device) ? by_device[device] : 0;
    std::uint64_t type_used = by_type.contains(r.memory_type) ? by_type[r.memory_type] : 0;
    std::uint64_t owner_used = by_owner.contains(r.owner) ? by_owner[r.owner].bytes : 0;
    if (auto c = check(limits.per_device, device, dev_used, "device " + device.to_string()); !c) return c;
    if (auto c = check(limits.per_memory_type, r.memory_type, type_used,
                       "memory type " + std::string(to_string(r.memory_type)));
        !c)
      return c;
    if (auto c = check(limits.per_owner, r.owner, owner_used, "owner '" + r.owner + "'"); !c) return c;
    by_device[device] += size;
    by_type[r.memory_type] += size;
    auto& o = by_owner[r.owner];
    o.bytes += size;
    o.allocations += 1;
    auto& f = in_flight[r.owner];
    f.bytes += size;
    f.allocations += 1;
    return {};
  }

  // The allocation reached the registry (or failed): it is no longer in flight.
  void land(const std::string& owner, std::uint64_t size) {
    auto it = in_flight.find(owner);
    if (it == in_flight.end()) return;
    it->second.bytes -= size;
    it->second.allocations -= 1;
    if (it->second.allocations == 0) in_flight.erase(it);
  }

  void return_quota(const std::string& owner, DeviceId device, MemoryType type, std::uint64_t size) {
    by_device[device] -= size;
    if (by_device[device] == 0) by_device.erase(device);
    by_type[type] -= size;
    if (by_type[type] == 0) by_type.erase(type);
    auto it = by_owner.find(owner);
    if (it != by_owner.end()) {
      it->second.bytes -= size;
      it->second.allocations -= 1;
      if (it->second.allocations == 0) by_owner.erase(it);
    }
  }

  std::uint64_t run_reclaimers(DeviceId device, MemoryType type, std::uint64_t needed) {
    std::vector<ReclaimCallback> callbacks;
    {
      std::lock_guard lock(reclaim_mu);
      for (auto& [id, cb] : reclaimers) callbacks.push_back(cb);
    }
    std::uint64_t freed = 0;
    for (auto& cb : callbacks) {
      if (freed >= needed) break;
      freed += cb(device, type, needed - freed);
    }
    return freed;
  }

  std::string shortfall_numbers(DevicePool& pool, DeviceId device, std::uint64_t size) {
    auto s = pool.stats();
    std::string free_text = "unknown";
    if (auto backend = catalog.backend_for(device, pool.options().memory_type))
      if (auto mi = (*backend)->memory_info(device)) free_text = format_size(mi->free_bytes);
    return fmt::format(
        "requested {} ({} bytes) on {}: device free {}, memd reserved {}, allocated {}, largest free block {}, "
        "fragmentation {:.3f}, capacity {}",
        format_size(size), size, device.to_string(), free_text, format_size(s.reserved_bytes),
        format_size(s.allocated_bytes), format_size(s.largest_free_block), s.fragmentation,
        format_size(pool.options().capacity));
  }

  bool matches(const AllocationRecord& r, const AllocationFilter& f) const {
    if (f.device && r.device != *f.device) return false;
    if (f.memory_type && r.memory_type != *f.memory_type) return false;
    if (f.owner && r.owner != *f.owner) return false;
    if (f.status && r.status != *f.status) return false;
    if (f.tag && std::find(r.tags.begin(), r.tags.end(), *f.tag) == r.tags.end()) return false;
    if (f.below_priority && !(r.priority < *f.below_priority)) return false;
    return true;
  }

  Result<std::shared_ptr<Entry>> find(const AllocationId& id) const {
    std::lock_guard lock(mu);
    auto it = entries.find(id);
    if (it == entries.end()) return fail(ErrorCode::not_found, "no allocation {}", id.to_string());
    return it->second;
  }

  Result<void> copy_sync(Backend& backend, DeviceId device, void* dst, const void* src, std::uint64_t n) {
    Stream stream{device, 0};
    if (auto r = backend.copy(dst, src, n, stream); !r) return r;
    return backend.synchronize(stream);
  }
};

MemoryManager::MemoryManager(const DeviceCatalog& catalog, ManagerOptions options)
    : impl_(std::make_unique<Impl>(catalog, options)) {}

MemoryManager::~MemoryManager() {
  // Free what is left before the pools go, so backends see every release.
  if (!impl_) return;
  for (auto& [id, e] : impl_->entries) (void)e->pool->deallocate(e->ptr);
  impl_->entries.clear();
  impl_->pools.clear();
}

const DeviceCatalog& MemoryManager::catalog() const noexcept { return impl_->catalog; }

Result<AllocationRecord> MemoryManager::allocate(const AllocationRequest& request) {
  auto& m = *impl_;
  if (request.size_bytes == 0) return fail(ErrorCode::invalid_argument, "sizeBytes must be positive");
  if (request.size_bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "sizeBytes {} is larger than any device ({} max)", request.size_bytes,
                kMaxRequestBytes);
  if (request.memory_type == MemoryType::Unknown)
    return fail(ErrorCode::invalid_argument, "memoryType must be RAM, VRAM, SharedMemory or UnifiedMemory");
  if (request.owner.empty() || request.owner.size() > kMaxOwnerLength)
    return fail(ErrorCode::invalid_argument, "owner must be 1..{} characters", kMaxOwnerLength);
  if (request.name.size() > kMaxNameLength)
    return fail(ErrorCode::invalid_argument, "name must be at most {} characters", kMaxNameLength);
  if (request.tags.size() > kMaxTags) return fail(ErrorCode::invalid_argument, "at most {} tags", kMaxTags);
  for (const auto& t : request.tags)
    if (t.empty() || t.size() > kMaxTagLength)
      return fail(ErrorCode::invalid_argument, "tags must be 1..{} characters", kMaxTagLength);

  DeviceId device = request.device.value_or(m.default_device_for(request.memory_type));
  auto pool = m.pool_for(device, request.memory_type);
  if (!pool) return fail(pool.error());
  {
    std::lock_guard lock(m.mu);
    if (auto q = m.reserve_quota(request, device, request.size_bytes); !q) return fail(q.error());
  }
  auto unreserve = [&] {
    std::lock_guard lock(m.mu);
    m.land(request.owner, request.size_bytes);
    m.return_quota(request.owner, device, request.memory_type, request.size_bytes);
  };
  // A request the pool can never hold must not evict anything on its way to failing.
  if (std::uint64_t cap = (*pool)->options().capacity; cap != 0 && request.size_bytes > cap) {
    unreserve();
    return fail(ErrorCode::out_of_memory, "out of memory: {} (larger than the pool's capacity)",
                m.shortfall_numbers(**pool, device, request.size_bytes));
  }

  // The ladder: allocate; trim cached memory and retry; ask reclaimers and retry.
  auto ptr = (*pool)->allocate(request.size_bytes);
  if (!ptr && ptr.error().code == ErrorCode::out_of_memory) {
    (*pool)->trim();
    ptr = (*pool)->allocate(request.size_bytes);
    if (!ptr && ptr.error().code == ErrorCode::out_of_memory &&
        m.run_reclaimers(device, request.memory_type, request.size_bytes) > 0)
      ptr = (*pool)->allocate(request.size_bytes);
    if (!ptr && ptr.error().code == ErrorCode::out_of_memory) {
      unreserve();
      return fail(ErrorCode::out_of_memory, "out of memory: {} ({})", m.shortfall_numbers(**pool, device, request.size_bytes),
                  ptr.error().message);
    }
  }
  if (!ptr) {
    unreserve();
    return fail(ptr.error());
  }

  auto entry = std::make_shared<Impl::Entry>();
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
  r.address = reinterpret_cast<std::uint64_t>(*ptr);
  r.tags = request.tags;
  r.pinned = request.pinned;
  r.created_at = r.last_used_at = Clock::now();
  entry->pool = *pool;
  entry->ptr = *ptr;
  AllocationRecord copy = r;
  std::lock_guard lock(m.mu);
  m.land(request.owner, request.size_bytes);
  m.entries.emplace(r.id, std::move(entry));
  return copy;
}

Result<AllocationRecord> MemoryManager::deallocate(const AllocationId& id) {
  auto& m = *impl_;
  std::shared_ptr<Impl::Entry> entry;
  {
    std::lock_guard lock(m.mu);
    auto it = m.entries.find(id);
    if (it == m.entries.end()) return fail(ErrorCode::not_found, "no allocation {}", id.to_string());
    entry = std::move(it->second);
    m.entries.erase(it);
    m.return_quota(entry->record.owner, entry->record.device, entry->record.memory_type, entry->record.size_bytes);
  }
  std::unique_lock io(entry->io);  // wait for in-flight reads/writes
  if (auto r = entry->pool->deallocate(entry->ptr); !r)
    return fail(ErrorCode::internal, "registry and pool disagree on {}: {}", id.to_string(), r.error().message);
  // A copy: get() may still be copying entry->record under mu (it found the
  // entry before it was unlinked), so the shared record is never written here.
  AllocationRecord freed = entry->record;
  freed.status = MemoryAllocationStatus::Freed;
  return freed;
}

Result<AllocationRecord> MemoryManager::get(const AllocationId& id) const {
  auto e = impl_->find(id);
  if (!e) return fail(e.error());
  std::lock_guard lock(impl_->mu);
  return (*e)->record;
}

std::vector<AllocationRecord> MemoryManager::list(const AllocationFilter& filter) const {
  std::vector<AllocationRecord> out;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [id, e] : impl_->entries)
      if (impl_->matches(e->record, filter)) out.push_back(e->record);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.created_at != b.created_at ? a.created_at > b.created_at : a.id < b.id;
  });
  return out;
}

Result<void> MemoryManager::write(const AllocationId& id, std::uint64_t offset, std::span<const std::byte> data) {
  auto e = impl_->find(id);
  if (!e) return fail(e.error());
  auto& entry = **e;
  std::shared_lock io(entry.io);
  std::uint64_t size = entry.record.size_bytes;
  if (offset > size || data.size() > size - offset)
    return fail(ErrorCode::invalid_argument, "write of {} bytes at offset {} is outside the allocation of {} bytes",
                data.size(), offset, size);
  if (data.empty()) return {};
  auto& backend = entry.pool->backend();
  if (auto r = impl_->copy_sync(backend, entry.record.device, static_cast<std::byte*>(entry.ptr) + offset,
                                data.data(), data.size());
      !r)
    return r;
  std::lock_guard lock(impl_->mu);
  entry.record.last_used_at = Clock::now();
  return {};
}

Result<std::vector<std::byte>> MemoryManager::read(const AllocationId& id, std::uint64_t offset, std::uint64_t length) {
  auto e = impl_->find(id);
  if (!e) return fail(e.error());
  auto& entry = **e;
  std::shared_lock io(entry.io);
  std::uint64_t size = entry.record.size_bytes;
  if (offset > size || length > size - offset)
    return fail(ErrorCode::invalid_argument, "read of {} bytes at offset {} is outside the allocation of {} bytes",
                length, offset, size);
  std::vector<std::byte> out(length);
  if (length == 0) return out;
  auto& backend = entry.pool->backend();
  if (auto r = impl_->copy_sync(backend, entry.record.device, out.data(),
                                static_cast<const std::byte*>(entry.ptr) + offset, length);
      !r)
    return fail(r.error());
  std::lock_guard lock(impl_->mu);
  entry.record.last_used_at = Clock::now();
  return out;
}

Result<void> MemoryManager::set_limits(const Limits& limits) {
  for (const auto& [device, bytes] : limits.per_device) {
    if (!impl_->catalog.info(device)) return fail(ErrorCode::not_found, "no device {}", device.to_string());
    if (bytes > kMaxRequestBytes) return fail(ErrorCode::invalid_argument, "limit out of range");
  }
  for (const auto& [type, bytes] : limits.per_memory_type) {
    if (type == MemoryType::Unknown) return fail(ErrorCode::invalid_argument, "no limit for memory type Unknown");
    if (bytes > kMaxRequestBytes) return fail(ErrorCode::invalid_argument, "limit out of range");
  }
  for (const auto& [owner, bytes] : limits.per_owner) {
    if (owner.empty() || owner.size() > kMaxOwnerLength)
      return fail(ErrorCode::invalid_argument, "owner must be 1..{} characters", kMaxOwnerLength);
    if (bytes > kMaxRequestBytes) return fail(ErrorCode::invalid_argument, "limit out of range");
  }
  std::lock_guard lock(impl_->mu);
  impl_->limits = limits;
  return {};
}

Limits MemoryManager::limits() const {
  std::lock_guard lock(impl_->mu);
  return impl_->limits;
}

std::map<PoolKey, PoolStats> MemoryManager::pool_stats() const {
  std::lock_guard lock(impl_->pools_mu);
  std::map<PoolKey, PoolStats> out;
  for (const auto& [key, pool] : impl_->pools) out.emplace(key, pool->stats());
  return out;
}

std::map<std::string, OwnerUsage> MemoryManager::usage_by_owner() const {
  std::lock_guard lock(impl_->mu);
  return impl_->by_owner;
}

std::uint64_t MemoryManager::trim() {
  std::lock_guard lock(impl_->pools_mu);
  std::uint64_t released = 0;
  for (auto& [key, pool] : impl_->pools) released += pool->trim();
  return released;
}

std::vector<AllocationRecord> MemoryManager::free_matching(const AllocationFilter& filter, bool include_pinned) {
  std::vector<AllocationId> ids;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [id, e] : impl_->entries)
      if (impl_->matches(e->record, filter) && (include_pinned || !e->record.pinned)) ids.push_back(id);
  }
  std::vector<AllocationRecord> freed;
  for (const auto& id : ids)
    if (auto r = deallocate(id)) freed.push_back(std::move(*r));
  return freed;
}

std::uint64_t MemoryManager::add_reclaim_callback(ReclaimCallback callback) {
  std::lock_guard lock(impl_->reclaim_mu);
  auto id = impl_->next_reclaimer++;
  impl_->reclaimers.emplace(id, std::move(callback));
  return id;
}

void MemoryManager::remove_reclaim_callback(std::uint64_t handle) {
  std::lock_guard lock(impl_->reclaim_mu);
  impl_->reclaimers.erase(handle);
}

Result<DevicePool*> MemoryManager::pool(DeviceId device, MemoryType type) { return impl_->pool_for(device, type); }

std::map<PoolKey, std::vector<SegmentInfo>> MemoryManager::snapshot() const {
  std::lock_guard lock(impl_->pools_mu);
  std::map<PoolKey, std::vector<SegmentInfo>> out;
  for (const auto& [key, pool] : impl_->pools) out.emplace(key, pool->snapshot());
  return out;
}

Result<void> MemoryManager::validate() const {
  {
    std::lock_guard lock(impl_->pools_mu);
    for (const auto& [key, pool] : impl_->pools)
      if (auto r = pool->validate(); !r) return r;
  }
  std::lock_guard lock(impl_->mu);
  std::map<std::string, OwnerUsage> owners = impl_->in_flight;
  for (const auto& [id, e] : impl_->entries) {
    auto size = e->pool->block_size(e->ptr);
    if (!size || *size < e->record.size_bytes)
      return fail(ErrorCode::internal, "allocation {} has no live block of its size", id.to_string());
    owners[e->record.owner].bytes += e->record.size_bytes;
    owners[e->record.owner].allocations += 1;
  }
  for (const auto& [owner, u] : owners) {
    auto it = impl_->by_owner.find(owner);
    if (it == impl_->by_owner.end() || it->second.bytes != u.bytes || it->second.allocations != u.allocations)
      return fail(ErrorCode::internal, "usage counters of owner '{}' disagree with the registry", owner);
  }
  if (owners.size() != impl_->by_owner.size()) return fail(ErrorCode::internal, "stale owner usage entries");
  return {};
}

}  // namespace memd
