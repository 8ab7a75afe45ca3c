// Out-of-memory snapshots and their bounded store (monitor/oom_snapshots.hpp).
#include "monitor/oom_snapshots.hpp"

#include <algorithm>

namespace memd {
namespace {

std::uint64_t text_bytes(const std::string& s) { return s.capacity() > 15 ? s.capacity() : 0; }

std::uint64_t allocation_bytes(const SnapshotAllocation& a) {
  return sizeof(SnapshotAllocation) + text_bytes(a.owner) + text_bytes(a.name);
}

void hide(SnapshotAllocation& a) {
  a.id.reset();
  a.owner.clear();
  a.name.clear();
  a.hidden = true;
}

}  // namespace

std::uint64_t OomSnapshot::largest_free_block() const {
  std::uint64_t largest = 0;
  if (auto it = pools.find(request.memory_type); it != pools.end()) largest = it->second.largest_free_block;
  return largest;
}

std::uint64_t OomSnapshot::approximate_bytes() const {
  std::uint64_t bytes = sizeof(OomSnapshot) + text_bytes(request.owner) + text_bytes(request.name) +
                        text_bytes(request.error.message) + pools.size() * (sizeof(PoolStats) + 64);
  for (const auto& e : history) bytes += sizeof(HistoryEntry) + text_bytes(e.owner) + text_bytes(e.name);
  for (const auto& a : allocations) bytes += allocation_bytes(a);
  for (const auto& h : holders) bytes += sizeof(SnapshotHolder) + text_bytes(h.owner);
  for (const auto& s : segments) {
    bytes += sizeof(SnapshotSegment) + text_bytes(s.kind);
    for (const auto& b : s.blocks) {
      bytes += sizeof(SnapshotBlock) + text_bytes(b.state);
      if (b.allocation) bytes += allocation_bytes(*b.allocation);
    }
  }
  return bytes;
}

HistoryEntry redact(HistoryEntry entry, std::string_view viewer) {
  if (entry.owner == viewer) return entry;
  entry.owner.clear();
  entry.name.clear();
  entry.allocation.reset();
  entry.snapshot.reset();  // another owner's failure: its snapshot is theirs
  entry.hidden = true;
  return entry;
}

OomSnapshot redact(OomSnapshot snapshot, std::string_view viewer) {
  for (auto& e : snapshot.history) e = redact(std::move(e), viewer);
  for (auto& a : snapshot.allocations)
    if (a.owner != viewer) hide(a);
  std::vector<SnapshotHolder> holders;
  SnapshotHolder others{"", 0, 0, true};
  for (auto& h : snapshot.holders) {
    if (h.owner == viewer) {
      holders.push_back(std::move(h));
    } else {
      others.bytes += h.bytes;
      others.allocations += h.allocations;
    }
  }
  if (others.allocations > 0) holders.push_back(others);
  std::stable_sort(holders.begin(), holders.end(), [](const auto& a, const auto& b) { return a.bytes > b.bytes; });
  snapshot.holders = std::move(holders);
  for (auto& s : snapshot.segments)
    for (auto& b : s.blocks)
      if (b.allocation && b.allocation->owner != viewer) hide(*b.allocation);
  return snapshot;
}

OomSnapshotStore::OomSnapshotStore(SnapshotOptions options) : options_(options) {}

void OomSnapshotStore::add(OomSnapshot snapshot) {
  const std::uint64_t bytes = snapshot.approximate_bytes();
  std::vector<Kept> dropped;  // destroyed after the lock: a snapshot can be large
  {
    std::lock_guard lock(mu_);
    kept_.push_back({std::move(snapshot), bytes});
    bytes_ += bytes;
    const std::size_t max_count = std::max<std::size_t>(options_.max_snapshots, 1);
    while (kept_.size() > 1 && (kept_.size() > max_count || bytes_ > options_.max_bytes)) {
      bytes_ -= kept_.front().bytes;
      dropped.push_back(std::move(kept_.front()));
      kept_.pop_front();
      ++evicted_;
    }
  }
}

Result<OomSnapshot> OomSnapshotStore::find(const SnapshotId& id) const {
  std::lock_guard lock(mu_);
  for (const auto& k : kept_)
    if (k.snapshot.id == id) return k.snapshot;
  return fail(ErrorCode::not_found,
              "no snapshot {}: it was never taken or is no longer kept (memd keeps the newest {})", id.to_string(),
              options_.max_snapshots);
}

std::vector<SnapshotId> OomSnapshotStore::ids() const {
  std::lock_guard lock(mu_);
  std::vector<SnapshotId> out;
  for (const auto& k : kept_) out.push_back(k.snapshot.id);
  return out;
}

std::uint64_t OomSnapshotStore::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

std::uint64_t OomSnapshotStore::evicted() const {
  std::lock_guard lock(mu_);
  return evicted_;
}

Result<void> OomSnapshotStore::validate() const {
  std::lock_guard lock(mu_);
  std::uint64_t total = 0;
  for (const auto& k : kept_) total += k.bytes;
  if (total != bytes_) return fail(ErrorCode::internal, "snapshot store counts {} bytes but holds {}", bytes_, total);
  if (kept_.size() > std::max<std::size_t>(options_.max_snapshots, 1))
    return fail(ErrorCode::internal, "snapshot store holds {} snapshots, over {}", kept_.size(),
                options_.max_snapshots);
  if (kept_.size() > 1 && bytes_ > options_.max_bytes)
    return fail(ErrorCode::internal, "snapshot store holds {} bytes, over {}", bytes_, options_.max_bytes);
  for (const auto& k : kept_) {
    std::uint64_t blocks = 0;
    for (const auto& s : k.snapshot.segments) blocks += s.blocks.size();
    if (blocks > options_.max_blocks || k.snapshot.allocations.size() > options_.max_allocations)
      return fail(ErrorCode::internal, "snapshot {} is over its block or allocation cap", k.snapshot.id.to_string());
  }
  return {};
}

}  // namespace memd
