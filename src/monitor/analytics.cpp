// Analytics: series per device, the transfer rate, failures; see analytics.hpp.
#include "monitor/analytics.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace memd {
namespace {

constexpr double kNone = std::numeric_limits<double>::quiet_NaN();

double seconds_between(std::chrono::system_clock::time_point a, std::chrono::system_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

std::string_view to_string(DeviceField field) noexcept {
  switch (field) {
    case DeviceField::used_bytes: return "usedBytes";
    case DeviceField::reserved_bytes: return "reservedBytes";
    case DeviceField::allocated_bytes: return "allocatedBytes";
    case DeviceField::fragmentation: return "fragmentation";
    case DeviceField::pressure_percent: return "pressurePercent";
    case DeviceField::allocations_per_second: return "allocationsPerSecond";
    case DeviceField::frees_per_second: return "freesPerSecond";
  }
  return "unknown";
}

std::string_view to_string(LimitScope scope) noexcept {
  switch (scope) {
    case LimitScope::Device: return "deviceId";
    case LimitScope::MemoryType: return "memoryType";
    case LimitScope::Owner: return "owner";
  }
  return "unknown";
}

void FailureCounts::merge(const FailureCounts& o) {
  out_of_memory += o.out_of_memory;
  quota_exceeded += o.quota_exceeded;
  if (o.last_at && (!last_at || *o.last_at > *last_at)) last_at = o.last_at;
}

std::optional<QuotaShortfall> find_shortfall(const Limits& limits, const std::map<DeviceId, std::uint64_t>& by_device,
                                             const std::map<MemoryType, std::uint64_t>& by_type,
                                             const std::map<std::string, OwnerUsage>& by_owner,
                                             std::string_view owner, DeviceId device, MemoryType type,
                                             std::uint64_t size) {
  auto check = [&](const auto& table, const auto& key, std::uint64_t used, LimitScope scope,
                   std::string text) -> std::optional<QuotaShortfall> {
    auto it = table.find(key);
    if (it == table.end() || used + size <= it->second) return std::nullopt;
    QuotaShortfall s;
    s.scope = scope;
    s.key = std::move(text);
    s.device = device;
    s.limit_bytes = it->second;
    s.shortfall_bytes = used + size - it->second;
    return s;
  };
  auto used_of = [](const auto& map, const auto& key) -> std::uint64_t {
    auto it = map.find(key);
    return it == map.end() ? 0 : it->second;
  };
  if (auto s = check(limits.per_device, device, used_of(by_device, device), LimitScope::Device, device.to_string()))
    return s;
  if (auto s = check(limits.per_memory_type, type, used_of(by_type, type), LimitScope::MemoryType,
                     std::string(to_string(type))))
    return s;
  const auto o = by_owner.find(std::string(owner));
  return check(limits.per_owner, std::string(owner), o == by_owner.end() ? 0 : o->second.bytes, LimitScope::Owner,
               std::string(owner));
}

std::vector<OwnerRank> top_owners(const std::map<std::string, OwnerUsage>& usage, std::size_t count) {
  std::vector<OwnerRank> out;
  out.reserve(usage.size());
  for (const auto& [owner, u] : usage)
    if (u.allocations > 0 || u.bytes > 0) out.push_back({owner, u.bytes, u.allocations});
  std::sort(out.begin(), out.end(), [](const OwnerRank& a, const OwnerRank& b) {
    if (a.requested_bytes != b.requested_bytes) return a.requested_bytes > b.requested_bytes;
    if (a.allocations != b.allocations) return a.allocations > b.allocations;
    return a.owner < b.owner;
  });
  if (out.size() > count) out.resize(count);
  return out;
}

Analytics::Analytics(std::vector<DeviceId> devices, AnalyticsOptions options) : options_(std::move(options)) {
  for (DeviceId d : devices) devices_.try_emplace(d);
}

std::chrono::system_clock::time_point Analytics::now() const {
  return options_.clock ? options_.clock() : std::chrono::system_clock::now();
}

void Analytics::on_sample(const MemoryStatusReport& report) {
  const auto at = options_.clock ? options_.clock() : report.sampled_at;
  std::lock_guard lock(mu_);
  for (const DeviceStatus& d : report.devices) {
    auto it = devices_.find(d.info.id);
    if (it == devices_.end()) continue;
    DeviceState& s = it->second;
    std::uint64_t allocations = 0, frees = 0;
    for (const auto& [type, pool] : d.pools) {
      allocations += pool.total_allocations;
      frees += pool.total_frees;
    }
    std::array<double, kDeviceFieldCount> v{};
    v[static_cast<std::size_t>(DeviceField::used_bytes)] = static_cast<double>(d.used_bytes);
    v[static_cast<std::size_t>(DeviceField::reserved_bytes)] = static_cast<double>(d.reserved_bytes);
    v[static_cast<std::size_t>(DeviceField::allocated_bytes)] = static_cast<double>(d.allocated_bytes);
    v[static_cast<std::size_t>(DeviceField::fragmentation)] = d.fragmentation;
    v[static_cast<std::size_t>(DeviceField::pressure_percent)] = d.pressure.percent;
    double alloc_rate = kNone, free_rate = kNone;
    // A rate needs time to have passed and counters that only grew (a pool
    // is never destroyed, but a device's first pool may appear between two
    // samples: that still only adds).
    if (s.last_at) {
      const double dt = seconds_between(*s.last_at, at);
      if (dt > 0 && allocations >= s.last_allocations && frees >= s.last_frees) {
        alloc_rate = static_cast<double>(allocations - s.last_allocations) / dt;
        free_rate = static_cast<double>(frees - s.last_frees) / dt;
      }
    }
    v[static_cast<std::size_t>(DeviceField::allocations_per_second)] = alloc_rate;
    v[static_cast<std::size_t>(DeviceField::frees_per_second)] = free_rate;
    s.series.add(at, v);
    if (!s.last_at || at > *s.last_at) {
      s.last_at = at;
      s.last_allocations = allocations;
      s.last_frees = frees;
    }
  }
  if (report.transfers) {
    const std::uint64_t copied = report.transfers->bytes_copied;
    double rate = kNone;
    if (transfers_last_at_) {
      const double dt = seconds_between(*transfers_last_at_, at);
      if (dt > 0 && copied >= last_bytes_copied_) rate = static_cast<double>(copied - last_bytes_copied_) / dt;
    }
    transfers_.add(at, std::array<double, 1>{rate});
    if (!transfers_last_at_ || at > *transfers_last_at_) {
      transfers_last_at_ = at;
      last_bytes_copied_ = copied;
    }
  }
}

void Analytics::note_failure(DeviceId device, ErrorCode code, std::optional<QuotaShortfall> shortfall) {
  if (code != ErrorCode::out_of_memory && code != ErrorCode::quota_exceeded) return;
  const auto at = now();
  std::lock_guard lock(mu_);
  auto it = devices_.find(device);
  if (it != devices_.end()) {
    FailureCounts& f = it->second.failures;
    (code == ErrorCode::out_of_memory ? f.out_of_memory : f.quota_exceeded) += 1;
    f.last_at = at;
  }
  if (code != ErrorCode::quota_exceeded || !shortfall) return;
  shortfall->at = at;
  auto same = std::find_if(shortfalls_.begin(), shortfalls_.end(), [&](const QuotaShortfall& s) {
    return s.scope == shortfall->scope && s.key == shortfall->key;
  });
  std::uint64_t failures = 1;
  if (same != shortfalls_.end()) {
    failures += same->failures;
    shortfalls_.erase(same);
  } else if (shortfalls_.size() >= kMaxShortfalls) {
    shortfalls_.erase(shortfalls_.begin());
  }
  shortfall->failures = failures;
  shortfalls_.push_back(std::move(*shortfall));
}

FailureCounts Analytics::failures(std::optional<DeviceId> device) const {
  std::lock_guard lock(mu_);
  FailureCounts out;
  for (const auto& [id, s] : devices_)
    if (!device || *device == id) out.merge(s.failures);
  return out;
}

std::vector<QuotaShortfall> Analytics::shortfalls() const {
  std::lock_guard lock(mu_);
  return {shortfalls_.rbegin(), shortfalls_.rend()};
}

Result<AnalyticsReport> Analytics::query(const AnalyticsQuery& q) const {
  std::lock_guard lock(mu_);
  if (q.device && !devices_.contains(*q.device))
    return fail(ErrorCode::not_found, "no analytics for device {}: memd has no such device", q.device->to_string());
  AnalyticsReport report;
  for (const auto& [id, s] : devices_) {
    if (q.device && *q.device != id) continue;
    auto window = s.series.query(q.window_seconds, q.resolution, q.points);
    if (!window) return fail(window.error());
    report.devices.push_back({id, std::move(*window), s.failures});
    report.failures.merge(s.failures);
  }
  auto transfers = transfers_.query(q.window_seconds, q.resolution, q.points);
  if (!transfers) return fail(transfers.error());
  report.transfers = std::move(*transfers);
  return report;
}

Result<void> Analytics::validate() const {
  std::lock_guard lock(mu_);
  for (const auto& [id, s] : devices_)
    if (auto ok = s.series.validate(); !ok)
      return fail(ok.error().code, "{}: {}", id.to_string(), ok.error().message);
  if (shortfalls_.size() > kMaxShortfalls)
    return fail(ErrorCode::internal, "analytics: {} shortfalls kept, at most {}", shortfalls_.size(), kMaxShortfalls);
  return transfers_.validate();
}

}  // namespace memd
