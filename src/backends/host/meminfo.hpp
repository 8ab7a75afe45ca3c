// backends/host/meminfo.hpp — system memory as Linux reports it in /proc/meminfo.
//
// The `cpu` device's totals come from MemTotal and MemAvailable (not MemFree:
// page cache the kernel can drop is available to memd too). Parsing is split
// from reading so tests can feed it text.
//
// Thread safety: pure functions; read_meminfo() only reads a procfs file.
#pragma once

#include <cstdint>
#include <string_view>

#include "memd/error.hpp"

namespace memd {

struct SystemMemory {
  std::uint64_t total_bytes = 0;      // MemTotal
  std::uint64_t available_bytes = 0;  // MemAvailable
};

// Parses /proc/meminfo text ("MemTotal:  16384 kB" lines). invalid_argument
// when MemTotal or MemAvailable is missing or malformed, or available > total.
Result<SystemMemory> parse_meminfo(std::string_view text);

// Reads and parses /proc/meminfo; backend_error when it cannot be read.
Result<SystemMemory> read_meminfo();

}  // namespace memd
