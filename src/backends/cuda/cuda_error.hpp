// backends/cuda/cuda_error.hpp — CUDA status codes as memd errors.
//
// Every CUDA failure leaves the backend as an Error value carrying the CUDA
// error name (cudaErrorMemoryAllocation, CUDA_ERROR_OUT_OF_MEMORY, …), never
// as an abort. Allocation failures map to out_of_memory so the allocator above
// can trim and retry; anything else is backend_error. Runtime failures also
// clear the calling thread's "last error", so a handled failure cannot be
// reported again by an unrelated later call.
//
// Thread safety: pure functions (the runtime's last error is per thread).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <string_view>

#include "backends/cuda/driver_api.hpp"
#include "memd/error.hpp"

namespace memd::cuda {

inline bool is_out_of_memory(cudaError_t error) noexcept {
  return error == cudaErrorMemoryAllocation;
}

inline bool is_out_of_memory(CUresult result) noexcept {
  return result == CUDA_ERROR_OUT_OF_MEMORY;
}

// `what` names the call and its arguments, e.g. "cudaMalloc(1048576) on cuda:0".
inline std::unexpected<Error> runtime_failure(cudaError_t error, std::string_view what) {
  (void)cudaGetLastError();
  return fail(is_out_of_memory(error) ? ErrorCode::out_of_memory : ErrorCode::backend_error,
              "{} failed: {} ({})", what, cudaGetErrorName(error), cudaGetErrorString(error));
}

inline std::unexpected<Error> driver_failure(const DriverApi& driver, CUresult result,
                                             std::string_view what) {
  return fail(is_out_of_memory(result) ? ErrorCode::out_of_memory : ErrorCode::backend_error,
              "{} failed: {}", what, driver.error_name(result));
}

}  // namespace memd::cuda
