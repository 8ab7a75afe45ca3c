// backends/page_run.hpp — validation of a map/unmap request against a range.
//
// Both backends promise the same thing for map()/unmap(): offset and bytes are
// multiples of the device granularity, bytes is non-zero and the run lies
// inside the reserved range. Checking it in one place keeps the two backends'
// error codes and messages identical, which the conformance suite relies on.
//
// Thread safety: pure functions over values.
#pragma once

#include <cstdint>

#include "backends/backend.hpp"

namespace memd {

// A validated run of whole pages inside a range, in page units.
struct PageRun {
  std::uint64_t first_page = 0;
  std::uint64_t page_count = 0;
};

inline bool is_power_of_two(std::uint64_t v) noexcept { return v != 0 && (v & (v - 1)) == 0; }

inline std::uint64_t round_up(std::uint64_t v, std::uint64_t alignment) noexcept {
  return (v + alignment - 1) / alignment * alignment;
}

// invalid_argument unless [offset, offset + bytes) is a non-empty run of whole
// granules inside a range of range_size bytes.
inline Result<PageRun> check_page_run(const VirtualRange& range, std::uint64_t offset,
                                      std::uint64_t bytes, std::uint64_t granularity) {
  if (granularity == 0)
    return fail(ErrorCode::invalid_argument, "device {} has no virtual memory",
                range.device.to_string());
  if (bytes == 0) return fail(ErrorCode::invalid_argument, "cannot map or unmap 0 bytes");
  if (offset % granularity != 0 || bytes % granularity != 0)
    return fail(ErrorCode::invalid_argument,
                "offset {} and size {} must be multiples of the granularity {}", offset, bytes,
                granularity);
  // Written so that a huge offset cannot overflow the sum.
  if (offset > range.size || bytes > range.size - offset)
    return fail(ErrorCode::invalid_argument,
                "run [{}, +{}) lies outside the reserved range of {} bytes", offset, bytes,
                range.size);
  return PageRun{offset / granularity, bytes / granularity};
}

// invalid_argument unless unit_bytes (map()'s unit size, 0 = the whole run)
// is a multiple of the granularity.
inline Result<void> check_unit_size(std::uint64_t unit_bytes, std::uint64_t granularity) {
  if (unit_bytes % granularity != 0)
    return fail(ErrorCode::invalid_argument, "unit size {} is not a multiple of the granularity {}", unit_bytes,
                granularity);
  return {};
}

}  // namespace memd
