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
  // Optional entry points (health): absent ones leave their fields unknown.
  // nvmlDeviceGetTotalEccErrors(device, errorType: 0 corrected / 1
  // uncorrected, counterType: 0 volatile / 1 aggregate, count)
  NvmlReturn (*ecc_errors)(NvmlDevice, int, int, unsigned long long*) = nullptr;
  // nvmlDeviceGetRetiredPages(device, cause: 0 multiple single-bit / 1
  // double-bit, count in/out, addresses)
  NvmlReturn (*retired_pages)(NvmlDevice, int, unsigned int*, unsigned long long*) = nullptr;
  // nvmlDeviceGetRetiredPagesPendingStatus(device, enable state: 0/1)
  NvmlReturn (*retired_pending)(NvmlDevice, int*) = nullptr;
  // nvmlDeviceGetRemappedRows(device, corrRows, uncRows, isPending, failureOccurred)
  NvmlReturn (*remapped_rows)(NvmlDevice, unsigned int*, unsigned int*, unsigned int*, unsigned int*) = nullptr;
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
    lib.ecc_errors = reinterpret_cast<decltype(lib.ecc_errors)>(::dlsym(handle, "nvmlDeviceGetTotalEccErrors"));
    lib.retired_pages = reinterpret_cast<decltype(lib.retired_pages)>(::dlsym(handle, "nvmlDeviceGetRetiredPages"));
    lib.retired_pending =
        reinterpret_cast<decltype(lib.retired_pending)>(::dlsym(handle, "nvmlDeviceGetRetiredPagesPendingStatus"));
    lib.remapped_rows = reinterpret_cast<decltype(lib.remapped_rows)>(::dlsym(handle, "nvmlDeviceGetRemappedRows"));
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

DeviceHealthInfo nvml_health(const std::string& bus_id) {
  DeviceHealthInfo info;
  const auto& lib = nvml();
  if (!lib.ready || bus_id.empty()) return info;
  NvmlDevice device = nullptr;
  if (lib.handle_by_bus_id(bus_id.c_str(), &device) != kNvmlSuccess) return info;
  // Each query may answer NOT_SUPPORTED (no ECC, no retirement on this
  // architecture): that field stays unknown.
  if (lib.ecc_errors != nullptr) {
    unsigned long long count = 0;
    if (lib.ecc_errors(device, 0, 0, &count) == kNvmlSuccess) info.ecc_corrected = count;
    if (lib.ecc_errors(device, 1, 0, &count) == kNvmlSuccess) info.ecc_uncorrected = count;
  }
  if (lib.retired_pages != nullptr) {
    constexpr NvmlReturn kInsufficientSize = 7;  // NVML_ERROR_INSUFFICIENT_SIZE: count is set
    std::uint64_t total = 0;
    bool any = false;
    for (int cause : {0, 1}) {
      unsigned int count = 0;
      const NvmlReturn r = lib.retired_pages(device, cause, &count, nullptr);
      if (r == kNvmlSuccess || r == kInsufficientSize) {
        total += count;
        any = true;
      }
    }
    if (any) info.retired_pages = total;
  }
  if (lib.retired_pending != nullptr) {
    int pending = 0;
    if (lib.retired_pending(device, &pending) == kNvmlSuccess) info.retired_pages_pending = pending != 0;
  }
  if (lib.remapped_rows != nullptr) {
    unsigned int correctable = 0, uncorrectable = 0, pending = 0, failed = 0;
    if (lib.remapped_rows(device, &correctable, &uncorrectable, &pending, &failed) == kNvmlSuccess) {
      info.remapped_rows_correctable = correctable;
      info.remapped_rows_uncorrectable = uncorrectable;
      info.remapping_pending = pending != 0;
      info.remapping_failed = failed != 0;
    }
  }
  return info;
}

}  // namespace memd::cuda
