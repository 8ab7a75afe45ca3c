// monitor/memory_history.hpp — the recorder behind memory_history and
// out-of-memory snapshots.
//
// The service tells it what happened, one call per path (allocated, freed,
// refused, transfer_finished); it stamps each entry with the time and the
// device's pool counters and keeps it in the device's ring
// (monitor/allocation_history.hpp). A refusal with out_of_memory also takes
// a snapshot (monitor/oom_snapshots.hpp) and returns its id, which the
// service puts into the error the caller receives.
//
// record() is public for the model manager (issue 15), which records its
// evictions (kind evict) itself.
//
// Cost: an allocation or free reads the device's pool counters (one lock per
// pool, no cache drained) and, for allocations from a pool, the block size.
// A snapshot drains the device's thread caches and walks its pools' blocks:
// it happens only on out_of_memory.
//
// Thread safety: every method is thread-safe. It calls into the manager
// without any lock of its own held.
#pragma once

#include <optional>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "monitor/allocation_history.hpp"
#include "monitor/oom_snapshots.hpp"
#include "transfer/transfer_report.hpp"

namespace memd {

struct HistoryOptions {
  std::size_t ring_capacity = kDefaultHistoryCapacity;  // entries per device
  SnapshotOptions snapshots;
};

// Why a request was refused before or by the manager.
enum class RefusedBy { pool, pressure };

class MemoryHistory {
 public:
  MemoryHistory(MemoryManager& manager, HistoryOptions options = {});

  // One line per service path. allocated() and freed() return the device's
  // counters they stamped the line with, so the caller's next reader (the
  // monitor's pressure) need not lock every pool of the device again.
  MemoryManager::DeviceCounters allocated(const AllocationRecord& record);
  MemoryManager::DeviceCounters freed(const AllocationRecord& record);
  void freed(const std::vector<AllocationRecord>& records);
  // Records the refusal (out_of_memory and quota_exceeded; other codes are
  // not memory events and are ignored) and, for out_of_memory, takes a
  // snapshot: its id.
  std::optional<SnapshotId> refused(const AllocationRequest& request, DeviceId device, const Error& error,
                                    RefusedBy by);
  // Completed moves, in the rings of both devices; a move refused for
  // memory at its destination as a failed entry there. Copies are ignored.
  void transfer_finished(const TransferReport& report);

  // An event about an allocation (the model manager's evictions): kind,
  // the record as it is now, where it came from and went. The entry goes to
  // record.device's ring (and, for a move between devices, `from`'s too).
  void record(HistoryKind kind, const AllocationRecord& record, std::optional<HistoryPlace> from = std::nullopt,
              std::optional<HistoryPlace> to = std::nullopt);

  AllocationHistory& history() noexcept { return history_; }
  const AllocationHistory& history() const noexcept { return history_; }
  OomSnapshotStore& snapshots() noexcept { return snapshots_; }
  const OomSnapshotStore& snapshots() const noexcept { return snapshots_; }

  Result<void> validate() const;

 private:
  // The device's counters laid into the entry, then record()ed.
  MemoryManager::DeviceCounters stamp_and_record(HistoryEntry entry);
  OomSnapshot take_snapshot(const AllocationRequest& request, DeviceId device, const Error& error, RefusedBy by,
                            const SnapshotId& id) const;

  MemoryManager& manager_;
  AllocationHistory history_;
  OomSnapshotStore snapshots_;
};

}  // namespace memd
