// Replays a trace on cudaMalloc/cudaFree and on a cudaMallocAsync pool.
// Built only with MEMD_WITH_CUDA.
#if defined(MEMD_WITH_CUDA)
#include <cuda_runtime_api.h>
#include <fmt/format.h>

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

// cuda:`device` exists and is the thread's current device.
Result<void> have_gpu(int device) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
    return fail(ErrorCode::unavailable, "no CUDA device for a cuda baseline");
  if (device < 0 || device >= n)
    return fail(ErrorCode::unavailable, "no CUDA device cuda:{} for a cuda baseline ({} found)", device, n);
  return check(cudaSetDevice(device), "cudaSetDevice");
}

std::uint64_t to_ns(SteadyClock::duration d) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}

// Map/unmap counts stay -1: the driver's calls are not visible from here.
PassFigures timed_pass(std::size_t ops, SteadyClock::duration d) {
  PassFigures p;
  p.ops = ops;
  p.ns = to_ns(d);
  return p;
}

double ns_per_op(const std::vector<PassFigures>& passes, std::uint64_t ops) {
  std::uint64_t ns = 0;
  for (const auto& p : passes) ns += p.ns;
  return ops == 0 ? 0.0 : static_cast<double>(ns) / static_cast<double>(ops);
}

ReplayResult base(const Trace& t, const char* allocator, int device) {
  ReplayResult r;
  r.trace = t.name;
  r.allocator = allocator;
  r.backend = "cuda";
  r.device = fmt::format("cuda:{}", device);
  r.peak_live_bytes = t.peak_live_bytes;
  r.ops = t.ops.size();
  return r;
}

}  // namespace

Result<ReplayResult> replay_cuda_malloc(const Trace& trace, int device) {
  if (auto g = have_gpu(device); !g) return fail(g.error());
  std::vector<void*> slots(trace.slots, nullptr);
  std::uint64_t calls = 0;
  // With `passes`, timed: a timestamp at each pass boundary; without,
  // sampling footprint into `peak` (untimed).
  auto run = [&](std::vector<PassFigures>* passes, std::uint64_t& peak) -> Result<void> {
    std::size_t free0 = 0, total = 0;
    if (passes == nullptr) cudaMemGetInfo(&free0, &total);
    for (auto [begin, end] : pass_ranges(trace)) {
      auto start = SteadyClock::now();
      for (std::size_t i = begin; i < end; ++i) {
        const TraceOp& op = trace.ops[i];
        if (op.allocate) {
          if (auto c = check(cudaMalloc(&slots[op.slot], op.size == 0 ? 1 : op.size), "cudaMalloc"); !c) return c;
          if (passes == nullptr) {
            std::size_t f = 0;
            cudaMemGetInfo(&f, &total);
            peak = std::max<std::uint64_t>(peak, free0 > f ? free0 - f : 0);
          }
        } else {
          if (auto c = check(cudaFree(slots[op.slot]), "cudaFree"); !c) return c;
        }
        ++calls;
      }
      if (passes != nullptr) passes->push_back(timed_pass(end - begin, SteadyClock::now() - start));
    }
    return {};
  };
  std::vector<PassFigures> passes;
  std::uint64_t unused = 0, peak = 0;
  if (auto r = run(&passes, unused); !r) return fail(r.error());
  if (auto r = run(nullptr, peak); !r) return fail(r.error());
  auto r = base(trace, "cuda-malloc", device);
  r.peak_footprint_bytes = peak;
  r.footprint_ratio = static_cast<double>(peak) / static_cast<double>(trace.peak_live_bytes);
  r.ns_per_op = ns_per_op(passes, r.ops);
  r.passes = std::move(passes);
  r.device_calls = trace.ops.size();
  return r;
}

Result<ReplayResult> replay_cuda_async(const Trace& trace, int device) {
  if (auto g = have_gpu(device); !g) return fail(g.error());
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool;
  if (auto c = check(cudaMemPoolCreate(&pool, &props), "cudaMemPoolCreate"); !c) return fail(c.error());
  std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
  cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  cudaStream_t stream;
  cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  std::vector<void*> slots(trace.slots, nullptr);
  Result<void> status;
  std::vector<PassFigures> passes;
  for (auto [begin, end] : pass_ranges(trace)) {
    auto start = SteadyClock::now();
    for (std::size_t i = begin; i < end && status; ++i) {
      const TraceOp& op = trace.ops[i];
      if (op.allocate) {
        status = check(cudaMallocFromPoolAsync(&slots[op.slot], op.size == 0 ? 1 : op.size, pool, stream),
                       "cudaMallocFromPoolAsync");
      } else {
        status = check(cudaFreeAsync(slots[op.slot], stream), "cudaFreeAsync");
      }
    }
    // Each pass is timed to its completion, as the whole run was before
    // passes: the stream is synchronised at every boundary.
    cudaStreamSynchronize(stream);
    passes.push_back(timed_pass(end - begin, SteadyClock::now() - start));
    if (!status) break;
  }
  std::uint64_t high = 0;
  cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &high);
  cudaStreamDestroy(stream);
  cudaMemPoolDestroy(pool);
  if (!status) return fail(status.error());
  auto r = base(trace, "cuda-async", device);
  r.peak_footprint_bytes = high;
  r.footprint_ratio = static_cast<double>(high) / static_cast<double>(trace.peak_live_bytes);
  r.ns_per_op = ns_per_op(passes, r.ops);
  r.device_calls = 0;  // the pool's own driver calls are not visible
  r.passes = std::move(passes);
  return r;
}

}  // namespace memd::replay
#endif
