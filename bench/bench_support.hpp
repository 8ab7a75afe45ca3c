// bench/bench_support.hpp — shared set-up for the allocator benchmarks: one
// pool per device for the whole process, and deterministic size mixes.
#pragma once

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

// A Virtual-mode pool on `device` (host:0 gets `host_bytes` of capacity).
// Exits with a message when the device does not exist.
inline PoolHolder make_pool(DeviceId device, std::uint64_t host_bytes = 16 * kGiB) {
  BackendOptions bo;
  bo.host_device_bytes = host_bytes;
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

}  // namespace memd::bench
