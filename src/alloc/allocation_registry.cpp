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
  return it->second;
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
