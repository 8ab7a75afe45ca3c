// Replays a trace on cudaMalloc/cudaFree and on a cudaMallocAsync pool.
// Built only with MEMD_WITH_CUDA.
#if defined(MEMD_WITH_CUDA)
#include <cuda_runtime_api.h>

#include <chrono>
#include <limits>
#include <vector>

#include "replayers.hpp"

namespace memd::replay {
namespace {

using SteadyClock = std::chrono::steady_clock;

Result<void> check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return {};
  return fail(ErrorCode::backend_error, "{}: {}", what, cudaGetErrorName(e));
}

Result<void> have_gpu() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
    return fail(ErrorCode::unavailable, "no CUDA device for a cuda baseline");
  return check(cudaSetDevice(0), "cudaSetDevice");
}

ReplayResult base(const Trace& t, const char* allocator) {
  ReplayResult r;
  r.trace = t.name;
  r.allocator = allocator;
  r.backend = "cuda";
  r.device = "cuda:0";
  r.peak_live_bytes = t.peak_live_bytes;
  r.ops = t.ops.size();
  return r;
}

}  // namespace

Result<ReplayResult> replay_cuda_malloc(const Trace& trace) {
  if (auto g = have_gpu(); !g) return fail(g.error());
  std::vector<void*> slots(trace.slots, nullptr);
  std::uint64_t calls = 0;
  auto run = [&](bool sample, std::uint64_t& peak) -> Result<void> {
    std::size_t free0 = 0, total = 0;
    if (sample) cudaMemGetInfo(&free0, &total);
    for (const auto& op : trace.ops) {
      if (op.allocate) {
        if (auto c = check(cudaMalloc(&slots[op.slot], op.size == 0 ? 1 : op.size), "cudaMalloc"); !c) return c;
        if (sample) {
          std::size_t f = 0;
          cudaMemGetInfo(&f, &total);
          peak = std::max<std::uint64_t>(peak, free0 > f ? free0 - f : 0);
        }
      } else {
        if (auto c = check(cudaFree(slots[op.slot]), "cudaFree"); !c) return c;
      }
      ++calls;
    }
    return {};
  };
  std::uint64_t unused = 0, peak = 0;
  auto start = SteadyClock::now();
  if (auto r = run(false, unused); !r) return fail(r.error());
  auto elapsed = SteadyClock::now() - start;
  if (auto r = run(true, peak); !r) return fail(r.error());
  auto r = base(trace, "cuda-malloc");
  r.peak_footprint_bytes = peak;
  r.footprint_ratio = static_cast<double>(peak) / static_cast<double>(trace.peak_live_bytes);
  r.ns_per_op = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()) /
                static_cast<double>(r.ops);
  r.device_calls = trace.ops.size();
  return r;
}

Result<ReplayResult> replay_cuda_async(const Trace& trace) {
  if (auto g = have_gpu(); !g) return fail(g.error());
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = 0;
  cudaMemPool_t pool;
  if (auto c = check(cudaMemPoolCreate(&pool, &props), "cudaMemPoolCreate"); !c) return fail(c.error());
  std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
  cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  std::vector<void*> slots(trace.slots, nullptr);
  Result<void> status;
  auto start = SteadyClock::now();
  for (const auto& op : trace.ops) {
    if (op.allocate) {
      status = check(cudaMallocFromPoolAsync(&slots[op.slot], op.size == 0 ? 1 : op.size, pool, stream),
                     "cudaMallocFromPoolAsync");
    } else {
      status = check(cudaFreeAsync(slots[op.slot], stream), "cudaFreeAsync");
    }
    if (!status) break;
  }
  cudaStreamSynchronize(stream);
  auto elapsed = SteadyClock::now() - start;
  std::uint64_t high = 0;
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &high);
  cudaStreamDestroy(stream);
  cudaMemPoolDestroy(pool);
  if (!status) return fail(status.error());
  auto r = base(trace, "cuda-async");
  r.peak_footprint_bytes = high;
  r.footprint_ratio = static_cast<double>(high) / static_cast<double>(trace.peak_live_bytes);
  r.ns_per_op = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()) /
                static_cast<double>(r.ops);
  r.device_calls = 0;  // the pool's own driver calls are not visible
  return r;
}

}  // namespace memd::replay
#endif
