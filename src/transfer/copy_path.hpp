// transfer/copy_path.hpp — which way bytes go between two places.
//
// Every copy memd makes (a transfer, a move, memory_copy) picks one of three
// paths from where its two sides live:
//   * HostMemcpy  — neither side is device memory: memcpy on a host stream
//                   worker (system RAM, pinned RAM, host:N stand-in GPUs);
//   * DeviceAsync — device memory on one side and device or pinned host
//                   memory on the other: an async copy on a stream of the
//                   device side's backend (the copy engines; peer-to-peer
//                   between GPUs where the driver allows it);
//   * Staged      — device memory on one side and pageable host memory on
//                   the other: through a ring of pinned staging buffers, the
//                   host-side memcpy (on several threads) overlapping the
//                   device copy, instead of a pageable cudaMemcpy.
// plan_path() is a pure function of the two endpoints, unit-tested without
// any device. host:N memory is pageable host memory; tests can ask for it
// to count as device memory (stage_host_devices) so the staged pipeline and
// the device path run in CI exactly as they do on a GPU.
//
// Thread safety: pure functions over values.
#pragma once

#include <cstdint>
#include <string_view>

#include "alloc/allocation_hold.hpp"
#include "backends/backend.hpp"

namespace memd {

enum class Place : std::uint8_t { HostPageable, HostPinned, Device };
enum class CopyPath : std::uint8_t { HostMemcpy, DeviceAsync, Staged };

std::string_view to_string(Place place) noexcept;
// Wire names: "host_memcpy", "device_async", "staged".
std::string_view to_string(CopyPath path) noexcept;

struct Endpoint {
  Backend* backend = nullptr;
  DeviceId device;
  Place place = Place::HostPageable;
};

// Where an allocation's bytes live, as a copy sees them.
Endpoint endpoint_of(const AllocationLocation& location, bool stage_host_devices);

struct PathPlan {
  CopyPath path = CopyPath::HostMemcpy;
  // DeviceAsync and Staged: the backend and device whose stream carries the
  // device copy. HostMemcpy: unset (the engine's host backend does it).
  Backend* backend = nullptr;
  DeviceId device;
  // Staged: true when the device side is the destination (host → device).
  bool to_device = false;
};

PathPlan plan_path(Endpoint source, Endpoint destination);

}  // namespace memd
