// Quotas: limits and the counters checked against them.
#include "alloc/quotas.hpp"

#include <algorithm>

#include "memd/size.hpp"

namespace memd {
namespace {

// Subtracts from a counter that must hold at least n and drops it at zero,
// so maps list only scopes with something in them.
template <class Map, class Key>
void take_off(Map& map, const Key& key, std::uint64_t n) {
  auto it = map.find(key);
  if (it == map.end()) return;
  it->second -= std::min(it->second, n);
  if (it->second == 0) map.erase(it);
}

void take_off_usage(std::map<std::string, OwnerUsage>& map, const std::string& owner, std::uint64_t bytes) {
  auto it = map.find(owner);
  if (it == map.end()) return;
  it->second.bytes -= std::min(it->second.bytes, bytes);
  it->second.allocations -= std::min<std::uint64_t>(it->second.allocations, 1);
  if (it->second.allocations == 0) map.erase(it);
}

}  // namespace

Result<void> Quotas::set_limits(const Limits& limits) {
  for (const auto& [device, bytes] : limits.per_device)
    if (bytes > kMaxRequestBytes) return fail(ErrorCode::invalid_argument, "limit out of range");
  for (const auto& [type, bytes] : limits.per_memory_type) {
    if (type == MemoryType::Unknown) return fail(ErrorCode::invalid_argument, "no limit for memory type Unknown");
    if (bytes > kMaxRequestBytes) return fail(ErrorCode::invalid_argument, "limit out of range");
  }
  for (const auto& [owner, bytes] : limits.per_owner) {
    if (auto ok = check_owner(owner); !ok) return ok;
    if (bytes > kMaxRequestBytes) return fail(ErrorCode::invalid_argument, "limit out of range");
  }
  std::lock_guard lock(mu_);
  limits_ = limits;
  return {};
}

Limits Quotas::limits() const {
  std::lock_guard lock(mu_);
  return limits_;
}

Result<void> Quotas::reserve(const QuotaCharge& c) {
  const std::uint64_t size = c.bytes;
  auto check = [&](const auto& table, const auto& key, std::uint64_t used, std::string_view scope) -> Result<void> {
    auto it = table.find(key);
    if (it == table.end()) return {};
    if (used + size > it->second)
      return fail(ErrorCode::quota_exceeded,
                  "{} limit exceeded: requested {} ({} bytes), in use {} ({} bytes), limit {} ({} bytes)", scope,
                  format_size(size), size, format_size(used), used, format_size(it->second), it->second);
    return {};
  };
  std::lock_guard lock(mu_);
  auto dev = by_device_.find(c.device);
  auto type = by_type_.find(c.memory_type);
  auto owner = by_owner_.find(c.owner);
  const std::uint64_t dev_used = dev == by_device_.end() ? 0 : dev->second;
  const std::uint64_t type_used = type == by_type_.end() ? 0 : type->second;
  const std::uint64_t owner_used = owner == by_owner_.end() ? 0 : owner->second.bytes;
  if (auto r = check(limits_.per_device, c.device, dev_used, "device " + c.device.to_string()); !r) return r;
  if (auto r = check(limits_.per_memory_type, c.memory_type, type_used,
                     "memory type " + std::string(to_string(c.memory_type)));
      !r)
    return r;
  if (auto r = check(limits_.per_owner, c.owner, owner_used, "owner '" + c.owner + "'"); !r) return r;
  by_device_[c.device] += size;
  by_type_[c.memory_type] += size;
  auto& o = by_owner_[c.owner];
  o.bytes += size;
  o.allocations += 1;
  auto& f = in_flight_[c.owner];
  f.bytes += size;
  f.allocations += 1;
  return {};
}

void Quotas::land_locked(const QuotaCharge& c) { take_off_usage(in_flight_, c.owner, c.bytes); }

void Quotas::release_locked(const QuotaCharge& c) {
  take_off(by_device_, c.device, c.bytes);
  take_off(by_type_, c.memory_type, c.bytes);
  take_off_usage(by_owner_, c.owner, c.bytes);
}

void Quotas::land(const QuotaCharge& c) {
  std::lock_guard lock(mu_);
  land_locked(c);
}

void Quotas::cancel(const QuotaCharge& c) {
  std::lock_guard lock(mu_);
  land_locked(c);
  release_locked(c);
}

void Quotas::release(const QuotaCharge& c) {
  std::lock_guard lock(mu_);
  release_locked(c);
}

std::map<std::string, OwnerUsage> Quotas::usage_by_owner() const {
  std::lock_guard lock(mu_);
  return by_owner_;
}

std::map<DeviceId, std::uint64_t> Quotas::usage_by_device() const {
  std::lock_guard lock(mu_);
  return by_device_;
}

std::map<MemoryType, std::uint64_t> Quotas::usage_by_type() const {
  std::lock_guard lock(mu_);
  return by_type_;
}

std::map<std::string, OwnerUsage> Quotas::in_flight() const {
  std::lock_guard lock(mu_);
  return in_flight_;
}

Result<void> Quotas::reconcile(const std::map<std::string, OwnerUsage>& registered) const {
  std::lock_guard lock(mu_);
  std::map<std::string, OwnerUsage> expected = registered;
  for (const auto& [owner, u] : in_flight_) {
    expected[owner].bytes += u.bytes;
    expected[owner].allocations += u.allocations;
  }
  for (const auto& [owner, u] : expected) {
    auto it = by_owner_.find(owner);
    if (it == by_owner_.end() || it->second != u)
      return fail(ErrorCode::internal, "usage counters of owner '{}' disagree with the registry", owner);
  }
  if (expected.size() != by_owner_.size()) return fail(ErrorCode::internal, "stale owner usage entries");
  return {};
}

}  // namespace memd
