// alloc/allocation_registry.hpp — the allocations made through memd's API,
// by GUID.
//
// One entry per live allocation: its record, the pool it came from, its
// pointer, and an io lock. The registry only keeps the book; it allocates and
// frees nothing, so it is built and tested without a pool (entries may carry
// a null pool). Lookup is O(1); listing walks every entry and sorts newest
// first, because that is the order the API shows.
//
// Thread safety: every method is thread-safe; one mutex guards the map and
// the records (a record's last_used_at changes after insertion, so records
// are only read or written through the registry: get(), list(), touch(),
// for_each()). An entry's pool and ptr never change once inserted. Its io
// lock is the caller's: readers and writers of the bytes hold it shared, a
// free takes it exclusively after unlink(), so a free waits for copies in
// flight instead of pulling memory from under them. for_each() calls its
// function under the registry's mutex: the function must not call back into
// the registry.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "alloc/allocation_record.hpp"
#include "memd/error.hpp"

namespace memd {

class DevicePool;

// Which allocations a list or a bulk free means; every field set must match
// (AND), an empty filter matches everything.
struct AllocationFilter {
  std::optional<DeviceId> device;
  std::optional<MemoryType> memory_type;
  std::optional<std::string> owner;
  std::optional<MemoryAllocationStatus> status;
  std::optional<std::string> tag;
  std::optional<MemoryPriority> below_priority;  // priority strictly lower than this
};

bool matches(const AllocationRecord& record, const AllocationFilter& filter);

class AllocationRegistry {
 public:
  struct Entry {
    AllocationRecord record;  // guarded by the registry's mutex
    DevicePool* pool = nullptr;
    void* ptr = nullptr;
    std::shared_mutex io;  // see the header comment
  };
  using EntryPtr = std::shared_ptr<Entry>;

  AllocationRegistry() = default;
  AllocationRegistry(const AllocationRegistry&) = delete;
  AllocationRegistry& operator=(const AllocationRegistry&) = delete;

  // Makes the entry findable under entry->record.id. A second entry with the
  // same id is refused (internal) and the registry is unchanged.
  Result<void> insert(EntryPtr entry);
  // Removes the entry and hands it over (the caller frees its memory).
  // Unknown id: not_found.
  Result<EntryPtr> unlink(const AllocationId& id);
  // The entry, for access to its bytes. Unknown id: not_found.
  Result<EntryPtr> find(const AllocationId& id) const;
  // A copy of the record. Unknown id: not_found.
  Result<AllocationRecord> get(const AllocationId& id) const;
  // Records last_used_at = now on an entry found before.
  void touch(Entry& entry);
  // Copies of the records matching the filter, newest first (ties by id, so
  // the order is stable).
  std::vector<AllocationRecord> list(const AllocationFilter& filter) const;
  // Calls fn on every entry under the registry's mutex, in no order, until
  // fn returns false.
  void for_each(const std::function<bool(const Entry&)>& fn) const;
  // Empties the registry and hands every entry over (for shutdown).
  std::vector<EntryPtr> take_all();
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<AllocationId, EntryPtr> entries_;
};

}  // namespace memd
