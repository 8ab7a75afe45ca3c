// service/memory_service.hpp — the Memory domain's one facade.
//
// MemoryService owns the device catalog (built from BackendOptions) and the
// MemoryManager, and answers every operation both transports expose: status,
// usage, allocation listing and details, allocate/deallocate, byte access,
// limits, clear, optimize, health and devices. Transports never reach past it
// to a manager, so the two doors cannot behave differently. Later managers
// (transfers, monitor, models) are owned and wired here too.
//
// Input has already been shaped by the protocol layer; the service still
// checks what only it can know (that a device exists and offers the memory
// type, that a size is in range) so in-process callers get the same errors.
//
// Thread safety: every method is thread-safe; calls may run concurrently from
// any number of transport threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/error.hpp"
#include "service/reports.hpp"

namespace memd {

struct ServiceOptions {
  BackendOptions backends;
  ManagerOptions manager;
};

class MemoryService {
 public:
  static Result<std::unique_ptr<MemoryService>> create(const ServiceOptions& options);
  ~MemoryService();
  MemoryService(const MemoryService&) = delete;
  MemoryService& operator=(const MemoryService&) = delete;

  const DeviceCatalog& catalog() const noexcept { return *catalog_; }
  MemoryManager& manager() noexcept { return *manager_; }

  // All devices, or one (not_found for an unknown device).
  Result<MemoryStatusReport> status(std::optional<DeviceId> device) const;
  UsageReport usage() const;
  AllocationPage allocations(const AllocationQuery& query) const;
  Result<AllocationRecord> allocation(const AllocationId& id) const;

  Result<AllocationRecord> allocate(const AllocationRequest& request);
  Result<AllocationRecord> deallocate(const AllocationId& id);
  Result<void> write(const AllocationId& id, std::uint64_t offset, std::span<const std::byte> data);
  Result<std::vector<std::byte>> read(const AllocationId& id, std::uint64_t offset,
                                      std::uint64_t length);

  Limits limits() const;
  // Applies one change and returns the limits now in force.
  Result<Limits> update_limits(const LimitUpdate& update);

  // Trims cached memory; with any filter set also frees the matching
  // allocations (never everything by accident: no filter, no frees).
  ClearReport clear(const ClearRequest& request);
  OptimizeReport optimize();
  HealthReport health() const;
  std::vector<DeviceInfo> devices() const;

  // Frees everything `owner` holds (pinned included): a stdio host's exit.
  std::vector<AllocationRecord> release_owner(std::string_view owner);

 private:
  MemoryService() = default;
  std::uint64_t reserved_total() const;

  std::unique_ptr<DeviceCatalog> catalog_;
  std::unique_ptr<MemoryManager> manager_;
  std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  // Limit updates are read-modify-write of the manager's whole Limits value.
  std::mutex limits_mutex_;
};

}  // namespace memd
