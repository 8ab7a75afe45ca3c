// backends/cuda/cuda_backend.hpp — every CUDA GPU, through the runtime API and
// the driver's virtual-memory API reached with cudaGetDriverEntryPoint (the
// driver library is never linked, so memd starts where no driver exists).
//
// Only this folder includes CUDA headers. Built only when MEMD_WITH_CUDA.
// Without a driver or GPU the backend reports no devices; that is not an error.
//
// Besides cuda:N it serves `cpu` SharedMemory (a memfd mapped MAP_SHARED and
// pinned with cudaHostRegister, portable) and UnifiedMemory
// (cudaMallocManaged) once a GPU exists, without listing `cpu`: the host
// backend lists it and DeviceCatalog routes those types here. Virtual memory
// maps one physical handle per granule (created with the POSIX
// file-descriptor handle type so pages can later be exported) and keeps
// unmapped handles in a per-GPU cache bounded by set_handle_cache_limit()
// (default 0); trim() empties the caches. Shareable segments are a pinned
// memfd (cpu) or one fresh, zeroed physical handle in an address range of its
// own (cuda:N), exported as the memfd or with cuMemExportToShareableHandle.
// At discovery CUDA peer access is enabled between every pair of GPUs that
// allows it, so copies between them go direct; the mappings map() makes are
// still accessible from their own GPU only.
//
// Thread safety: all methods are thread-safe.
#pragma once

#include <memory>

#include "backends/backend.hpp"

namespace memd {

// Never fails for "no GPU": returns a backend with no devices instead.
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace memd
