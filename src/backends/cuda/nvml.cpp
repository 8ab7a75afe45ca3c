// NVML through dlopen; the library handle is kept for the process lifetime.
#include "backends/cuda/nvml.hpp"

#include <dlfcn.h>

#include <mutex>

namespace memd::cuda {
namespace {

// The subset of nvml.h memd needs, with the layouts NVML documents.
using NvmlReturn = int;  // nvmlReturn_t; 0 is NVML_SUCCESS
constexpr NvmlReturn kNvmlSuccess = 0;
struct NvmlDeviceOpaque;
using NvmlDevice = NvmlDeviceOpaque*;
struct NvmlMemoryV1 {  // nvmlMemory_t
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

struct Nvml {
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*handle_by_bus_id)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*memory_info)(NvmlDevice, NvmlMemoryV1*) = nullptr;
  bool ready = false;
};

const Nvml& nvml() {
  static Nvml lib;
  static std::once_flag once;
  std::call_once(once, [] {
    void* handle = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) return;
    lib.init = reinterpret_cast<decltype(lib.init)>(::dlsym(handle, "nvmlInit_v2"));
    lib.handle_by_bus_id = reinterpret_cast<decltype(lib.handle_by_bus_id)>(
        ::dlsym(handle, "nvmlDeviceGetHandleByPciBusId_v2"));
    lib.memory_info =
        reinterpret_cast<decltype(lib.memory_info)>(::dlsym(handle, "nvmlDeviceGetMemoryInfo"));
    lib.ready = lib.init != nullptr && lib.handle_by_bus_id != nullptr &&
                lib.memory_info != nullptr && lib.init() == kNvmlSuccess;
    // Never dlclose: NVML is cheap to keep and shutting it down at exit races
    // other static destructors for nothing.
  });
  return lib;
}

}  // namespace

std::optional<NvmlMemory> nvml_memory(const std::string& bus_id) {
  const auto& lib = nvml();
  if (!lib.ready || bus_id.empty()) return std::nullopt;
  NvmlDevice device = nullptr;
  if (lib.handle_by_bus_id(bus_id.c_str(), &device) != kNvmlSuccess) return std::nullopt;
  NvmlMemoryV1 memory{};
  if (lib.memory_info(device, &memory) != kNvmlSuccess || memory.free > memory.total)
    return std::nullopt;
  return NvmlMemory{memory.total, memory.free};
}

}  // namespace memd::cuda
