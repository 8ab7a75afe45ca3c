// memd/memory_types.hpp — the domain enums shared by every layer and the wire.
//
// Integer values are fixed: they are the seed platform's values, and clients
// written against it send them. On the wire enums travel as their string names
// ("VRAM"); parse_* also accepts the integer written as a decimal string, and
// protocol code accepts a JSON integer through the *_from_int functions.
//
// Thread safety: pure functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace memd {

// Where bytes live. SharedMemory is pinned host memory that other processes
// and the GPU can reach; UnifiedMemory is CUDA managed memory.
enum class MemoryType : std::uint8_t {
  Unknown = 0,
  RAM = 1,
  VRAM = 2,
  SharedMemory = 3,
  UnifiedMemory = 4,
};

// What an allocation is for; informs eviction and analytics, never placement.
enum class MemoryAllocationType : std::uint8_t {
  Unknown = 0,
  Model = 1,      // model weights
  Tensor = 2,     // activations and other tensors
  Buffer = 3,     // a general byte buffer
  Cache = 4,      // reclaimable cache (KV cache, RAM tier)
  Workspace = 5,  // scratch space of a kernel or library
  Staging = 6,    // transfer staging
};

enum class MemoryAllocationStatus : std::uint8_t {
  Unknown = 0,
  Allocated = 1,
  Freed = 2,
  Moving = 3,    // being relocated by defragmentation
  Exported = 4,  // shared with another process; pinned in place
  Failed = 5,
  Freeing = 6,   // freed while a transfer or an importer still uses it: the memory
                 // goes back once they drain (not the seed's: memd's addition)
};

// Lower priorities are evicted or cleared first.
enum class MemoryPriority : std::uint8_t {
  Low = 0,
  Normal = 1,
  High = 2,
  Critical = 3,  // never evicted or cleared implicitly
};

enum class MemoryTransferStatus : std::uint8_t {
  Pending = 0,
  InProgress = 1,
  Completed = 2,
  Failed = 3,
  Cancelled = 4,
};

enum class MemoryHealthStatus : std::uint8_t {
  Unknown = 0,
  Healthy = 1,
  Warning = 2,   // pressure high or fragmentation high; still serving
  Critical = 3,  // allocations are failing or about to
  Failed = 4,    // the device does not answer
};

std::string_view to_string(MemoryType v) noexcept;
std::string_view to_string(MemoryAllocationType v) noexcept;
std::string_view to_string(MemoryAllocationStatus v) noexcept;
std::string_view to_string(MemoryPriority v) noexcept;
std::string_view to_string(MemoryTransferStatus v) noexcept;
std::string_view to_string(MemoryHealthStatus v) noexcept;

// Name (exact, case-insensitive) or decimal integer → value; nullopt otherwise.
std::optional<MemoryType> parse_memory_type(std::string_view s) noexcept;
std::optional<MemoryAllocationType> parse_allocation_type(std::string_view s) noexcept;
std::optional<MemoryAllocationStatus> parse_allocation_status(std::string_view s) noexcept;
std::optional<MemoryPriority> parse_priority(std::string_view s) noexcept;
std::optional<MemoryTransferStatus> parse_transfer_status(std::string_view s) noexcept;
std::optional<MemoryHealthStatus> parse_health_status(std::string_view s) noexcept;

std::optional<MemoryType> memory_type_from_int(std::int64_t v) noexcept;
std::optional<MemoryAllocationType> allocation_type_from_int(std::int64_t v) noexcept;
std::optional<MemoryAllocationStatus> allocation_status_from_int(std::int64_t v) noexcept;
std::optional<MemoryPriority> priority_from_int(std::int64_t v) noexcept;

// All values of each enum, in integer order (for docs, OpenAPI and tests).
std::span<const MemoryType> all_memory_types() noexcept;
std::span<const MemoryAllocationType> all_allocation_types() noexcept;
std::span<const MemoryAllocationStatus> all_allocation_statuses() noexcept;
std::span<const MemoryPriority> all_priorities() noexcept;
std::span<const MemoryTransferStatus> all_transfer_statuses() noexcept;
std::span<const MemoryHealthStatus> all_health_statuses() noexcept;

}  // namespace memd
