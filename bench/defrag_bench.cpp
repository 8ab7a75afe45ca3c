// defrag_bench — defragmentation's move rate against a plain device copy,
// and remap against copy for blocks that own whole mapping units (issue 14,
// item 7). A plain program: each figure is the median of --reps runs.
//
//   memd_defrag_bench [--reps 5]
//
// On cuda:0 (built with CUDA and a GPU visible):
//   move rate   blocks of 8, 32 and 64 MiB, each filled (cudaMemset: the
//               survivors hold data, checked after, and every unit has
//               been touched once, as the baseline's buffers are by their
//               warm-up copy), every other one freed, then
//               Defragmenter::run with remap off: bytes copied ÷ the run's
//               moving time (copies and switches: the report's duration
//               less its release_duration, plan_duration and stats_duration,
//               the figures before and after), against
//               cudaMemcpyAsync device→device of the same sizes and count
//               between two cudaMalloc buffers.               goal >= 0.50
//               The whole run's rate (giving the emptied units back
//               included) is printed beside it.
//   remap/copy  one block of N MiB that owns whole units, with unmapped
//               address space below it: the defragmenter's remap, against
//               cudaMemcpyAsync of the same bytes.
// Without a GPU it runs the same on host:0 (memcpy as the baseline) and says
// so; those numbers describe the host stand-in only.
// Exit status: 0 measured; 1 a move failed or bytes came back wrong.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#if defined(MEMD_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "transfer/defragmenter.hpp"
#include "transfer/stream_pool.hpp"

namespace memd {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Baseline: `count` copies of `bytes` device to device (or memcpy), seconds.
double baseline_seconds(bool gpu, std::uint64_t bytes, int count) {
#if defined(MEMD_WITH_CUDA)
  if (gpu) {
    void *a = nullptr, *b = nullptr;
    if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return 0;
    cudaStream_t s;
    (void)cudaStreamCreate(&s);
    (void)cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s);  // warm-up
    (void)cudaStreamSynchronize(s);
    const auto t0 = Clock::now();
    for (int i = 0; i < count; ++i) (void)cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s);
    (void)cudaStreamSynchronize(s);
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    (void)cudaStreamDestroy(s);
    (void)cudaFree(a);
    (void)cudaFree(b);
    return t;
  }
#endif
  (void)gpu;
  std::vector<char> a(bytes, 1), b(bytes);
  const auto t0 = Clock::now();
  for (int i = 0; i < count; ++i) std::memcpy(b.data(), a.data(), bytes);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Every survivor holds data, as real ones do: each block is filled with a
// byte of its index before the run (which also touches every mapped unit
// once, as the baseline's buffers are touched by their warm-up copy), and
// its first and last bytes are checked after it. False when one differs.
void fill(bool gpu, std::uint64_t address, std::uint64_t bytes, int value) {
#if defined(MEMD_WITH_CUDA)
  if (gpu) {
    (void)cudaMemset(reinterpret_cast<void*>(address), value, bytes);
    (void)cudaDeviceSynchronize();
    return;
  }
#endif
  (void)gpu;
  std::memset(reinterpret_cast<void*>(address), value, bytes);
}
bool holds(bool gpu, std::uint64_t address, std::uint64_t bytes, int value) {
  unsigned char ends[2] = {0, 0};
#if defined(MEMD_WITH_CUDA)
  if (gpu) {
    (void)cudaMemcpy(&ends[0], reinterpret_cast<void*>(address), 1, cudaMemcpyDeviceToHost);
    (void)cudaMemcpy(&ends[1], reinterpret_cast<void*>(address + bytes - 1), 1, cudaMemcpyDeviceToHost);
    return ends[0] == static_cast<unsigned char>(value) && ends[1] == static_cast<unsigned char>(value);
  }
#endif
  (void)gpu;
  std::memcpy(&ends[0], reinterpret_cast<void*>(address), 1);
  std::memcpy(&ends[1], reinterpret_cast<void*>(address + bytes - 1), 1);
  return ends[0] == static_cast<unsigned char>(value) && ends[1] == static_cast<unsigned char>(value);
}

struct Env {
  std::unique_ptr<DeviceCatalog> catalog;
  std::unique_ptr<MemoryManager> manager;
  std::unique_ptr<StreamPool> streams = std::make_unique<StreamPool>();
  std::unique_ptr<Defragmenter> defrag;
  DeviceId device;
};

