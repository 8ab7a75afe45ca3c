// The per-device rings of recent allocator events (monitor/allocation_history.hpp).
#include "monitor/allocation_history.hpp"

#include <algorithm>
#include <array>

namespace memd {
namespace {

constexpr std::array<std::pair<HistoryKind, std::string_view>, 5> kKindNames = {{
    {HistoryKind::allocate, "allocate"},
    {HistoryKind::free, "free"},
    {HistoryKind::move, "move"},
    {HistoryKind::evict, "evict"},
    {HistoryKind::failed, "failed"},
}};

}  // namespace

std::string_view to_string(HistoryKind kind) noexcept {
  for (const auto& [k, name] : kKindNames)
    if (k == kind) return name;
  return "allocate";
}

std::optional<HistoryKind> parse_history_kind(std::string_view name) noexcept {
  for (const auto& [k, n] : kKindNames)
    if (n == name) return k;
  return std::nullopt;
}

AllocationHistory::AllocationHistory(std::size_t capacity)
    : capacity_(std::clamp<std::size_t>(capacity, 1, kMaxHistoryCapacity)) {}

template <typename Fn>
void AllocationHistory::for_each(const Ring& ring, Fn&& fn) {
  // Until the ring is full, slots are in order; after, `next` is the oldest.
  const std::size_t n = ring.slots.size();
  const std::size_t start = ring.dropped == 0 ? 0 : ring.next;
  for (std::size_t i = 0; i < n; ++i) fn(ring.slots[(start + i) % n]);
}

std::uint64_t AllocationHistory::record(HistoryEntry entry) {
  std::lock_guard lock(mu_);
  entry.sequence = ++sequence_;
  const std::uint64_t sequence = entry.sequence;
  Ring& ring = rings_[entry.device];
  if (ring.slots.size() < capacity_) {
    ring.slots.push_back(std::move(entry));
    ring.next = ring.slots.size() % capacity_;
    return sequence;
  }
  ring.slots[ring.next] = std::move(entry);
  ring.next = (ring.next + 1) % capacity_;
  ++ring.dropped;
  return sequence;
}

std::vector<HistoryEntry> AllocationHistory::recent(const HistoryQuery& query) const {
  std::vector<const HistoryEntry*> matched;
  std::vector<HistoryEntry> out;
  std::lock_guard lock(mu_);
  for (const auto& [device, ring] : rings_) {
    if (query.device && device != *query.device) continue;
    for_each(ring, [&](const HistoryEntry& e) {
      if (!query.owner || e.owner == *query.owner) matched.push_back(&e);
    });
  }
  // Each ring is in sequence order already; several are merged by sequence.
  if (!query.device) std::sort(matched.begin(), matched.end(), [](auto* a, auto* b) { return a->sequence < b->sequence; });
  const std::size_t first = matched.size() > query.limit ? matched.size() - query.limit : 0;
  out.reserve(matched.size() - first);
  for (std::size_t i = first; i < matched.size(); ++i) out.push_back(*matched[i]);
  return out;
}

std::vector<HistoryEntry> AllocationHistory::ring(DeviceId device) const {
  std::vector<HistoryEntry> out;
  std::lock_guard lock(mu_);
  auto it = rings_.find(device);
  if (it == rings_.end()) return out;
  out.reserve(it->second.slots.size());
  for_each(it->second, [&](const HistoryEntry& e) { out.push_back(e); });
  return out;
}

std::uint64_t AllocationHistory::dropped(DeviceId device) const {
  std::lock_guard lock(mu_);
  auto it = rings_.find(device);
  return it == rings_.end() ? 0 : it->second.dropped;
}

Result<void> AllocationHistory::validate() const {
  std::lock_guard lock(mu_);
  for (const auto& [device, ring] : rings_) {
    if (ring.slots.size() > capacity_)
      return fail(ErrorCode::internal, "history of {} holds {} entries, over its capacity {}", device.to_string(),
                  ring.slots.size(), capacity_);
    if (ring.dropped > 0 && ring.slots.size() != capacity_)
      return fail(ErrorCode::internal, "history of {} dropped entries before it was full", device.to_string());
    std::uint64_t last = 0;
    Result<void> ok;
    for_each(ring, [&](const HistoryEntry& e) {
      if (!ok) return;
      if (e.device != device)
        ok = fail(ErrorCode::internal, "an entry of {} sits in the history of {}", e.device.to_string(),
                  device.to_string());
      else if (e.sequence <= last || e.sequence > sequence_)
        ok = fail(ErrorCode::internal, "history of {} is out of order at sequence {}", device.to_string(), e.sequence);
      last = e.sequence;
    });
    if (!ok) return ok;
  }
  return {};
}

}  // namespace memd
