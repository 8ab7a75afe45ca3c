// alloc/memory_manager.hpp — allocations made through memd's API.
//
// The MemoryManager owns one pool per (device, memory type), the allocation
// registry (GUID → record, O(1)), the limits, and the reclaim ladder: on a
// shortfall it trims cached memory, calls registered reclaim callbacks (the
// model manager registers one), retries, and only then fails with
// out_of_memory / quota_exceeded and the numbers that explain it.
// It also reads and writes an allocation's bytes through the backend.
//
// Thread safety: every method is thread-safe. Reclaim callbacks are called
// without the manager's locks held and may call back into the manager.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "alloc/allocation_record.hpp"
#include "alloc/device_pool.hpp"
#include "alloc/limits.hpp"
#include "alloc/pool_stats.hpp"
#include "backends/device_catalog.hpp"
#include "memd/error.hpp"

namespace memd {

struct AllocationRequest {
  std::uint64_t size_bytes = 0;
  MemoryType memory_type = MemoryType::VRAM;
  std::optional<DeviceId> device;  // default: the catalog's default device (cpu for RAM/SharedMemory)
  std::string owner = "anonymous";
  std::string name;
  MemoryPriority priority = MemoryPriority::Normal;
  MemoryAllocationType allocation_type = MemoryAllocationType::Buffer;
  std::vector<std::string> tags;
  bool pinned = false;
};

struct AllocationFilter {
  std::optional<DeviceId> device;
  std::optional<MemoryType> memory_type;
  std::optional<std::string> owner;
  std::optional<MemoryAllocationStatus> status;
  std::optional<std::string> tag;
  std::optional<MemoryPriority> below_priority;  // priority strictly lower than this
};

struct OwnerUsage {
  std::uint64_t bytes = 0;
  std::uint64_t allocations = 0;
};

struct PoolKey {
  DeviceId device;
  MemoryType memory_type = MemoryType::VRAM;
  friend auto operator<=>(const PoolKey&, const PoolKey&) = default;
};

// A reclaim callback is asked to free at least `needed` bytes on (device,
// type); it returns how many it freed. Registered by higher managers.
using ReclaimCallback = std::function<std::uint64_t(DeviceId, MemoryType, std::uint64_t needed)>;

struct ManagerOptions {
  // Fraction of a device's capacity memd may reserve, absent explicit limits.
  double max_device_fraction = 0.95;
};

class MemoryManager {
 public:
  MemoryManager(const DeviceCatalog& catalog, ManagerOptions options = {});
  ~MemoryManager();
  MemoryManager(const MemoryManager&) = delete;
  MemoryManager& operator=(const MemoryManager&) = delete;

  const DeviceCatalog& catalog() const noexcept;

  Result<AllocationRecord> allocate(const AllocationRequest& request);
  // Frees it and returns its final record (status Freed). Unknown id: not_found.
  Result<AllocationRecord> deallocate(const AllocationId& id);
  Result<AllocationRecord> get(const AllocationId& id) const;
  // Records matching the filter, newest first.
  std::vector<AllocationRecord> list(const AllocationFilter& filter) const;

  // Bounds-checked byte access; offset + length must lie inside the allocation.
  Result<void> write(const AllocationId& id, std::uint64_t offset, std::span<const std::byte> data);
  Result<std::vector<std::byte>> read(const AllocationId& id, std::uint64_t offset,
                                      std::uint64_t length);

  Result<void> set_limits(const Limits& limits);
  Limits limits() const;

  // Statistics of every pool that exists (created on first use).
  std::map<PoolKey, PoolStats> pool_stats() const;
  std::map<std::string, OwnerUsage> usage_by_owner() const;

  // Gives cached memory back to the backends; returns the bytes released.
  std::uint64_t trim();
  // Frees every allocation matching the filter (pinned ones included only if
  // include_pinned); returns the records freed.
  std::vector<AllocationRecord> free_matching(const AllocationFilter& filter, bool include_pinned);

  std::uint64_t add_reclaim_callback(ReclaimCallback callback);
  void remove_reclaim_callback(std::uint64_t handle);

  // The pool of (device, type), created on first use; for in-process users
  // (model manager, PyTorch shim) and for snapshots.
  Result<DevicePool*> pool(DeviceId device, MemoryType type);
  // Segments and blocks of every existing pool (for the dashboard).
  std::map<PoolKey, std::vector<SegmentInfo>> snapshot() const;

  // Checks every pool's invariants and the registry against them.
  Result<void> validate() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memd