Env make_env() {
  Env e;
  BackendOptions bo;
  bo.host_device_sizes = {4 * kGiB};
  auto c = DeviceCatalog::discover(bo);
  if (!c) {
    std::fprintf(stderr, "discover: %s\n", c.error().message.c_str());
    std::exit(1);
  }
  e.catalog = std::move(*c);
  e.device = e.catalog->info(DeviceId::cuda(0)) ? DeviceId::cuda(0) : DeviceId::host(0);
  e.manager = std::make_unique<MemoryManager>(*e.catalog);
  e.defrag = std::make_unique<Defragmenter>(*e.manager, *e.streams);
  return e;
}

AllocationRecord alloc(Env& e, std::uint64_t bytes) {
  AllocationRequest r;
  r.size_bytes = bytes;
  r.device = e.device;
  r.memory_type = MemoryType::VRAM;
  auto rec = e.manager->allocate(r);
  if (!rec) {
    std::fprintf(stderr, "allocate %llu: %s\n", static_cast<unsigned long long>(bytes), rec.error().message.c_str());
    std::exit(1);
  }
  return *rec;
}

double ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

// One small defragmentation in a fresh env (two 2 MiB blocks, the first
// freed, the second moved down): the stream is created and first used, the
// code paths run once. Its duration in ms; everything it allocated is freed
// and trimmed after.
double warm_up(Env& e, bool gpu) {
  auto a = alloc(e, 2 * kMiB);
  auto b = alloc(e, 2 * kMiB);
  fill(gpu, b.address, 2 * kMiB, 7);
  (void)e.manager->deallocate(a.id);
  DefragOptions o;
  o.device = e.device;
  o.allow_remap = false;
  auto r = e.defrag->run(o);
  (void)e.manager->deallocate(b.id);
  e.manager->trim();
  return r ? ms(r->duration) : 0.0;
}

}  // namespace
}  // namespace memd

