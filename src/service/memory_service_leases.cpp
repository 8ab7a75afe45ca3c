// MemoryService's leases (client mode): memory a worker process maps and
// sub-allocates itself, counted here. See memory_service.hpp, "Leases".
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "service/memory_service.hpp"

namespace memd {

Result<LeaseGrant> MemoryService::lease(const Caller& caller, std::optional<DeviceId> device,
                                        const std::optional<std::string>& gpu_uuid, std::uint64_t bytes,
                                        std::uint64_t connection, std::int64_t pid) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  if (device.has_value() == gpu_uuid.has_value())
    return fail(ErrorCode::invalid_argument, "a lease names its device by deviceId or by gpuUuid, exactly one");
  if (gpu_uuid) {
    for (const auto& d : catalog_->devices())
      if (!d.uuid.empty() && d.uuid == *gpu_uuid) device = d.id;
    if (!device) return fail(ErrorCode::not_found, "no GPU with UUID '{}' here", *gpu_uuid);
  }
  if (!device->is_gpu_like())
    return fail(ErrorCode::invalid_argument, "leases are of GPU memory (cuda:N or host:N), not {}",
                device->to_string());
  AllocationRequest request;
  request.size_bytes = bytes;
  request.memory_type = MemoryType::VRAM;
  request.device = *device;
  request.name = pid > 0 ? fmt::format("lease of pid {}", pid) : "lease";
  request.tags = {"lease"};
  request.exportable = true;
  auto record = allocate(caller, request);  // every limit, quota and pressure check
  if (!record) return fail(record.error());
  auto undo = [&](const Error& why) -> Result<LeaseGrant> {
    if (auto freed = manager_->deallocate(record->id)) {
      history_->freed(*freed);
      sessions_->detach(record->id);
    }
    return fail(why);
  };
  auto hold = manager_->hold(record->id);
  if (!hold) return undo(hold.error());
  auto fd = manager_->export_fd(*hold);
  if (!fd) return undo(fd.error());
  LeaseGrant grant;
  grant.allocation = *record;
  grant.segment = fd->second;
  grant.fd = fd->first;
  if (auto info = catalog_->info(record->device)) grant.gpu_uuid = info->uuid;
  {
    std::lock_guard lock(imports_mutex_);
    leases_.emplace(connection, HeldLease{record->id, std::move(*hold), record->device, record->owner, bytes});
  }
  spdlog::debug("lease {} of {} bytes on {} for '{}' (connection {}, pid {})", record->id.to_string(), bytes,
                record->device.to_string(), record->owner, connection, pid);
  return grant;
}

Result<AllocationRecord> MemoryService::release_lease(const Caller& caller, const AllocationId& id,
                                                      std::uint64_t connection) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  std::optional<HeldLease> taken;
  {
    std::lock_guard lock(imports_mutex_);
    auto [first, last] = leases_.equal_range(connection);
    for (auto it = first; it != last; ++it)
      if (it->second.id == id) {
        taken = std::move(it->second);
        leases_.erase(it);
        break;
      }
  }
  if (!taken) return fail(ErrorCode::not_found, "{} is not a lease of this connection", id.to_string());
  auto record = manager_->get(id);
  end_lease(*taken, "given back");
  if (!record) return fail(ErrorCode::not_found, "lease {}: its allocation is gone", id.to_string());
  return *record;
}

void MemoryService::end_lease(const HeldLease& lease, std::string_view why) {
  // not_found: its owner (or a session's end) freed it already; the hold
  // kept it counted until now.
  auto record = manager_->deallocate(lease.id);
  if (record) {
    const auto counters = history_->freed(*record);
    sessions_->detach(lease.id);
    freed(lease.id);
    monitor_->note_usage(record->device, counters);
  } else if (record.error().code != ErrorCode::not_found) {
    spdlog::warn("lease {} of '{}': freeing it failed: {}", lease.id.to_string(), lease.owner,
                 record.error().message);
  }
  spdlog::debug("lease {} of '{}' ({} bytes) ended: {}", lease.id.to_string(), lease.owner, lease.bytes, why);
}

LeaseCounts MemoryService::lease_counts() const {
  LeaseCounts c;
  std::lock_guard lock(imports_mutex_);
  std::uint64_t last_connection = 0;
  bool any = false;
  for (const auto& [connection, l] : leases_) {
    ++c.leases;
    c.bytes += l.bytes;
    c.bytes_by_owner[l.owner] += l.bytes;
    c.bytes_by_device[l.device] += l.bytes;
    if (!any || connection != last_connection) ++c.connections;
    any = true;
    last_connection = connection;
  }
  return c;
}

}  // namespace memd
