// Driver entry points through the runtime, so libcuda is never a link dependency.
#include "backends/cuda/driver_api.hpp"

#include <cuda_runtime_api.h>

#include <mutex>

namespace memd::cuda {
namespace {

// The ABI version requested for every symbol. 12.0 is new enough for all the
// virtual-memory calls (10.2) and old enough that every driver a CUDA 13
// runtime accepts offers it, so the lookup never fails for being too new.
constexpr unsigned int kDriverAbiVersion = 12000;

template <typename Fn>
void resolve(const char* symbol, Fn& out) {
  void* pointer = nullptr;
  cudaDriverEntryPointQueryResult status{};
  if (cudaGetDriverEntryPointByVersion(symbol, &pointer, kDriverAbiVersion, cudaEnableDefault,
                                       &status) == cudaSuccess &&
      status == cudaDriverEntryPointSuccess)
    out = reinterpret_cast<Fn>(pointer);
  else
    (void)cudaGetLastError();  // a failed lookup must not leak into later runtime calls
}

}  // namespace

bool DriverApi::vmm_complete() const noexcept {
  return device_get != nullptr && device_get_attribute != nullptr &&
         mem_get_allocation_granularity != nullptr && mem_address_reserve != nullptr &&
         mem_address_free != nullptr && mem_create != nullptr && mem_release != nullptr &&
         mem_map != nullptr && mem_unmap != nullptr && mem_set_access != nullptr;
}

bool DriverApi::sharing_complete() const noexcept {
  return mem_export_to_shareable_handle != nullptr && mem_import_from_shareable_handle != nullptr;
}

std::string DriverApi::error_name(CUresult result) const {
  const char* name = nullptr;
  if (get_error_name != nullptr && get_error_name(result, &name) == CUDA_SUCCESS && name != nullptr)
    return name;
  return "CUresult " + std::to_string(static_cast<int>(result));
}

const DriverApi& driver_api() {
  static DriverApi api;
  static std::once_flag once;
  std::call_once(once, [] {
    resolve("cuGetErrorName", api.get_error_name);
    resolve("cuDeviceGet", api.device_get);
    resolve("cuDeviceGetAttribute", api.device_get_attribute);
    resolve("cuMemGetAllocationGranularity", api.mem_get_allocation_granularity);
    resolve("cuMemAddressReserve", api.mem_address_reserve);
    resolve("cuMemAddressFree", api.mem_address_free);
    resolve("cuMemCreate", api.mem_create);
    resolve("cuMemRelease", api.mem_release);
    resolve("cuMemMap", api.mem_map);
    resolve("cuMemUnmap", api.mem_unmap);
    resolve("cuMemSetAccess", api.mem_set_access);
    resolve("cuMemExportToShareableHandle", api.mem_export_to_shareable_handle);
    resolve("cuMemImportFromShareableHandle", api.mem_import_from_shareable_handle);
  });
  return api;
}

}  // namespace memd::cuda
