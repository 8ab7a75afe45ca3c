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
// for_each()). for_each() calls its function under the registry's mutex: the
// function must not call back into the registry.
//
// An entry's pool and ptr change only when a move lands (MemoryManager's
// commit_move), which holds the entry's io lock exclusively and the
// registry's mutex; so whoever holds io (shared) may read them. The io lock is
// the caller's: readers of the bytes hold it shared, writers exclusively, for
// the length of one copy (so bytes a reader sees are never being written, and
// writes into one allocation never interleave). write_gate is shared by
// writers, taken before io, and taken exclusively by a move for its whole
// copy, so no write lands in the old block after the move has copied past it;
// readers never take it and read on meanwhile.
//
// Holds keep memory alive across a long piece of work (a transfer, an
// export): an allocation freed while held is marked freeing (status Freeing),
// stays in the registry, refuses new holds and byte access, and is unlinked
// only when the last hold goes (unhold() hands it over then). So a free never
// pulls memory from under a copy, and never waits for one either.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "alloc/allocation_record.hpp"
#include "backends/backend.hpp"
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
    DevicePool* pool = nullptr;  // see the header comment: changes only when a move lands
    Backend* backend = nullptr;  // the pool's, or the shareable segment's
    // An exportable allocation's memory of its own (no pool); never moves.
    std::optional<ShareableSegment> shareable;
    void* ptr = nullptr;
    std::shared_mutex io;          // see the header comment
    std::shared_mutex write_gate;  // see the header comment
    std::uint32_t holds = 0;       // guarded by the registry's mutex
    // Set (under the registry's mutex) when a free finds the entry held;
    // read without it by work between chunks, to stop early.
    std::atomic<bool> freeing{false};
  };
  using EntryPtr = std::shared_ptr<Entry>;

  // What begin_free() decided.
  struct FreeStart {
    EntryPtr entry;
    bool deferred = false;  // held: marked freeing, unlinked by the last unhold()
    AllocationRecord record;  // deferred: the record as it was marked (status Freeing)
  };

  AllocationRegistry() = default;
  AllocationRegistry(const AllocationRegistry&) = delete;
  AllocationRegistry& operator=(const AllocationRegistry&) = delete;

  // Makes the entry findable under entry->record.id. A second entry with the
  // same id is refused (internal) and the registry is unchanged.
  Result<void> insert(EntryPtr entry);
  // Removes the entry and hands it over (the caller frees its memory).
  // Unknown id: not_found.
  Result<EntryPtr> unlink(const AllocationId& id);
  // The entry, for access to its bytes. Unknown id, or one being freed: not_found.
  Result<EntryPtr> find(const AllocationId& id) const;
  // Starts a free: unknown or already freeing is not_found. An entry with no
  // hold is unlinked and handed over (the caller frees its memory); a held one
  // is marked freeing (status Freeing) and stays until the last unhold().
  Result<FreeStart> begin_free(const AllocationId& id);
  // Takes a hold on the entry. Unknown, or being freed: not_found.
  Result<EntryPtr> hold(const AllocationId& id);
  // Drops a hold. When it was the last hold on an entry being freed, the
  // entry is unlinked and returned (the caller frees its memory); else null.
  EntryPtr unhold(Entry& entry);
  // Replaces a held entry's location and the record's device, type and
  // address (a move landing); the caller holds entry.io exclusively.
  void relocate(Entry& entry, DevicePool* pool, Backend* backend, void* ptr, DeviceId device, MemoryType type);
  // Holds on the entry now (the caller's own included).
  std::uint32_t holds(const Entry& entry) const;
  // Sets a live entry's status (Moving while a move copies, back to Allocated).
  void set_status(Entry& entry, MemoryAllocationStatus status);
  // A new name (an allocation handed from one use to the next by its owner).
  void set_name(Entry& entry, std::string name);
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
