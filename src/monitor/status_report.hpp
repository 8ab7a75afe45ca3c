// monitor/status_report.hpp — memory_status's answer, as the monitor caches it.
//
// The sampler (monitor/monitor.hpp) builds one of these every interval from
// the backends' truth (the driver's memory info, never read on a request's
// path) and the pools' statistics; status queries answer from it, with the
// allocator's live counters laid over (allocated bytes and allocations move
// with every request, the rest changes on the sampler's clock).
//
// Thread safety: values.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "alloc/pool_stats.hpp"
#include "backends/backend.hpp"
#include "memd/device.hpp"
#include "memd/memory_types.hpp"
#include "monitor/pressure.hpp"
#include "transfer/staging_buffers.hpp"
#include "transfer/transfer_report.hpp"

namespace memd {

// One device's memory as seen by the backend and by memd.
struct DeviceStatus {
  DeviceInfo info;
  std::uint64_t total_bytes = 0;  // backend memory_info
  std::uint64_t used_bytes = 0;   // backend memory_info (every process where visible)
  std::uint64_t free_bytes = 0;   // backend memory_info
  std::uint64_t reserved_bytes = 0;   // memd's footprint on the device, all pools
  std::uint64_t allocated_bytes = 0;  // bytes memd's users hold, all pools
  std::uint64_t allocations = 0;      // live allocations, all pools
  double fragmentation = 0;           // 1 - largest free block / free bytes over all pools
  std::optional<std::uint64_t> limit_bytes;  // per-device limit, if set
  MemoryHealthStatus health = MemoryHealthStatus::Unknown;
  std::map<MemoryType, PoolStats> pools;  // per memory type pools that exist
  PressureReading pressure;               // monitor/pressure.hpp
  bool answered = false;                  // the backend's memory info could be read
  std::vector<std::string> health_reasons;  // monitor/health_policy.hpp; empty when Healthy
  DeviceHealthInfo hardware;              // ECC and remapping, where the device reports them
};

// The pinned pool (cpu SharedMemory): its limit, what it holds, and how much
// of that the transfer engine's staging buffers use right now.
struct PinnedPoolReport {
  std::uint64_t limit_bytes = 0;
  std::uint64_t reserved_bytes = 0;   // pinned memory held from the OS/driver
  std::uint64_t allocated_bytes = 0;  // SharedMemory allocations + staging buffers
  StagingStats staging;
};

struct MemoryStatusReport {
  std::vector<DeviceStatus> devices;
  MemoryHealthStatus health = MemoryHealthStatus::Unknown;  // worst of the devices
  // Machine-wide, so only in the status of every device (none named).
  std::optional<PinnedPoolReport> pinned;
  std::optional<TransferStats> transfers;
  // When the sampler read the devices (the live counters are newer).
  std::chrono::system_clock::time_point sampled_at;
  std::uint64_t sample = 0;  // the sampler's count: 1, 2, …
};

}  // namespace memd