int main(int argc, char** argv) {
  using namespace memd;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (std::string(argv[i]) == "--help") {
      std::puts("memd_defrag_bench [--reps N]");
      return 0;
    }
  }
  bool failed = false;
  {
    auto probe = make_env();
    const bool gpu = probe.device.kind() == DeviceKind::Cuda;
    std::printf("device %s%s\n", probe.device.to_string().c_str(),
                gpu ? "" : " (no GPU: the host stand-in; memcpy is the baseline)");
  }
  std::printf("%-24s %12s %12s %12s %8s\n", "case", "moving GB/s", "whole GB/s", "base GB/s", "ratio");
  for (std::uint64_t mib : {8, 32, 64}) {
    const std::uint64_t bytes = mib * kMiB;
    const int blocks = static_cast<int>(std::max<std::uint64_t>(4, 1024 / mib));
    std::vector<double> memd_rate, whole_rate, base_rate, plan_ms, copy_ms, switch_ms, stats_ms, other_ms, first_ms;
    bool gpu = false;
    for (int rep = 0; rep < reps; ++rep) {
      auto e = make_env();
      gpu = e.device.kind() == DeviceKind::Cuda;
      // A daemon's defragmenter has its stream and events warm: one small
      // run first (its time kept apart, as the first run's), then the case.
      first_ms.push_back(warm_up(e, gpu));
      std::vector<AllocationRecord> all;
      for (int i = 0; i < 2 * blocks; ++i) all.push_back(alloc(e, bytes));
      for (int i = 0; i < 2 * blocks; ++i) fill(gpu, all[i].address, bytes, i & 0xff);  // holes were used too
      for (int i = 0; i < 2 * blocks; i += 2) (void)e.manager->deallocate(all[i].id);
      DefragOptions o;
      o.device = e.device;
      o.allow_remap = false;
      o.max_bytes_per_pass = 64 * kGiB;
      auto r = e.defrag->run(o);
      if (!r || r->bytes_moved == 0) {
        std::fprintf(stderr, "defragment %llu MiB: %s\n", static_cast<unsigned long long>(mib),
                     r ? "nothing moved" : r.error().message.c_str());
        failed = true;
        break;
      }
      const double secs = std::chrono::duration<double>(r->duration).count();
      const double moving = std::chrono::duration<double>(r->duration - r->release_duration - r->plan_duration -
                                                          r->stats_duration)
                                .count();
      plan_ms.push_back(ms(r->plan_duration));
      copy_ms.push_back(ms(r->copy_duration));
      switch_ms.push_back(ms(r->switch_duration));
      stats_ms.push_back(ms(r->stats_duration));
      other_ms.push_back(ms(r->duration - r->plan_duration - r->release_duration - r->copy_duration -
                            r->switch_duration - r->stats_duration));
      memd_rate.push_back(static_cast<double>(r->bytes_moved) / moving / 1e9);
      whole_rate.push_back(static_cast<double>(r->bytes_moved) / secs / 1e9);
      const int copies = static_cast<int>(r->bytes_moved / bytes);
      base_rate.push_back(static_cast<double>(bytes) * copies / baseline_seconds(gpu, bytes, copies) / 1e9);
      for (int i = 1; i < 2 * blocks; i += 2) {
        auto now = e.manager->get(all[i].id);
        if (!now || !holds(gpu, now->address, bytes, i & 0xff)) {
          std::fprintf(stderr, "defragment %llu MiB: block %d lost its bytes\n", static_cast<unsigned long long>(mib), i);
          failed = true;
        }
      }
      if (auto v = e.manager->validate(); !v) {
        std::fprintf(stderr, "validate: %s\n", v.error().message.c_str());
        failed = true;
      }
    }
    {
      // What "the rest" may hold: the statistics calls a run makes before
      // and after (MemoryManager::pool_stats, DevicePool::stats), timed
      // alone on a fresh env holding the same blocks.
      auto e = make_env();
      std::vector<AllocationRecord> all;
      for (int i = 0; i < 2 * blocks; ++i) all.push_back(alloc(e, bytes));
      for (int i = 0; i < 2 * blocks; i += 2) (void)e.manager->deallocate(all[i].id);
      auto t0 = std::chrono::steady_clock::now();
      const auto stats = e.manager->pool_stats();
      const double pool_stats_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      double one_ms = 0;
      if (auto pool = e.manager->pool(e.device, MemoryType::VRAM)) {
        t0 = std::chrono::steady_clock::now();
        (void)(*pool)->stats();
        one_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      }
      std::printf("    statistics: MemoryManager::pool_stats() %.3f ms (%zu pools), DevicePool::stats() %.3f ms\n",
                  pool_stats_ms, stats.size(), one_ms);
    }
    const double m = median(memd_rate), w = median(whole_rate), b = median(base_rate);
    std::printf("move %3llu MiB blocks      %12.2f %12.2f %12.2f %8.2f%s\n", static_cast<unsigned long long>(mib), m,
                w, b, b > 0 ? m / b : 0.0,
                gpu ? (m / b >= 0.5 ? "  (goal >= 0.50: met)" : "  (goal >= 0.50: MISSED)") : "");
    std::printf("    of the run: planning %.2f ms, copies %.2f ms, switching %.2f ms, statistics %.2f ms, the rest "
                "%.2f ms; the env's first (warm-up) run %.2f ms\n",
                median(plan_ms), median(copy_ms), median(switch_ms), median(stats_ms), median(other_ms),
                median(first_ms));
  }
  // Remap vs copy of a block owning whole units: two blocks freed and
  // trimmed below it leave unmapped address space for its units.
  for (std::uint64_t mib : {8, 64, 256}) {
    const std::uint64_t bytes = mib * kMiB;
    std::vector<double> remap_s, release_s, copy_s, remap_plan_s;
    bool gpu = false;
    for (int rep = 0; rep < reps; ++rep) {
      auto e = make_env();
      gpu = e.device.kind() == DeviceKind::Cuda;
      (void)warm_up(e, gpu);
      auto a = alloc(e, bytes);
      auto b = alloc(e, bytes);
      auto c = alloc(e, bytes);
      (void)e.manager->deallocate(a.id);
      (void)e.manager->deallocate(b.id);
      e.manager->trim();
      DefragOptions o;
      o.device = e.device;
      o.max_bytes_per_pass = 64 * kGiB;
      auto r = e.defrag->run(o);
      if (!r || r->remaps != 1) {
        std::fprintf(stderr, "remap %llu MiB: %s\n", static_cast<unsigned long long>(mib),
                     r ? "no remap" : r.error().message.c_str());
        failed = true;
        break;
      }
      remap_s.push_back(std::chrono::duration<double>(r->duration - r->release_duration - r->plan_duration -
                                                      r->stats_duration)
                            .count());
      remap_plan_s.push_back(std::chrono::duration<double>(r->plan_duration).count());
      release_s.push_back(std::chrono::duration<double>(r->release_duration).count());
      copy_s.push_back(baseline_seconds(gpu, bytes, 1));
      (void)c;
    }
    const double rm = median(remap_s), rl = median(release_s), cp = median(copy_s), pl = median(remap_plan_s);
    std::printf("remap %3llu MiB block: %9.1f us remap and switch, %9.1f us planning, %9.1f us giving units "
                "back; %9.1f us copy, copy/remap %.2f\n",
                static_cast<unsigned long long>(mib), rm * 1e6, pl * 1e6, rl * 1e6, cp * 1e6, rm > 0 ? cp / rm : 0.0);
  }
  return failed ? 1 : 0;
}
