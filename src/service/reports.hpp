// service/reports.hpp — the values MemoryService answers with.
//
// These are the service's results before any wire encoding: the protocol
// layer turns each into the camelCase JSON documented in docs/api.md. Byte
// counts are bytes; "device" numbers (total/used/free) are what the backend's
// memory_info sees, memd's own numbers (reserved/allocated/fragmentation)
// come from the pool statistics.
//
// Thread safety: values.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "alloc/allocation_record.hpp"
#include "alloc/memory_manager.hpp"
#include "alloc/pool_stats.hpp"
#include "backends/backend.hpp"
#include "memd/device.hpp"
#include "memd/memory_types.hpp"
#include "monitor/status_report.hpp"
#include "service/session_id.hpp"
#include "transfer/staging_buffers.hpp"
#include "transfer/transfer_report.hpp"

namespace memd {

// Two sizes of the same allocations, named so nobody mistakes one for the
// other: requested is what callers asked for (what limits count); rounded is
// what the pools hold for them (requests rounded up to size classes and
// pages). Reserved is what the pools hold from the device, used or not.
// Owners have no rounded or reserved figure: pools are per device and type.
struct UsageTotals {
  std::uint64_t requested_bytes = 0;
  std::optional<std::uint64_t> rounded_bytes;
  std::optional<std::uint64_t> reserved_bytes;
  std::uint64_t allocations = 0;
};

struct UsageReport {
  UsageTotals total;
  std::map<DeviceId, UsageTotals> by_device;
  std::map<MemoryType, UsageTotals> by_memory_type;
  std::map<std::string, UsageTotals> by_owner;
};

struct AllocationQuery {
  AllocationFilter filter;
  std::uint64_t offset = 0;
  std::uint64_t limit = 100;
};

struct AllocationPage {
  std::vector<AllocationRecord> items;  // newest first
  std::uint64_t total = 0;              // matches before paging
  std::uint64_t offset = 0;
  std::uint64_t limit = 0;
};

// Sets (or, with bytes absent, removes) exactly one limit.
struct LimitUpdate {
  std::optional<DeviceId> device;
  std::optional<MemoryType> memory_type;
  std::optional<std::string> owner;
  std::optional<std::uint64_t> bytes;
};

struct ClearRequest {
  std::optional<std::string> owner;
  std::optional<MemoryType> memory_type;
  std::optional<DeviceId> device;
  std::optional<MemoryPriority> below_priority;
  bool include_pinned = false;
};

struct ClearReport {
  std::vector<AllocationRecord> freed;  // allocations freed (empty for a trim-only clear)
  std::uint64_t freed_bytes = 0;        // their sizes, summed
  std::uint64_t released_bytes = 0;     // cached memory given back to the backends
};

struct OptimizeReport {
  std::uint64_t released_bytes = 0;
  std::uint64_t reserved_before = 0;
  std::uint64_t reserved_after = 0;
};

// A session as a client sees it: expiry in wall-clock time.
struct SessionReport {
  SessionId id;
  std::string owner;
  std::chrono::seconds ttl{0};
  Clock::time_point expires_at{};
  std::uint64_t allocations = 0;
  std::uint64_t allocated_bytes = 0;
};

// A closed session and what closing it released.
struct SessionCloseReport {
  SessionReport session;
  std::vector<AllocationRecord> released;
  std::uint64_t released_bytes = 0;
};

struct DeviceHealth {
  DeviceId device;
  MemoryHealthStatus health = MemoryHealthStatus::Unknown;
  std::vector<std::string> reasons;  // monitor/health_policy.hpp
  PressureLevel pressure = PressureLevel::Low;
  DeviceHealthInfo hardware;
};

struct HealthReport {
  MemoryHealthStatus status = MemoryHealthStatus::Unknown;
  std::vector<DeviceHealth> devices;
  std::chrono::seconds uptime{0};
};

}  // namespace memd
