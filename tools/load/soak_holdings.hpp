// load/soak_holdings.hpp — what a daemon holds, as the soak reads it before
// and after, and the soak's model file.
//
// The soak must leave nothing behind: every count here at the end must be at
// most its value at the start. The answers come from another process, so
// they are parsed defensively: an answer of another shape is refused (with
// why), never trusted or thrown on.
//
// Thread safety: values and pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace memd::load {

// Read from memory_status, memory_usage, memory_sessions (as the admin) and
// memory_model_status.
struct DaemonHoldings {
  // Pinned staging buffers (transfers' and model loads') are blocks of the
  // cpu SharedMemory pool kept idle for reuse, at most 16: a bounded cache,
  // not a leak. They are taken out of the allocation counts and bytes below
  // and reported on their own; those in use must be back to their start.
  std::uint64_t allocations = 0;        // status: devices[].allocations, less staging buffers
  std::uint64_t allocated_bytes = 0;    // status: devices[].allocatedBytes, less staging buffers
  std::uint64_t pool_bytes = 0;         // status: devices[].pools[].allocatedBytes, less staging buffers
  std::uint64_t usage_allocations = 0;  // usage: total.allocations, less staging buffers
  std::uint64_t requested_bytes = 0;    // usage: total.requestedBytes
  std::uint64_t sessions = 0;           // sessions[]: open sessions, every owner's
  std::uint64_t transfers_open = 0;     // status: transfers.pending + transfers.inProgress
  std::uint64_t models_holding = 0;     // models[] with vramBytes + ramBytes > 0
  std::uint64_t model_cache_bytes = 0;  // models: ramCacheBytes
  std::uint64_t staging_in_use = 0;     // status: pinned.stagingBuffersInUse (checked)
  std::uint64_t staging_idle = 0;       // status: pinned.stagingIdleBuffers (a cache: reported only)
};

std::optional<DaemonHoldings> parse_holdings(const std::string& status_json, const std::string& usage_json,
                                             const std::string& sessions_json, const std::string& models_json,
                                             std::string& why);
// The leaks: one line per count of `end` above `start` ("allocations 12 -> 13").
std::vector<std::string> compare_holdings(const DaemonHoldings& start, const DaemonHoldings& end);

// A one-tensor safetensors file: tensor "weight", dtype U8, shape [n], its
// bytes the pattern of `seed` (pattern.hpp) from 0.
std::string safetensors_file(std::uint64_t seed, std::uint64_t n);

}  // namespace memd::load
