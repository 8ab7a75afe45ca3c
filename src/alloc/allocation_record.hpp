// alloc/allocation_record.hpp — what memd knows about one API allocation.
//
// Thread safety: a value. The registry hands out copies.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/memory_types.hpp"

namespace memd {

using Clock = std::chrono::system_clock;

struct AllocationRecord {
  AllocationId id;
  std::string owner;  // who allocated it: X-Memd-Owner, a stdio host, "models"
  std::string name;   // optional human label
  DeviceId device;
  MemoryType memory_type = MemoryType::VRAM;
  MemoryAllocationType allocation_type = MemoryAllocationType::Buffer;
  MemoryAllocationStatus status = MemoryAllocationStatus::Allocated;
  MemoryPriority priority = MemoryPriority::Normal;
  std::uint64_t size_bytes = 0;     // as requested
  std::uint64_t address = 0;        // device address (informational)
  std::vector<std::string> tags;
  bool pinned = false;              // must not move (exported, or asked for)
  bool exportable = false;          // memory of its own that other processes may map
  Clock::time_point created_at{};
  Clock::time_point last_used_at{};

  bool movable() const noexcept { return !pinned && status == MemoryAllocationStatus::Allocated; }
};

}  // namespace memd
