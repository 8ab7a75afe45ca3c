// alloc_bench — memd's pool on the host device against glibc malloc, in one
// process: cached alloc+free pairs (512 B – 1 GiB), pairs and churn with 10 /
// 10,000 / 100,000 live blocks, and several threads on one pool.
//
//   build/release/bench/memd_alloc_bench --benchmark_repetitions=5
//       (add --benchmark_report_aggregates_only=true)
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "bench_support.hpp"

namespace memd::bench {
namespace {

DevicePool& host_pool() {
  static PoolHolder holder = make_pool(DeviceId::host(0));
  return *holder.pool;
}

// The thread benchmarks' own pools, so that the contention they cause (which
// turns medium caching on) does not change the single-thread figures.
DevicePool& host_pool_threads() {
  static PoolHolder holder = make_pool(DeviceId::host(0));
  return *holder.pool;
}
DevicePool& host_pool_threads_no_medium() {
  static PoolHolder holder = make_pool(DeviceId::host(0), 16 * kGiB, true, 0, PoolOptions::MediumCache::Never);
  return *holder.pool;
}

DevicePool& host_pool_locked() {
  static PoolHolder holder = make_pool(DeviceId::host(0), 16 * kGiB, /*thread_cache=*/false);
  return *holder.pool;
}

template <bool kLocked>
void BM_MemdPair(benchmark::State& state) {
  auto& pool = kLocked ? host_pool_locked() : host_pool();
  auto size = static_cast<std::uint64_t>(state.range(0));
  for (auto _ : state) {
    auto p = pool.allocate(size);
    benchmark::DoNotOptimize(p);
    (void)pool.deallocate(*p);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_MallocPair(benchmark::State& state) {
  auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = std::malloc(size);
    benchmark::DoNotOptimize(p);
    std::free(p);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_MemdPairWithLive(benchmark::State& state) {
  pair_with_live(state, pool_alloc(host_pool()), pool_release(host_pool()));
}

void BM_MemdChurnWithLive(benchmark::State& state) {
  churn_with_live(state, pool_alloc(host_pool()), pool_release(host_pool()));
}

void BM_MallocChurnWithLive(benchmark::State& state) {
  churn_with_live(state, [](std::uint64_t size) { return std::malloc(size); }, [](void* p) { std::free(p); });
}

// Several threads allocating and freeing on one pool: `small` draws sizes of
// 256 B – 8 KiB (the slab classes, served from per-thread caches), otherwise
// the 512 B – 2 MiB mix (two thirds of it medium blocks, cached per thread
// once the lock is contended; NoMediumCache: through the pool lock).
std::vector<std::uint64_t> thread_sizes(bool small, std::uint64_t seed) {
  auto sizes = size_mix(1024, seed);
  if (small)
    for (auto& s : sizes) s = 256 + s % (8192 - 256);
  return sizes;
}

template <bool kSmall, bool kLocked = false, bool kNoMedium = false>
void BM_MemdThreads(benchmark::State& state) {
  auto& pool = kLocked ? host_pool_locked() : kNoMedium ? host_pool_threads_no_medium() : host_pool_threads();
  auto sizes = thread_sizes(kSmall, 10 + static_cast<std::uint64_t>(state.thread_index()));
  std::vector<void*> mine(8, nullptr);
  std::size_t i = 0;
  for (auto _ : state) {
    auto& slot = mine[i & 7];
    if (slot) (void)pool.deallocate(slot);
    slot = *pool.allocate(sizes[i & 1023]);
    ++i;
  }
  for (auto* p : mine)
    if (p) (void)pool.deallocate(p);
  state.SetItemsProcessed(state.iterations());
}

template <bool kSmall>
void BM_MallocThreads(benchmark::State& state) {
  auto sizes = thread_sizes(kSmall, 10 + static_cast<std::uint64_t>(state.thread_index()));
  std::vector<void*> mine(8, nullptr);
  std::size_t i = 0;
  for (auto _ : state) {
    auto& slot = mine[i & 7];
    std::free(slot);
    slot = std::malloc(sizes[i & 1023]);
    ++i;
  }
  for (auto* p : mine) std::free(p);
  state.SetItemsProcessed(state.iterations());
}

#define MEMD_PAIR_SIZES \
  Arg(512)->Arg(4096)->Arg(65536)->Arg(1 << 20)->Arg(16 << 20)->Arg(64 << 20)->Arg(256 << 20)->Arg(1 << 30)
BENCHMARK(BM_MemdPair<false>)->Name("BM_MemdPair")->MEMD_PAIR_SIZES;
BENCHMARK(BM_MemdPair<true>)->Name("BM_MemdPairNoThreadCache")->Arg(512)->Arg(4096);
BENCHMARK(BM_MallocPair)->MEMD_PAIR_SIZES;
BENCHMARK(BM_MemdPairWithLive)->Arg(10)->Arg(10000)->Arg(100000);
BENCHMARK(BM_MemdChurnWithLive)->Arg(10)->Arg(10000)->Arg(100000);
BENCHMARK(BM_MallocChurnWithLive)->Arg(10)->Arg(10000)->Arg(100000);
void thread_counts(benchmark::internal::Benchmark* b) { b->Threads(1)->Threads(2)->Threads(4)->Threads(8)->UseRealTime(); }
BENCHMARK(BM_MemdThreads<false>)->Name("BM_MemdThreads")->Apply(thread_counts);
BENCHMARK(BM_MemdThreads<false, false, true>)->Name("BM_MemdThreadsNoMediumCache")->Apply(thread_counts);
BENCHMARK(BM_MallocThreads<false>)->Name("BM_MallocThreads")->Apply(thread_counts);
BENCHMARK(BM_MemdThreads<true>)->Name("BM_MemdThreadsSmall")->Apply(thread_counts);
BENCHMARK(BM_MemdThreads<true, true>)->Name("BM_MemdThreadsSmallNoThreadCache")->Apply(thread_counts);
BENCHMARK(BM_MallocThreads<true>)->Name("BM_MallocThreadsSmall")->Apply(thread_counts);

}  // namespace
}  // namespace memd::bench

BENCHMARK_MAIN();
