// gpu_alloc_bench — memd's pool on cuda:0 against cudaMalloc and the
// cudaMallocAsync pool (release threshold = max), in one process, on the same
// workloads: cached alloc+free pairs from 512 B to 1 GiB, pairs with
// 10 / 10,000 / 100,000 live blocks, and 1-8 threads on the 512 B - 2 MiB mix. Needs a GPU; exits 0 with a message
// without one (or when built without CUDA).
//
//   LD_LIBRARY_PATH=.gpu/lib .gpu/bin/memd_gpu_alloc_bench
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdio>

#if defined(MEMD_WITH_CUDA)
#include <cuda_runtime_api.h>

#include <limits>
#include <vector>

#include "bench_support.hpp"

namespace memd::bench {
namespace {

DevicePool& gpu_pool() {
  static PoolHolder holder = make_pool(DeviceId::cuda(0));
  return *holder.pool;
}

// Small blocks through the pool lock (no per-thread cache): the baseline the
// cache is judged against, in the same run.
DevicePool& gpu_pool_locked() {
  static PoolHolder holder = make_pool(DeviceId::cuda(0), 16 * kGiB, /*thread_cache=*/false, 16 * kGiB);
  return *holder.pool;
}

cudaStream_t bench_stream() {
  static cudaStream_t s = [] {
    cudaStream_t st;
    cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    return st;
  }();
  return s;
}

cudaMemPool_t async_pool() {
  static cudaMemPool_t pool = [] {
    cudaMemPool_t p;
    cudaDeviceGetDefaultMemPool(&p, 0);
    std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
    cudaMemPoolSetAttribute(p, cudaMemPoolAttrReleaseThreshold, &threshold);
    return p;
  }();
  return pool;
}

template <bool kLocked>
void BM_MemdPair(benchmark::State& state) {
  auto& pool = kLocked ? gpu_pool_locked() : gpu_pool();
  auto size = static_cast<std::uint64_t>(state.range(0));
  for (auto _ : state) {
    auto p = pool.allocate(size);
    if (!p) {
      state.SkipWithError(p.error().message.c_str());
      break;
    }
    benchmark::DoNotOptimize(p);
    (void)pool.deallocate(*p);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_CudaMallocAsyncPair(benchmark::State& state) {
  async_pool();
  auto size = static_cast<std::size_t>(state.range(0));
  auto s = bench_stream();
  for (auto _ : state) {
    void* p = nullptr;
    if (cudaMallocAsync(&p, size, s) != cudaSuccess) {
      state.SkipWithError("cudaMallocAsync failed");
      break;
    }
    benchmark::DoNotOptimize(p);
    cudaFreeAsync(p, s);
  }
  cudaStreamSynchronize(s);
  state.SetItemsProcessed(state.iterations());
}

void BM_CudaMallocPair(benchmark::State& state) {
  auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = nullptr;
    if (cudaMalloc(&p, size) != cudaSuccess) {
      state.SkipWithError("cudaMalloc failed");
      break;
    }
    benchmark::DoNotOptimize(p);
    cudaFree(p);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_MemdPairWithLive(benchmark::State& state) {
  pair_with_live(state, pool_alloc(gpu_pool()), pool_release(gpu_pool()));
}

void BM_CudaMallocAsyncPairWithLive(benchmark::State& state) {
  async_pool();
  auto s = bench_stream();
  pair_with_live(
      state,
      [s](std::uint64_t size) {
        void* p = nullptr;
        cudaMallocAsync(&p, size, s);
        return p;
      },
      [s](void* p) { cudaFreeAsync(p, s); });
  cudaStreamSynchronize(s);
}

// Several threads on one pool, the 512 B - 2 MiB mix of alloc_bench's
// BM_MemdThreads (eight blocks live a thread, the oldest freed first), on
// cuda:0; cudaMallocAsync on the same mix with a stream per thread (one
// shared stream would serialise it). A pool of its own, so the contention
// (which turns medium caching on) leaves the single-thread figures alone.
DevicePool& gpu_pool_threads() {
  static PoolHolder holder = make_pool(DeviceId::cuda(0));
  return *holder.pool;
}

void BM_MemdThreadsGpu(benchmark::State& state) {
  auto& pool = gpu_pool_threads();
  auto sizes = size_mix(1024, 10 + static_cast<std::uint64_t>(state.thread_index()));
  std::vector<void*> mine(8, nullptr);
  std::size_t i = 0;
  for (auto _ : state) {
    auto& slot = mine[i & 7];
    if (slot) (void)pool.deallocate(slot);
    auto p = pool.allocate(sizes[i & 1023]);
    if (!p) {
      state.SkipWithError(p.error().message.c_str());
      break;
    }
    slot = *p;
    ++i;
  }
  for (auto* p : mine)
    if (p) (void)pool.deallocate(p);
  state.SetItemsProcessed(state.iterations());
}

void BM_CudaMallocAsyncThreads(benchmark::State& state) {
  async_pool();
  auto sizes = size_mix(1024, 10 + static_cast<std::uint64_t>(state.thread_index()));
  cudaStream_t s = nullptr;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  std::vector<void*> mine(8, nullptr);
  std::size_t i = 0;
  for (auto _ : state) {
    auto& slot = mine[i & 7];
    if (slot) cudaFreeAsync(slot, s);
    if (cudaMallocAsync(&slot, sizes[i & 1023], s) != cudaSuccess) {
      state.SkipWithError("cudaMallocAsync failed");
      break;
    }
    ++i;
  }
  for (auto* p : mine)
    if (p) cudaFreeAsync(p, s);
  cudaStreamSynchronize(s);
  cudaStreamDestroy(s);
  state.SetItemsProcessed(state.iterations());
}

#define MEMD_PAIR_SIZES \
  Arg(512)->Arg(4096)->Arg(65536)->Arg(1 << 20)->Arg(16 << 20)->Arg(64 << 20)->Arg(256 << 20)->Arg(1 << 30)
BENCHMARK(BM_MemdPair<false>)->Name("BM_MemdPair")->MEMD_PAIR_SIZES;
BENCHMARK(BM_MemdPair<true>)->Name("BM_MemdPairNoThreadCache")->Arg(512)->Arg(4096);
BENCHMARK(BM_CudaMallocAsyncPair)->MEMD_PAIR_SIZES;
BENCHMARK(BM_CudaMallocPair)->MEMD_PAIR_SIZES->Iterations(200);
BENCHMARK(BM_MemdPairWithLive)->Arg(10)->Arg(10000)->Arg(100000);
BENCHMARK(BM_CudaMallocAsyncPairWithLive)->Arg(10)->Arg(10000)->Arg(100000);
void thread_counts(benchmark::internal::Benchmark* b) { b->Threads(1)->Threads(2)->Threads(4)->Threads(8)->UseRealTime(); }
BENCHMARK(BM_MemdThreadsGpu)->Apply(thread_counts);
BENCHMARK(BM_CudaMallocAsyncThreads)->Apply(thread_counts);

bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace
}  // namespace memd::bench

int main(int argc, char** argv) {
  if (!memd::bench::have_gpu()) {
    std::printf("gpu_alloc_bench: no CUDA device found; nothing to measure\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
#else
int main() {
  std::printf("gpu_alloc_bench: built without CUDA; nothing to measure\n");
  return 0;
}
#endif
