// MemoryService: composes catalog, manager and health policy into the
// operations both transports expose.
#include "service/memory_service.hpp"

#include <algorithm>

#include "memd/size.hpp"
#include "service/health_policy.hpp"

namespace memd {
namespace {

double combined_fragmentation(std::uint64_t free_bytes, std::uint64_t largest_free) {
  if (free_bytes == 0) return 0;
  const double f = 1.0 - static_cast<double>(largest_free) / static_cast<double>(free_bytes);
  return std::clamp(f, 0.0, 1.0);
}

Result<void> check_device_offers(const DeviceCatalog& catalog, DeviceId device, MemoryType type) {
  auto backend = catalog.backend_for(device, type);
  if (!backend) return fail(backend.error());
  return {};
}

}  // namespace

Result<std::unique_ptr<MemoryService>> MemoryService::create(const ServiceOptions& options) {
  auto catalog = DeviceCatalog::discover(options.backends);
  if (!catalog) return fail(catalog.error());
  auto service = std::unique_ptr<MemoryService>(new MemoryService());
  service->catalog_ = std::move(*catalog);
  for (const auto& [device, policy] : options.manager.pool_policies)
    if (!service->catalog_->info(device))
      return fail(ErrorCode::not_found, "a pool policy names {}, which this machine does not have",
                  device.to_string());
  service->manager_ = std::make_unique<MemoryManager>(*service->catalog_, options.manager);
  return service;
}

// The manager must go before the catalog whose backends it holds memory of.
MemoryService::~MemoryService() { manager_.reset(); }

Result<MemoryStatusReport> MemoryService::status(std::optional<DeviceId> device) const {
  std::vector<DeviceInfo> infos;
  if (device) {
    auto info = catalog_->info(*device);
    if (!info) return fail(info.error());
    infos.push_back(std::move(*info));
  } else {
    infos = catalog_->devices();
  }
  const auto pools = manager_->pool_stats();
  const auto limits = manager_->limits();

  MemoryStatusReport report;
  report.health = MemoryHealthStatus::Healthy;
  for (auto& info : infos) {
    DeviceStatus s;
    s.info = info;
    s.total_bytes = info.total_bytes;
    s.free_bytes = info.free_bytes;
    s.used_bytes = info.total_bytes - std::min(info.total_bytes, info.free_bytes);
    bool answered = false;
    if (!info.memory_types.empty()) {
      auto backend = catalog_->backend_for(info.id, info.memory_types.front());
      if (backend) {
        auto mem = (*backend)->memory_info(info.id);
        if (mem) {
          s.total_bytes = mem->total_bytes;
          s.free_bytes = mem->free_bytes;
          s.used_bytes = mem->used_bytes;
          answered = true;
        }
      }
    }
    std::uint64_t pool_free = 0, largest_free = 0;
    for (const auto& [key, stats] : pools) {
      if (key.device != info.id) continue;
      s.pools.emplace(key.memory_type, stats);
      s.reserved_bytes += stats.reserved_bytes;
      s.allocated_bytes += stats.allocated_bytes;
      s.allocations += stats.live_allocations;
      pool_free += stats.free_bytes;
      largest_free = std::max(largest_free, stats.largest_free_block);
    }
    s.fragmentation = combined_fragmentation(pool_free, largest_free);
    if (auto it = limits.per_device.find(info.id); it != limits.per_device.end())
      s.limit_bytes = it->second;
    s.health = answered ? classify_health(s.total_bytes, s.free_bytes, s.fragmentation)
                        : MemoryHealthStatus::Failed;
    report.health = worse_health(report.health, s.health);
    report.devices.push_back(std::move(s));
  }
  return report;
}

UsageReport MemoryService::usage() const {
  UsageReport report;
  for (const auto& [key, stats] : manager_->pool_stats()) {
    for (UsageTotals* t : {&report.total, &report.by_device[key.device],
                           &report.by_memory_type[key.memory_type]}) {
      t->rounded_bytes = t->rounded_bytes.value_or(0) + stats.allocated_bytes;
      t->reserved_bytes = t->reserved_bytes.value_or(0) + stats.reserved_bytes;
      t->allocations += stats.live_allocations;
    }
  }
  // Requested bytes come from the quota counters (the sizes asked for), not
  // from the pools (which see only rounded blocks).
  for (const auto& [device, bytes] : manager_->requested_by_device()) {
    report.by_device[device].requested_bytes = bytes;
    report.total.requested_bytes += bytes;
  }
  for (const auto& [type, bytes] : manager_->requested_by_type()) report.by_memory_type[type].requested_bytes = bytes;
  for (const auto& [owner, use] : manager_->usage_by_owner()) {
    auto& t = report.by_owner[owner];
    t.requested_bytes = use.bytes;
    t.allocations = use.allocations;
  }
  return report;
}

AllocationPage MemoryService::allocations(const AllocationQuery& query) const {
  auto all = manager_->list(query.filter);
  AllocationPage page;
  page.total = all.size();
  page.offset = query.offset;
  page.limit = query.limit;
  if (query.offset < all.size()) {
    const auto first = all.begin() + static_cast<std::ptrdiff_t>(query.offset);
    const auto count = std::min<std::uint64_t>(query.limit, all.size() - query.offset);
    page.items.assign(std::make_move_iterator(first),
                      std::make_move_iterator(first + static_cast<std::ptrdiff_t>(count)));
  }
  return page;
}

Result<AllocationRecord> MemoryService::allocation(const AllocationId& id) const {
  return manager_->get(id);
}

Result<AllocationRecord> MemoryService::allocate(const AllocationRequest& request) {
  if (request.size_bytes == 0) return fail(ErrorCode::invalid_argument, "sizeBytes must be positive");
  if (request.size_bytes > kMaxRequestBytes)
    return fail(ErrorCode::out_of_memory, "sizeBytes {} exceeds the maximum request of {} bytes",
                request.size_bytes, kMaxRequestBytes);
  if (request.memory_type == MemoryType::Unknown)
    return fail(ErrorCode::invalid_argument, "memoryType Unknown cannot be allocated");
  if (request.owner.empty()) return fail(ErrorCode::invalid_argument, "owner must not be empty");
  if (request.device) {
    if (auto ok = check_device_offers(*catalog_, *request.device, request.memory_type); !ok)
      return fail(ok.error());
  }
  return manager_->allocate(request);
}

Result<AllocationRecord> MemoryService::deallocate(const AllocationId& id) {
  return manager_->deallocate(id);
}

Result<void> MemoryService::write(const AllocationId& id, std::uint64_t offset,
                                  std::span<const std::byte> data) {
  return manager_->write(id, offset, data);
}

Result<std::vector<std::byte>> MemoryService::read(const AllocationId& id, std::uint64_t offset,
                                                   std::uint64_t length) {
  return manager_->read(id, offset, length);
}

Limits MemoryService::limits() const { return manager_->limits(); }

Result<Limits> MemoryService::update_limits(const LimitUpdate& update) {
  const int scopes = int{update.device.has_value()} + int{update.memory_type.has_value()} +
                     int{update.owner.has_value()};
  if (scopes != 1)
    return fail(ErrorCode::invalid_argument,
                "a limit update names exactly one of deviceId, memoryType or owner");
  if (update.bytes && *update.bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "bytes {} exceeds the maximum of {}", *update.bytes,
                kMaxRequestBytes);
  if (update.device) {
    if (auto info = catalog_->info(*update.device); !info) return fail(info.error());
  }
  if (update.memory_type && *update.memory_type == MemoryType::Unknown)
    return fail(ErrorCode::invalid_argument, "memoryType Unknown cannot carry a limit");
  if (update.owner && update.owner->empty())
    return fail(ErrorCode::invalid_argument, "owner must not be empty");

  std::lock_guard lock(limits_mutex_);
  Limits limits = manager_->limits();
  auto apply = [&](auto& map, const auto& key) {
    if (update.bytes) map[key] = *update.bytes;
    else map.erase(key);
  };
  if (update.device) apply(limits.per_device, *update.device);
  if (update.memory_type) apply(limits.per_memory_type, *update.memory_type);
  if (update.owner) apply(limits.per_owner, *update.owner);
  if (auto ok = manager_->set_limits(limits); !ok) return fail(ok.error());
  return manager_->limits();
}

ClearReport MemoryService::clear(const ClearRequest& request) {
  ClearReport report;
  const bool any_filter = request.owner || request.memory_type || request.device ||
                          request.below_priority;
  if (any_filter) {
    AllocationFilter filter;
    filter.owner = request.owner;
    filter.memory_type = request.memory_type;
    filter.device = request.device;
    filter.below_priority = request.below_priority;
    report.freed = manager_->free_matching(filter, request.include_pinned);
    for (const auto& r : report.freed) report.freed_bytes += r.size_bytes;
  }
  // Trim after freeing so the memory just freed goes back to the device too.
  report.released_bytes = manager_->trim();
  return report;
}

OptimizeReport MemoryService::optimize() {
  OptimizeReport report;
  report.reserved_before = reserved_total();
  report.released_bytes = manager_->trim();
  report.reserved_after = reserved_total();
  return report;
}

HealthReport MemoryService::health() const {
  HealthReport report;
  auto status_report = status(std::nullopt);
  if (status_report) {
    report.status = status_report->health;
    for (const auto& d : status_report->devices) report.devices.push_back({d.info.id, d.health});
  } else {
    report.status = MemoryHealthStatus::Failed;
  }
  report.uptime = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::steady_clock::now() - started_at_);
  return report;
}

std::vector<DeviceInfo> MemoryService::devices() const { return catalog_->devices(); }

std::vector<AllocationRecord> MemoryService::release_owner(std::string_view owner) {
  AllocationFilter filter;
  filter.owner = std::string(owner);
  auto freed = manager_->free_matching(filter, /*include_pinned=*/true);
  manager_->trim();
  return freed;
}

std::uint64_t MemoryService::reserved_total() const {
  std::uint64_t total = 0;
  for (const auto& [key, stats] : manager_->pool_stats()) total += stats.reserved_bytes;
  return total;
}

}  // namespace memd
