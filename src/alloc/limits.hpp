// alloc/limits.hpp — byte limits per device, per memory type and per owner.
//
// A limit caps the bytes allocated (as requested) in its scope. Limits are
// checked before the device is touched, so an over-limit request costs nothing
// and leaves every pool as it was. Absent = unlimited. A limit may be set below
// current use: existing allocations stay, new ones in that scope are refused.
//
// Thread safety: a value.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "memd/device.hpp"
#include "memd/memory_types.hpp"

namespace memd {

struct Limits {
  std::map<DeviceId, std::uint64_t> per_device;
  std::map<MemoryType, std::uint64_t> per_memory_type;
  std::map<std::string, std::uint64_t> per_owner;
  friend bool operator==(const Limits&, const Limits&) = default;
};

}  // namespace memd
