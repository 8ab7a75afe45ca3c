// backends/device_catalog.hpp — every device memd found, and who serves it.
//
// discover() builds the host backend (cpu + host:N stand-in devices) and, when
// compiled with CUDA, the CUDA backend (every GPU; none without a driver). It
// routes a (device, memory type) pair to the backend that serves it: cuda:N to
// CUDA; host:N and cpu RAM to host; cpu SharedMemory/UnifiedMemory to CUDA when
// a GPU exists (real pinned / managed memory), else to host. It also tells
// how each GPU-like device reaches the others (DeviceInfo::peers,
// peer_access()): host:N to host:M directly (one address space), cuda:N to
// cuda:M directly where CUDA peer access works both ways, everything else
// staged through host memory.
//
// Thread safety: immutable after discover(); all methods are const-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backends/backend.hpp"
#include "memd/device.hpp"
#include "memd/size.hpp"

namespace memd {

inline constexpr std::size_t kMaxHostDevices = 64;

struct BackendOptions {
  // One entry per host:N, its capacity in bytes: host:N holds
  // host_device_sizes[N]. Empty: no host devices. At most kMaxHostDevices
  // entries, each at least one host_granularity page.
  std::vector<std::uint64_t> host_device_sizes{8 * kGiB};
  std::uint64_t host_granularity = 2 * kMiB;  // host:N mapping granularity
  bool enable_cuda = true;                    // ignored when built without CUDA
  // When set, every backend discovered is handed to it and the catalog
  // keeps what it returns (client mode wraps them in lease/lease_backend.hpp).
  std::function<std::unique_ptr<Backend>(std::unique_ptr<Backend>)> wrap;
};

class DeviceCatalog {
 public:
  static Result<std::unique_ptr<DeviceCatalog>> discover(const BackendOptions& options);

  const std::vector<DeviceInfo>& devices() const noexcept { return devices_; }
  Result<DeviceInfo> info(DeviceId device) const;
  // The backend for this device and memory type, or not_found (no such device,
  // or the device offers no memory of that type).
  Result<Backend*> backend_for(DeviceId device, MemoryType type) const;
  // How device `a` reaches memory of device `b`: Direct when a == b, or when
  // one backend serves both and lets each reach the other (can_access_peer
  // both ways); else Staged, which is also the answer for devices that do
  // not exist (a copy through host memory is always possible to describe).
  PeerAccess peer_access(DeviceId a, DeviceId b) const;
  // First GPU if any, else host:0, else cpu.
  DeviceId default_device() const noexcept;
  bool has_cuda_devices() const noexcept;
  const std::vector<std::unique_ptr<Backend>>& backends() const noexcept { return backends_; }

 private:
  // The backend that owns a GPU-like device (cuda:N or host:N); null for cpu.
  Backend* owner_of(DeviceId device) const noexcept;

  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<DeviceInfo> devices_;
  Backend* host_ = nullptr;
  Backend* cuda_ = nullptr;
};

}  // namespace memd
