// backends/cuda/driver_api.hpp — the CUDA driver entry points memd uses.
//
// The driver library is never linked (memd must start where no driver is
// installed), so each driver function is looked up at run time through the
// runtime's cudaGetDriverEntryPointByVersion. <cuda.h> is included for types
// only. A missing entry point leaves its pointer null; the virtual-memory set
// is usable only when all of it resolved (vmm_complete()).
//
// Thread safety: resolve() runs once (std::call_once); the table is immutable
// afterwards and may be read from any thread.
#pragma once

#include <cuda.h>

#include <string>

namespace memd::cuda {

struct DriverApi {
  CUresult (*get_error_name)(CUresult, const char**) = nullptr;
  CUresult (*device_get)(CUdevice*, int) = nullptr;
  CUresult (*device_get_attribute)(int*, CUdevice_attribute, CUdevice) = nullptr;
  CUresult (*mem_get_allocation_granularity)(size_t*, const CUmemAllocationProp*,
                                             CUmemAllocationGranularity_flags) = nullptr;
  CUresult (*mem_address_reserve)(CUdeviceptr*, size_t, size_t, CUdeviceptr,
                                  unsigned long long) = nullptr;
  CUresult (*mem_address_free)(CUdeviceptr, size_t) = nullptr;
  CUresult (*mem_create)(CUmemGenericAllocationHandle*, size_t, const CUmemAllocationProp*,
                         unsigned long long) = nullptr;
  CUresult (*mem_release)(CUmemGenericAllocationHandle) = nullptr;
  CUresult (*mem_map)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                      unsigned long long) = nullptr;
  CUresult (*mem_unmap)(CUdeviceptr, size_t) = nullptr;
  CUresult (*mem_set_access)(CUdeviceptr, size_t, const CUmemAccessDesc*, size_t) = nullptr;
  // Sharing physical memory with other processes (POSIX file descriptors).
  // Not part of vmm_complete(): without them memd still maps its own memory.
  CUresult (*mem_export_to_shareable_handle)(void*, CUmemGenericAllocationHandle,
                                             CUmemAllocationHandleType, unsigned long long) = nullptr;
  CUresult (*mem_import_from_shareable_handle)(CUmemGenericAllocationHandle*, void*,
                                               CUmemAllocationHandleType) = nullptr;

  // Every virtual-memory entry point resolved.
  bool vmm_complete() const noexcept;
  // Physical memory can be exported as a file descriptor (and imported).
  bool sharing_complete() const noexcept;
  // "CUDA_ERROR_OUT_OF_MEMORY", or the number when the name is unavailable.
  std::string error_name(CUresult result) const;
};

// Resolves on first use; call only after the runtime found at least one device
// (without a driver the lookups fail, which is harmless but pointless).
const DriverApi& driver_api();

}  // namespace memd::cuda
