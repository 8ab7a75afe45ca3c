// memd/sleep_report.hpp — what putting a region to sleep, and waking it, did.
//
// A region (a pool of its own on one device, memd/engine.hpp) can sleep: its
// contents are copied to one pinned host buffer (or dropped), its physical
// device memory is given back, and its addresses stay reserved; waking maps
// memory again at the same addresses and copies the contents back after
// checking them. These reports say how much moved and how long it took.
//
// Thread safety: value types.
#pragma once

#include <cstdint>

namespace memd {

struct SleepReport {
  std::uint64_t bytes = 0;     // device bytes given back (whole mapping units)
  std::uint64_t units = 0;     // mapping units unmapped
  double seconds = 0;          // the whole call: drain, copy, checksum, unmap
  bool kept_contents = false;  // false: the contents were dropped
};

struct WakeReport {
  std::uint64_t bytes = 0;     // device bytes mapped again
  std::uint64_t units = 0;     // mapping units mapped again
  double seconds = 0;          // the whole call: verify, map, copy back, free the host copy
  bool kept_contents = false;  // true: the contents came back (checked)
};

}  // namespace memd
