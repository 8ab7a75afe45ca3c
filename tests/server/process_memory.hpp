// tests/server/process_memory.hpp — a child daemon's resident memory, for the
// tests that hold the REST door to a memory budget.
//
// Test-only. Under a sanitizer, shadow memory, redzones and quarantine swamp
// the measurement, so those tests skip (kSanitized).
//
// Thread safety: free functions reading /proc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <thread>

#include "base/sanitizers.hpp"

namespace memd::testing {

inline constexpr bool kSanitized = kAddressSanitizer || kThreadSanitizer;

// VmRSS of `pid` in bytes (0 when it cannot be read).
inline std::uint64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

// RSS once it has stopped moving (the daemon finishes accepting and parking
// connections on its own threads), polled every 100 ms up to `polls` times.
inline std::uint64_t settled_resident_bytes(pid_t pid, int polls = 100) {
  std::uint64_t last = resident_bytes(pid);
  for (int i = 0; i < polls; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const std::uint64_t now = resident_bytes(pid);
    if (now == last) return now;
    last = now;
  }
  return last;
}

}  // namespace memd::testing
