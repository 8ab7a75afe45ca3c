// bench/bench_support.hpp — shared set-up for the allocator benchmarks: one
// pool per device for the whole process, and deterministic size mixes.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <vector>

#include "alloc/device_pool.hpp"
#include "backends/device_catalog.hpp"

namespace memd::bench {

struct PoolHolder {
  std::unique_ptr<DeviceCatalog> catalog;
  std::unique_ptr<DevicePool> pool;
};

// A Virtual-mode pool on `device` (host:0 gets `host_bytes` of capacity);
// thread_cache false sends small blocks through the pool lock too (the
// same-run baseline for the per-thread caches). Exits with a message when the
// device does not exist.
// capacity 0: the whole device (a second pool on one GPU needs less: both
// reserve their address range up front). `medium`: whether medium blocks may
// be cached per thread (PoolOptions::medium_cache).
inline PoolHolder make_pool(DeviceId device, std::uint64_t host_bytes = 16 * kGiB, bool thread_cache = true,
                            std::uint64_t capacity = 0,
                            PoolOptions::MediumCache medium = PoolOptions::MediumCache::WhenContended) {
  BackendOptions bo;
  bo.host_device_sizes = {host_bytes};
  bo.enable_cuda = device.kind() == DeviceKind::Cuda;
  auto catalog = DeviceCatalog::discover(bo);
  if (!catalog) {
    std::fprintf(stderr, "bench: %s\n", catalog.error().message.c_str());
    std::exit(2);
  }
  auto backend = (*catalog)->backend_for(device, MemoryType::VRAM);
  if (!backend) {
    std::fprintf(stderr, "bench: %s\n", backend.error().message.c_str());
    std::exit(2);
  }
  PoolOptions po;
  po.device = device;
  po.thread_cache = thread_cache;
  po.capacity = capacity;
  po.medium_cache = medium;
  auto pool = DevicePool::create(**backend, po);
  if (!pool) {
    std::fprintf(stderr, "bench: %s\n", pool.error().message.c_str());
    std::exit(2);
  }
  return {std::move(*catalog), std::move(*pool)};
}

// Sizes from 512 B to 1 MiB, log-uniform, multiples of 512 (PyTorch's rounding).
inline std::vector<std::uint64_t> size_mix(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> v(n);
  for (auto& s : v) {
    int shift = 9 + static_cast<int>(rng() % 12);
    s = ((std::uint64_t{1} << shift) + rng() % (std::uint64_t{1} << shift)) / 512 * 512;
  }
  return v;
}

// The workloads, written once for every allocator: `alloc(size) -> void*`
// and `release(void*)` adapt memd, glibc or CUDA.

// An alloc+free pair of mixed sizes while `state.range(0)` other blocks are
// held (sizes scaled down so 100,000 blocks stay modest in bytes).
template <typename Alloc, typename Release>
void pair_with_live(benchmark::State& state, Alloc alloc, Release release) {
  auto live = static_cast<std::size_t>(state.range(0));
  std::vector<void*> held;
  held.reserve(live);
  for (auto s : size_mix(live, 1)) held.push_back(alloc(s / 16 + 512));
  auto sizes = size_mix(4096, 2);
  std::size_t i = 0;
  for (auto _ : state) {
    void* p = alloc(sizes[i++ & 4095]);
    benchmark::DoNotOptimize(p);
    release(p);
  }
  for (auto* p : held) release(p);
  state.SetItemsProcessed(state.iterations());
}

// Replaces a random one of `state.range(0)` live blocks per iteration.
template <typename Alloc, typename Release>
void churn_with_live(benchmark::State& state, Alloc alloc, Release release) {
  auto live = static_cast<std::size_t>(state.range(0));
  auto sizes = size_mix(live + 8192, 3);
  std::vector<void*> held;
  held.reserve(live);
  for (std::size_t k = 0; k < live; ++k) held.push_back(alloc(sizes[k] / 16 + 512));
  std::mt19937_64 rng(4);
  std::vector<std::size_t> victims(8192);
  for (auto& v : victims) v = rng() % live;
  std::size_t i = 0;
  for (auto _ : state) {
    auto k = victims[i & 8191];
    release(held[k]);
    held[k] = alloc(sizes[i & 8191] / 16 + 512);
    ++i;
  }
  for (auto* p : held) release(p);
  state.SetItemsProcessed(state.iterations());
}

// Adapters for a DevicePool (allocation failures abort the benchmark run:
// the pools are sized far above what these workloads hold).
inline auto pool_alloc(DevicePool& pool) {
  return [&pool](std::uint64_t size) -> void* {
    auto p = pool.allocate(size);
    if (!p) {
      std::fprintf(stderr, "bench: %s\n", p.error().message.c_str());
      std::abort();
    }
    return *p;
  };
}
inline auto pool_release(DevicePool& pool) {
  return [&pool](void* p) { (void)pool.deallocate(p); };
}

}  // namespace memd::bench
