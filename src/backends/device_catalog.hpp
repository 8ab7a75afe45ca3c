// backends/device_catalog.hpp — every device memd found, and who serves it.
//
// discover() builds the host backend (cpu + host:N stand-in devices) and, when
// compiled with CUDA, the CUDA backend (every GPU; none without a driver). It
// routes a (device, memory type) pair to the backend that serves it: cuda:N to
// CUDA; host:N and cpu RAM to host; cpu SharedMemory/UnifiedMemory to CUDA when
// a GPU exists (real pinned / managed memory), else to host.
//
// Thread safety: immutable after discover(); all methods are const-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/backend.hpp"
#include "memd/device.hpp"
#include "memd/size.hpp"

namespace memd {

struct BackendOptions {
  std::uint64_t host_device_bytes = 8 * kGiB;  // capacity of each host:N
  int host_devices = 1;                         // how many host:N; 0 for none
  std::uint64_t host_granularity = 2 * kMiB;    // host:N mapping granularity
  bool enable_cuda = true;                      // ignored when built without CUDA
};

class DeviceCatalog {
 public:
  static Result<std::unique_ptr<DeviceCatalog>> discover(const BackendOptions& options);

  const std::vector<DeviceInfo>& devices() const noexcept { return devices_; }
  Result<DeviceInfo> info(DeviceId device) const;
  // The backend for this device and memory type, or not_found (no such device,
  // or the device offers no memory of that type).
  Result<Backend*> backend_for(DeviceId device, MemoryType type) const;
  // First GPU if any, else host:0, else cpu.
  DeviceId default_device() const noexcept;
  bool has_cuda_devices() const noexcept;
  const std::vector<std::unique_ptr<Backend>>& backends() const noexcept { return backends_; }

 private:
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<DeviceInfo> devices_;
  Backend* host_ = nullptr;
  Backend* cuda_ = nullptr;
};

}  // namespace memd
