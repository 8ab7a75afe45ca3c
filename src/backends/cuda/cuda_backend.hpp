// backends/cuda/cuda_backend.hpp — every CUDA GPU, through the runtime API and
// the driver's virtual-memory API reached with cudaGetDriverEntryPoint (the
// driver library is never linked, so memd starts where no driver exists).
//
// Only this folder includes CUDA headers. Built only when MEMD_WITH_CUDA.
// Without a driver or GPU the backend reports no devices; that is not an error.
//
// Thread safety: all methods are thread-safe.
#pragma once

#include <memory>

#include "backends/backend.hpp"

namespace memd {

// Never fails for "no GPU": returns a backend with no devices instead.
std::unique_ptr<Backend> make_cuda_backend();

}  // namespace memd
