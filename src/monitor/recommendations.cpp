// recommend(): the state → a ranked list of actions; see recommendations.hpp.
#include "monitor/recommendations.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "memd/size.hpp"

namespace memd {
namespace {

using Seconds = std::chrono::seconds;

bool wanted(const RecommendationOptions& o, DeviceId device) { return !o.device || *o.device == device; }

void release_cached(const RecommendationInputs& in, const RecommendationOptions& o, std::vector<Recommendation>& out) {
  std::uint64_t bytes = 0, reserved = 0;
  std::size_t pools = 0;
  for (const auto& [key, f] : in.trim) {
    if (!wanted(o, key.device) || f.releasable_bytes == 0) continue;
    bytes += f.releasable_bytes;
    ++pools;
  }
  for (const auto& d : in.status.devices)
    if (wanted(o, d.info.id)) reserved += d.reserved_bytes;
  if (bytes == 0) return;
  Recommendation r;
  r.kind = RecommendationKind::release_cached;
  r.device = o.device;
  r.bytes_freed = bytes;
  r.reason = fmt::format(
      "{} of the {} memd holds{} sit in wholly free mapping units, cached ranges or empty segments of {} pool{}; a "
      "trim gives them back{}",
      format_size(bytes), format_size(reserved), o.device ? " on " + o.device->to_string() : std::string(), pools,
      pools == 1 ? "" : "s", o.device ? " (memory_optimize trims every device)" : "");
  r.action = "memory_optimize";
  r.params = nlohmann::json::object();
  out.push_back(std::move(r));
}

void defragment(const RecommendationInputs& in, const RecommendationOptions& o, std::vector<Recommendation>& out) {
  if (!o.defragment_available) return;
  for (const auto& d : in.status.devices) {
    if (!wanted(o, d.info.id) || d.fragmentation < o.min_fragmentation) continue;
    std::uint64_t estimate = 0, stranded = 0, free_bytes = 0;
    for (const auto& [type, stats] : d.pools) {
      free_bytes += stats.free_bytes;
      auto f = in.trim.find(PoolKey{d.info.id, type});
      if (f == in.trim.end()) continue;
      stranded += f->second.stranded_free_bytes;
      if (f->second.unit_bytes > 0)
        estimate += f->second.stranded_free_bytes / f->second.unit_bytes * f->second.unit_bytes;
    }
    if (free_bytes == 0) continue;
    Recommendation r;
    r.kind = RecommendationKind::defragment;
    r.device = d.info.id;
    r.bytes_freed = estimate;
    r.fragmentation_removed = d.fragmentation;
    r.reason = fmt::format(
        "{} is {:.0f}% fragmented ({} free in its pools, the largest run smaller); {} free stay mapped in partly "
        "used units after a trim, and compaction followed by a trim would give back about {} (an estimate: whole "
        "units of today's mapping unit)",
        d.info.id.to_string(), d.fragmentation * 100, format_size(free_bytes), format_size(stranded),
        format_size(estimate));
    r.action = "memory_defragment";
    r.params = {{"deviceId", d.info.id.to_string()}};
    out.push_back(std::move(r));
  }
}

void free_idle(const RecommendationInputs& in, const RecommendationOptions& o, std::vector<Recommendation>& out) {
  std::vector<const AllocationRecord*> idle;
  for (const auto& a : in.allocations) {
    if (!wanted(o, a.device) || a.status != MemoryAllocationStatus::Allocated || a.pinned || a.exportable) continue;
    if (in.now - a.last_used_at < o.idle_after) continue;
    idle.push_back(&a);
  }
  std::sort(idle.begin(), idle.end(), [](const AllocationRecord* a, const AllocationRecord* b) {
    if (a->size_bytes != b->size_bytes) return a->size_bytes > b->size_bytes;
    return a->id.to_string() < b->id.to_string();
  });
  if (idle.size() > o.max_free_idle) idle.resize(o.max_free_idle);
  for (const AllocationRecord* a : idle) {
    const auto idle_for = std::chrono::duration_cast<Seconds>(in.now - a->last_used_at);
    Recommendation r;
    r.kind = RecommendationKind::free_idle;
    r.device = a->device;
    r.bytes_freed = a->size_bytes;
    r.reason = fmt::format("allocation {}{} of '{}' ({} on {}) has not been used for {} s (idle after {} s)",
                           a->id.to_string(), a->name.empty() ? "" : " (" + a->name + ")", a->owner,
                           format_size(a->size_bytes), a->device.to_string(), idle_for.count(),
                           o.idle_after.count());
    r.action = "memory_deallocate";
    r.params = {{"allocationId", a->id.to_string()}};
    out.push_back(std::move(r));
  }
}

std::optional<std::uint64_t> limit_now(const Limits& limits, const QuotaShortfall& s) {
  auto find = [](const auto& map, const auto& key) -> std::optional<std::uint64_t> {
    auto it = map.find(key);
    if (it == map.end()) return std::nullopt;
    return it->second;
  };
  switch (s.scope) {
    case LimitScope::Device:
      if (auto d = DeviceId::parse(s.key)) return find(limits.per_device, *d);
      return std::nullopt;
    case LimitScope::MemoryType:
      if (auto t = parse_memory_type(s.key)) return find(limits.per_memory_type, *t);
      return std::nullopt;
    case LimitScope::Owner: return find(limits.per_owner, s.key);
  }
  return std::nullopt;
}

void raise_limit(const RecommendationInputs& in, const RecommendationOptions& o, std::vector<Recommendation>& out) {
  for (const auto& s : in.shortfalls) {
    if (!wanted(o, s.device) || in.now - s.at > o.quota_recent) continue;
    const auto current = limit_now(in.limits, s);
    const std::uint64_t needed = s.limit_bytes + s.shortfall_bytes;
    if (!current || *current >= needed) continue;  // removed, or raised enough since
    Recommendation r;
    r.kind = RecommendationKind::raise_limit;
    // A device limit concerns its device; an owner's or a memory type's spans
    // devices, so it names none.
    if (s.scope == LimitScope::Device) r.device = s.device;
    r.bytes_needed = needed - *current;
    r.reason = fmt::format(
        "the {} limit of {} ({}) refused {} allocation{}, the last {} s ago, {} short; raising it to {} admits "
        "that request",
        s.scope == LimitScope::Device ? "device" : s.scope == LimitScope::MemoryType ? "memory type" : "owner", s.key,
        format_size(*current), s.failures, s.failures == 1 ? "" : "s",
        std::chrono::duration_cast<Seconds>(in.now - s.at).count(), format_size(r.bytes_needed),
        format_size(needed));
    r.action = "memory_limits";
    r.params = {{std::string(to_string(s.scope)), s.key}, {"bytes", needed}};
    out.push_back(std::move(r));
  }
}

void unload_models(const RecommendationInputs& in, const RecommendationOptions& o, std::vector<Recommendation>& out) {
  for (const auto& m : in.models) {
    if (!wanted(o, m.device) || in.now - m.last_used_at < o.idle_after) continue;
    Recommendation r;
    r.kind = RecommendationKind::unload_model;
    r.device = m.device;
    r.bytes_freed = m.bytes;
    r.reason = fmt::format("model {} holds {} of {} on {} and has not been used for {} s", m.name,
                           format_size(m.bytes), to_string(m.memory_type), m.device.to_string(),
                           std::chrono::duration_cast<Seconds>(in.now - m.last_used_at).count());
    r.action = "memory_model_unload";
    r.params = {{"name", m.name}};
    out.push_back(std::move(r));
  }
}

}  // namespace

std::string_view to_string(RecommendationKind kind) noexcept {
  switch (kind) {
    case RecommendationKind::release_cached: return "release_cached";
    case RecommendationKind::defragment: return "defragment";
    case RecommendationKind::free_idle: return "free_idle";
    case RecommendationKind::raise_limit: return "raise_limit";
    case RecommendationKind::unload_model: return "unload_model";
  }
  return "unknown";
}

std::vector<Recommendation> recommend(const RecommendationInputs& in, const RecommendationOptions& options) {
  std::vector<Recommendation> out;
  release_cached(in, options, out);
  defragment(in, options, out);
  free_idle(in, options, out);
  raise_limit(in, options, out);
  unload_models(in, options, out);
  std::stable_sort(out.begin(), out.end(), [](const Recommendation& a, const Recommendation& b) {
    if (a.bytes_freed != b.bytes_freed) return a.bytes_freed > b.bytes_freed;
    if (a.fragmentation_removed != b.fragmentation_removed) return a.fragmentation_removed > b.fragmentation_removed;
    if (a.kind != b.kind) return a.kind < b.kind;
    return a.params.dump() < b.params.dump();
  });
  return out;
}

}  // namespace memd
