// monitor/oom_snapshots.hpp — what a device looked like when it ran out.
//
// When a request fails with out_of_memory (the reclaim ladder gave up, or
// the pressure policy refused a Low-priority request at Critical), the
// service keeps an OomSnapshot: the request, the device's history ring at
// that moment, its block map (every segment and block of its pools, each
// allocated block named by the allocation that starts there), its live
// allocations and its pool statistics. The error the caller receives names
// the snapshot's id, so `memd history ID` shows why it failed after the fact.
//
// Bounds: the store keeps the newest `max_snapshots` and at most `max_bytes`
// of them (approximate_bytes()); older ones are dropped and their ids answer
// not_found. A snapshot records at most `max_blocks` blocks and
// `max_allocations` allocations, and says how many it left out.
//
// Thread safety: OomSnapshot is a value; every method of OomSnapshotStore is
// thread-safe (one mutex, held to insert, evict or copy one snapshot out).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "alloc/pool_stats.hpp"
#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"
#include "monitor/allocation_history.hpp"

namespace memd {

struct SnapshotOptions {
  std::size_t max_snapshots = 16;
  std::uint64_t max_bytes = 64ull << 20;
  std::size_t max_blocks = 4096;       // per snapshot, over all segments
  std::size_t max_allocations = 4096;  // per snapshot, largest first
};

// The request that failed.
struct SnapshotRequest {
  std::string owner;
  std::string name;
  DeviceId device;
  MemoryType memory_type = MemoryType::Unknown;
  MemoryPriority priority = MemoryPriority::Normal;
  std::uint64_t size_bytes = 0;
  Error error;  // as first refused, before the snapshot's id was added
  // "pool": the reclaim ladder gave up; "pressure": the pressure policy
  // refused a Low-priority request while the device was Critical.
  std::string refused_by;
};

// A live allocation on the device at that moment. `hidden` once redacted:
// another owner's, shown to a non-admin by its size only.
struct SnapshotAllocation {
  std::optional<AllocationId> id;
  std::string owner, name;
  MemoryType memory_type = MemoryType::Unknown;
  MemoryPriority priority = MemoryPriority::Normal;
  std::uint64_t size_bytes = 0;
  std::uint64_t address = 0;
  bool pinned = false, exportable = false;
  bool hidden = false;
};

// Bytes each owner held on the device (requested bytes of its live
// allocations, every one counted even past max_allocations), most first.
struct SnapshotHolder {
  std::string owner;  // empty when hidden: every other owner's, summed
  std::uint64_t bytes = 0;
  std::uint64_t allocations = 0;
  bool hidden = false;
};

struct SnapshotBlock {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  std::string state;  // DevicePool's: "allocated", "free", "pending", "slab"
  // The allocation that starts at the block (none for free blocks, slab
  // spans, and allocations left out of the snapshot).
  std::optional<SnapshotAllocation> allocation;
  // A slab span: how many allocations sit inside it.
  std::uint64_t slab_allocations = 0;
};

struct SnapshotSegment {
  MemoryType memory_type = MemoryType::Unknown;
  std::uint64_t address = 0, size = 0, mapped_bytes = 0;
  std::string kind;  // "arena", "huge", "segment"
  // Over every block of the segment, including those left out below.
  std::uint64_t live_bytes = 0, free_bytes = 0, largest_free = 0;
  std::uint64_t block_count = 0;
  std::vector<SnapshotBlock> blocks;  // the first ones, up to the snapshot's cap
};

struct OomSnapshot {
  SnapshotId id;
  std::chrono::system_clock::time_point time{};
  SnapshotRequest request;
  std::uint64_t device_total_bytes = 0;
  // The device's ring when it failed (the failed entry last) and how many
  // older entries the ring had dropped by then.
  std::vector<HistoryEntry> history;
  std::uint64_t history_dropped = 0;
  std::vector<SnapshotHolder> holders;
  std::vector<SnapshotAllocation> allocations;  // largest first
  std::uint64_t allocations_omitted = 0;
  std::vector<SnapshotSegment> segments;
  std::uint64_t blocks_omitted = 0;
  std::map<MemoryType, PoolStats> pools;  // every pool of the device (stats(): drained)

  // Largest free block of any pool of the request's memory type.
  std::uint64_t largest_free_block() const;
  // What it costs to keep (the store's byte bound).
  std::uint64_t approximate_bytes() const;
};

// The snapshot as `viewer` may see it: every other owner's history entries,
// allocations and blocks keep their sizes, times and kinds but lose owner,
// name and allocation id (hidden), and the holders other than the viewer
// fold into one hidden row. The admin sees everything: call it only for
// non-admins.
OomSnapshot redact(OomSnapshot snapshot, std::string_view viewer);
// The same rule for history entries.
HistoryEntry redact(HistoryEntry entry, std::string_view viewer);

class OomSnapshotStore {
 public:
  explicit OomSnapshotStore(SnapshotOptions options = {});

  const SnapshotOptions& options() const noexcept { return options_; }
  // Keeps it, dropping the oldest past either bound (the newest is always
  // kept, even over max_bytes alone).
  void add(OomSnapshot snapshot);
  // not_found for an id never taken or dropped since.
  Result<OomSnapshot> find(const SnapshotId& id) const;
  // Ids kept, oldest first.
  std::vector<SnapshotId> ids() const;
  std::uint64_t bytes() const;
  // Snapshots dropped by either bound so far.
  std::uint64_t evicted() const;
  Result<void> validate() const;

 private:
  struct Kept {
    OomSnapshot snapshot;
    std::uint64_t bytes = 0;
  };
  const SnapshotOptions options_;
  mutable std::mutex mu_;
  std::deque<Kept> kept_;  // oldest first
  std::uint64_t bytes_ = 0;
  std::uint64_t evicted_ = 0;
};

}  // namespace memd
