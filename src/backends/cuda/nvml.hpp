// backends/cuda/nvml.hpp — device memory as NVML reports it, loaded with dlopen.
//
// The toolkit ships no nvml.h and memd must not require the NVIDIA driver's
// libraries to start, so libnvidia-ml.so.1 is opened at run time and the three
// entry points used are declared here. NVML's figures cover every process on
// the GPU. When NVML is absent or a call fails, memory() returns nullopt and
// the caller falls back to cudaMemGetInfo.
//
// Thread safety: loading happens once (std::call_once); queries are
// thread-safe as NVML documents its API to be.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "backends/backend.hpp"

namespace memd::cuda {

struct NvmlMemory {
  std::uint64_t total_bytes = 0;
  std::uint64_t free_bytes = 0;
};

// bus_id is the PCI id as cudaDeviceGetPCIBusId writes it ("0000:65:00.0").
std::optional<NvmlMemory> nvml_memory(const std::string& bus_id);

// ECC counts, retired pages and remapped rows: each field present where the
// GPU supports it (Hopper remaps rows and does not retire pages).
DeviceHealthInfo nvml_health(const std::string& bus_id);

}  // namespace memd::cuda
