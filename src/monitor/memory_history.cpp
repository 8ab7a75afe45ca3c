// The history recorder and snapshot taker (monitor/memory_history.hpp).
#include "monitor/memory_history.hpp"

#include <algorithm>
#include <map>
#include <tuple>

#include "monitor/block_map.hpp"

namespace memd {
namespace {

HistoryEntry entry_of(HistoryKind kind, const AllocationRecord& r) {
  HistoryEntry e;
  e.kind = kind;
  e.device = r.device;
  e.allocation = r.id;
  e.owner = r.owner;
  e.name = r.name;
  e.memory_type = r.memory_type;
  e.priority = r.priority;
  e.size_bytes = r.size_bytes;
  return e;
}

}  // namespace

MemoryHistory::MemoryHistory(MemoryManager& manager, HistoryOptions options)
    : manager_(manager), history_(options.ring_capacity), snapshots_(options.snapshots) {}

MemoryManager::DeviceCounters MemoryHistory::stamp_and_record(HistoryEntry entry) {
  if (entry.time == std::chrono::system_clock::time_point{}) entry.time = std::chrono::system_clock::now();
  const auto counters = manager_.device_counters(entry.device);
  entry.reserved_bytes = counters.reserved_bytes;
  entry.allocated_bytes = counters.allocated_bytes;
  entry.live_allocations = counters.allocations;
  history_.record(std::move(entry));
  return counters;
}

MemoryManager::DeviceCounters MemoryHistory::allocated(const AllocationRecord& record) {
  HistoryEntry e = entry_of(HistoryKind::allocate, record);
  // An exportable allocation has a segment of its own, not a pool block (and
  // asking for its pool could create one).
  if (!record.exportable)
    if (auto pool = manager_.pool(record.device, record.memory_type))
      e.block_bytes = (*pool)->block_size(reinterpret_cast<const void*>(record.address));
  return stamp_and_record(std::move(e));
}

MemoryManager::DeviceCounters MemoryHistory::freed(const AllocationRecord& record) {
  HistoryEntry e = entry_of(HistoryKind::free, record);
  e.deferred = record.status == MemoryAllocationStatus::Freeing;
  return stamp_and_record(std::move(e));
}

void MemoryHistory::freed(const std::vector<AllocationRecord>& records) {
  for (const auto& r : records) (void)freed(r);
}

void MemoryHistory::record(HistoryKind kind, const AllocationRecord& record, std::optional<HistoryPlace> from,
                           std::optional<HistoryPlace> to) {
  HistoryEntry e = entry_of(kind, record);
  e.from = from;
  e.to = to;
  e.time = std::chrono::system_clock::now();
  if (from && from->device != record.device) {
    HistoryEntry there = e;
    there.device = from->device;
    stamp_and_record(std::move(there));
  }
  stamp_and_record(std::move(e));
}

void MemoryHistory::transfer_finished(const TransferReport& report) {
  if (report.kind != TransferKind::Move) return;
  const HistoryPlace from{report.source_device, report.source_type};
  const HistoryPlace to{report.destination_device, report.destination_type};
  if (report.status == MemoryTransferStatus::Completed) {
    // The allocation as it is now (its owner and name); freed meanwhile: the
    // report's numbers, owner unknown beyond who asked.
    auto now = manager_.get(report.source);
    AllocationRecord r = now ? *now : AllocationRecord{};
    if (!now) {
      r.id = report.source;
      r.owner = report.owner;
      r.size_bytes = report.size_bytes;
    }
    r.device = to.device;
    r.memory_type = to.memory_type;
    record(HistoryKind::move, r, from, to);
    return;
  }
  if (report.status == MemoryTransferStatus::Failed && report.error &&
      (report.error->code == ErrorCode::out_of_memory || report.error->code == ErrorCode::quota_exceeded)) {
    HistoryEntry e;
    e.kind = HistoryKind::failed;
    e.device = to.device;
    e.allocation = report.source;
    e.owner = report.owner;
    if (auto now = manager_.get(report.source)) {
      e.owner = now->owner;
      e.name = now->name;
      e.priority = now->priority;
    }
    e.memory_type = to.memory_type;
    e.size_bytes = report.size_bytes;
    e.from = from;
    e.to = to;
    e.error = report.error->code;
    stamp_and_record(std::move(e));
  }
}

std::optional<SnapshotId> MemoryHistory::refused(const AllocationRequest& request, DeviceId device,
                                                 const Error& error, RefusedBy by) {
  if (error.code != ErrorCode::out_of_memory && error.code != ErrorCode::quota_exceeded) return std::nullopt;
  HistoryEntry e;
  e.kind = HistoryKind::failed;
  e.device = device;
  e.owner = request.owner;
  e.name = request.name;
  e.memory_type = request.memory_type;
  e.priority = request.priority;
  e.size_bytes = request.size_bytes;
  e.error = error.code;
  std::optional<SnapshotId> id;
  if (error.code == ErrorCode::out_of_memory) id = SnapshotId::generate();
  e.snapshot = id;
  // Recorded first, so the snapshot's copy of the ring ends with it.
  stamp_and_record(std::move(e));
  if (id) snapshots_.add(take_snapshot(request, device, error, by, *id));
  return id;
}

OomSnapshot MemoryHistory::take_snapshot(const AllocationRequest& request, DeviceId device, const Error& error,
                                         RefusedBy by, const SnapshotId& id) const {
  const SnapshotOptions& caps = snapshots_.options();
  OomSnapshot s;
  s.id = id;
  s.time = std::chrono::system_clock::now();
  s.request = {request.owner, request.name, device, request.memory_type, request.priority,
               request.size_bytes, error, by == RefusedBy::pressure ? "pressure" : "pool"};
  if (auto info = manager_.catalog().info(device)) s.device_total_bytes = info->total_bytes;
  s.history = history_.ring(device);
  s.history_dropped = history_.dropped(device);

  // Live allocations, largest first (ties: oldest first, for a stable view).
  AllocationFilter filter;
  filter.device = device;
  std::vector<AllocationRecord> live = manager_.list(filter);
  std::sort(live.begin(), live.end(), [](const AllocationRecord& a, const AllocationRecord& b) {
    return std::tie(b.size_bytes, a.created_at) < std::tie(a.size_bytes, b.created_at);
  });
  std::map<std::string, SnapshotHolder> holders;
  for (const auto& r : live) {
    auto& h = holders[r.owner];
    h.owner = r.owner;
    h.bytes += r.size_bytes;
    ++h.allocations;
  }
  for (auto& [owner, h] : holders) s.holders.push_back(std::move(h));
  std::stable_sort(s.holders.begin(), s.holders.end(), [](const auto& a, const auto& b) { return a.bytes > b.bytes; });
  if (s.holders.size() > caps.max_allocations) s.holders.resize(caps.max_allocations);
  for (std::size_t i = 0; i < live.size(); ++i) {
    if (i < caps.max_allocations) s.allocations.push_back(snapshot_allocation(live[i]));
    else ++s.allocations_omitted;
  }

  // The block map: the same walker as the live map (memory_blocks), so a
  // snapshot shows what the dashboard would have shown then.
  DeviceBlockMap map = walk_block_map(manager_, device, live, caps.max_blocks);
  s.segments = std::move(map.segments);
  s.blocks_omitted = map.blocks_omitted;
  s.pools = std::move(map.pools);
  return s;
}

Result<void> MemoryHistory::validate() const {
  if (auto ok = history_.validate(); !ok) return ok;
  return snapshots_.validate();
}

}  // namespace memd
