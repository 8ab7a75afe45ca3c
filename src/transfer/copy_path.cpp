// plan_path: the three copy paths, chosen from the two endpoints.
#include "transfer/copy_path.hpp"

namespace memd {

std::string_view to_string(Place place) noexcept {
  switch (place) {
    case Place::HostPageable: return "host_pageable";
    case Place::HostPinned: return "host_pinned";
    case Place::Device: return "device";
  }
  return "host_pageable";
}

std::string_view to_string(CopyPath path) noexcept {
  switch (path) {
    case CopyPath::HostMemcpy: return "host_memcpy";
    case CopyPath::DeviceAsync: return "device_async";
    case CopyPath::Staged: return "staged";
  }
  return "host_memcpy";
}

Endpoint endpoint_of(const AllocationLocation& location, bool stage_host_devices) {
  Endpoint e{location.backend, location.device, Place::HostPageable};
  if (location.backend->name() == "cuda") {
    // cuda serves GPUs' VRAM and managed memory, and cpu's pinned memory.
    e.place = location.type == MemoryType::SharedMemory ? Place::HostPinned : Place::Device;
  } else if (stage_host_devices && location.device.kind() == DeviceKind::Host) {
    e.place = Place::Device;
  } else if (location.type == MemoryType::SharedMemory) {
    e.place = Place::HostPinned;  // the host backend locks it in RAM (mlock)
  }
  return e;
}

PathPlan plan_path(Endpoint source, Endpoint destination) {
  const bool src_device = source.place == Place::Device;
  const bool dst_device = destination.place == Place::Device;
  if (src_device && dst_device && source.backend != destination.backend) {
    // Device memory of two backends (a GPU and a host:N counted as a device):
    // the host-backed one is host memory to the GPU, so the GPU's path applies.
    if (source.backend->name() == "host") source.place = Place::HostPageable;
    else destination.place = Place::HostPageable;
    return plan_path(source, destination);
  }
  if (!src_device && !dst_device) return PathPlan{CopyPath::HostMemcpy, nullptr, DeviceId::cpu(), false};
  if (src_device && dst_device) return PathPlan{CopyPath::DeviceAsync, source.backend, source.device, false};
  const Endpoint& device = src_device ? source : destination;
  const Endpoint& host = src_device ? destination : source;
  if (host.place == Place::HostPinned) return PathPlan{CopyPath::DeviceAsync, device.backend, device.device, false};
  return PathPlan{CopyPath::Staged, device.backend, device.device, dst_device};
}

}  // namespace memd
