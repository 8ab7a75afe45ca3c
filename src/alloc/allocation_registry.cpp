// AllocationRegistry: GUID → entry under one mutex.
#include "alloc/allocation_registry.hpp"

#include <algorithm>

namespace memd {

bool matches(const AllocationRecord& r, const AllocationFilter& f) {
  if (f.device && r.device != *f.device) return false;
  if (f.memory_type && r.memory_type != *f.memory_type) return false;
  if (f.owner && r.owner != *f.owner) return false;
  if (f.status && r.status != *f.status) return false;
  if (f.tag && std::find(r.tags.begin(), r.tags.end(), *f.tag) == r.tags.end()) return false;
  if (f.below_priority && !(r.priority < *f.below_priority)) return false;
  return true;
}

Result<void> AllocationRegistry::insert(EntryPtr entry) {
  std::lock_guard lock(mu_);
  const AllocationId id = entry->record.id;
  if (!entries_.emplace(id, std::move(entry)).second)
    return fail(ErrorCode::internal, "allocation {} is registered already", id.to_string());
  return {};
}

Result<AllocationRegistry::EntryPtr> AllocationRegistry::unlink(const AllocationId& id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return fail(ErrorCode::not_found, "no allocation {}", id.to_string());
  EntryPtr entry = std::move(it->second);
  entries_.erase(it);
  return entry;
}

Result<AllocationRegistry::EntryPtr> AllocationRegistry::find(const AllocationId& id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return fail(ErrorCode::not_found, "no allocation {}", id.to_string());
  if (it->second->freeing.load(std::memory_order_relaxed))
    return fail(ErrorCode::not_found, "allocation {} is being freed", id.to_string());
  return it->second;
}

Result<AllocationRegistry::FreeStart> AllocationRegistry::begin_free(const AllocationId& id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return fail(ErrorCode::not_found, "no allocation {}", id.to_string());
  Entry& e = *it->second;
  if (e.freeing.load(std::memory_order_relaxed))
    return fail(ErrorCode::not_found, "allocation {} is being freed already", id.to_string());
  if (e.holds > 0) {
    e.freeing.store(true, std::memory_order_relaxed);
    e.record.status = MemoryAllocationStatus::Freeing;
    return FreeStart{it->second, true, e.record};
  }
  FreeStart out{std::move(it->second), false};
  entries_.erase(it);
  return out;
}

Result<AllocationRegistry::EntryPtr> AllocationRegistry::hold(const AllocationId& id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return fail(ErrorCode::not_found, "no allocation {}", id.to_string());
  if (it->second->freeing.load(std::memory_order_relaxed))
    return fail(ErrorCode::not_found, "allocation {} is being freed", id.to_string());
  ++it->second->holds;
  return it->second;
}

AllocationRegistry::EntryPtr AllocationRegistry::unhold(Entry& entry) {
  std::lock_guard lock(mu_);
  if (entry.holds == 0 || --entry.holds > 0 || !entry.freeing.load(std::memory_order_relaxed)) return nullptr;
  auto it = entries_.find(entry.record.id);
  if (it == entries_.end() || it->second.get() != &entry) return nullptr;
  EntryPtr out = std::move(it->second);
  entries_.erase(it);
  return out;
}

void AllocationRegistry::relocate(Entry& entry, DevicePool* pool, Backend* backend, void* ptr, DeviceId device,
                                  MemoryType type) {
  std::lock_guard lock(mu_);
  entry.pool = pool;
  entry.backend = backend;
  entry.ptr = ptr;
  entry.record.device = device;
  entry.record.memory_type = type;
  entry.record.address = reinterpret_cast<std::uint64_t>(ptr);
}

std::uint32_t AllocationRegistry::holds(const Entry& entry) const {
  std::lock_guard lock(mu_);
  return entry.holds;
}

void AllocationRegistry::set_status(Entry& entry, MemoryAllocationStatus status) {
  std::lock_guard lock(mu_);
  if (!entry.freeing.load(std::memory_order_relaxed)) entry.record.status = status;
}

void AllocationRegistry::set_name(Entry& entry, std::string name) {
  std::lock_guard lock(mu_);
  entry.record.name = std::move(name);
}

Result<AllocationRecord> AllocationRegistry::get(const AllocationId& id) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return fail(ErrorCode::not_found, "no allocation {}", id.to_string());
  return it->second->record;
}

void AllocationRegistry::touch(Entry& entry) {
  std::lock_guard lock(mu_);
  entry.record.last_used_at = Clock::now();
}

std::vector<AllocationRecord> AllocationRegistry::list(const AllocationFilter& filter) const {
  std::vector<AllocationRecord> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : entries_)
      if (matches(e->record, filter)) out.push_back(e->record);
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.created_at != b.created_at ? a.created_at > b.created_at : a.id < b.id;
  });
  return out;
}

void AllocationRegistry::for_each(const std::function<bool(const Entry&)>& fn) const {
  std::lock_guard lock(mu_);
  for (const auto& [id, e] : entries_)
    if (!fn(*e)) return;
}

std::vector<AllocationRegistry::EntryPtr> AllocationRegistry::take_all() {
  std::lock_guard lock(mu_);
  std::vector<EntryPtr> out;
  out.reserve(entries_.size());
  for (auto& [id, e] : entries_) out.push_back(std::move(e));
  entries_.clear();
  return out;
}

std::size_t AllocationRegistry::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace memd
