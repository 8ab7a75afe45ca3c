// vmm_calls — what each CUDA virtual-memory driver call costs on this card,
// by size, so the pool's mapping policy rests on measured numbers rather than
// folklore. Prints one line per (call, size): median and p90 in microseconds
// over --reps cycles. Needs a GPU; exits 0 with a message without one.
//
//   LD_LIBRARY_PATH=.gpu/lib .gpu/bin/memd_vmm_calls [--reps N] [--range-gib G]
//
// Cycles measured, each on a fresh stretch of one reserved range:
//   create / map / set_access / unmap / release   one handle of SIZE
//   remap = unmap + map + set_access of a kept handle at a new address
//   set_access over K adjacent 2 MiB handles in one call, and unmap of them
//   in one call (what batching buys when units are made of several handles)
//   32 handles of 16 MiB created, mapped (+ access) and unmapped by T threads
//   at once, T = 1, 2, 4, 8 (does the driver work on handles in parallel?)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#if defined(MEMD_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "backends/cuda/driver_api.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

struct Series {
  std::vector<double> v;
  void add(double x) { v.push_back(x); }
  double pct(double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
  }
};

#define CHECK(call)                                                                \
  do {                                                                             \
    CUresult r_ = (call);                                                          \
    if (r_ != CUDA_SUCCESS) {                                                      \
      std::fprintf(stderr, "%s failed: %s\n", #call, api.error_name(r_).c_str()); \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

}  // namespace

int main(int argc, char** argv) {
  int reps = 30;
  std::size_t range_gib = 4;  // the reservation the cycles run in
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::max(3, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--range-gib") == 0) range_gib = std::max(4, std::atoi(argv[i + 1]));
  }
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("memd_vmm_calls: no CUDA device; nothing measured\n");
    return 0;
  }
  cudaSetDevice(0);
  cudaFree(nullptr);  // create the primary context
  const auto& api = memd::cuda::driver_api();
  if (!api.vmm_complete()) {
    std::printf("memd_vmm_calls: driver lacks the virtual-memory entry points\n");
    return 0;
  }
  CUdevice dev = 0;
  CHECK(api.device_get(&dev, 0));

  for (bool shareable : {false, true}) {
    CUmemAllocationProp prop{};
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = dev;
    prop.requestedHandleTypes = shareable ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR : CU_MEM_HANDLE_TYPE_NONE;
    std::size_t gran = 0;
    CHECK(api.mem_get_allocation_granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
    CUmemAccessDesc access{};
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = dev;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;

    const std::size_t kMiB = 1 << 20;
    const std::size_t range_bytes = range_gib << 30;
    CUdeviceptr base = 0;
    CHECK(api.mem_address_reserve(&base, range_bytes, gran, 0, 0));

    std::printf("== handle type %s, granularity %zu KiB, %d reps, %zu GiB reserved (microseconds: median / p90)\n",
                shareable ? "POSIX fd" : "none", gran / 1024, reps, range_gib);
    std::printf("%-8s %14s %14s %14s %14s %14s %14s\n", "size", "create", "map", "set_access", "unmap",
                "release", "remap");
    for (std::size_t size : {2 * kMiB, 8 * kMiB, 16 * kMiB, 64 * kMiB, 256 * kMiB, 1024 * kMiB}) {
      Series create, map, access_s, unmap, release, remap;
      for (int rep = 0; rep < reps; ++rep) {
        CUmemGenericAllocationHandle h = 0;
        auto t = Clock::now();
        CHECK(api.mem_create(&h, size, &prop, 0));
        create.add(us_since(t));
        CUdeviceptr at = base + (rep % 2) * (std::size_t{2} << 30);
        t = Clock::now();
        CHECK(api.mem_map(at, size, 0, h, 0));
        map.add(us_since(t));
        t = Clock::now();
        CHECK(api.mem_set_access(at, size, &access, 1));
        access_s.add(us_since(t));
        // Remap the same handle elsewhere: what recycling physical memory costs.
        CUdeviceptr other = base + ((rep + 1) % 2) * (std::size_t{2} << 30);
        t = Clock::now();
        CHECK(api.mem_unmap(at, size));
        CHECK(api.mem_map(other, size, 0, h, 0));
        CHECK(api.mem_set_access(other, size, &access, 1));
        remap.add(us_since(t));
        t = Clock::now();
        CHECK(api.mem_unmap(other, size));
        unmap.add(us_since(t));
        t = Clock::now();
        CHECK(api.mem_release(h));
        release.add(us_since(t));
      }
      auto cell = [](Series& s) {
        static char buf[8][32];
        static int i = 0;
        char* b = buf[i++ % 8];
        std::snprintf(b, 32, "%6.1f / %6.1f", s.pct(0.5), s.pct(0.9));
        return b;
      };
      std::printf("%5zu MiB %14s %14s %14s %14s %14s %14s\n", size / kMiB, cell(create), cell(map),
                  cell(access_s), cell(unmap), cell(release), cell(remap));
    }

    // Batching: K handles of one granule, mapped one by one, then one
    // set_access and one unmap over all of them.
    std::printf("%-8s %18s %18s %18s\n", "K x 2MiB", "K maps (total)", "1 set_access", "1 unmap");
    for (int k : {1, 4, 8, 32}) {
      Series maps, acc, unm;
      std::vector<CUmemGenericAllocationHandle> hs(static_cast<std::size_t>(k));
      for (int rep = 0; rep < reps; ++rep) {
        for (auto& h : hs) CHECK(api.mem_create(&h, gran, &prop, 0));
        auto t = Clock::now();
        for (int i = 0; i < k; ++i) CHECK(api.mem_map(base + static_cast<std::size_t>(i) * gran, gran, 0, hs[static_cast<std::size_t>(i)], 0));
        maps.add(us_since(t));
        t = Clock::now();
        CHECK(api.mem_set_access(base, static_cast<std::size_t>(k) * gran, &access, 1));
        acc.add(us_since(t));
        t = Clock::now();
        CHECK(api.mem_unmap(base, static_cast<std::size_t>(k) * gran));
        unm.add(us_since(t));
        for (auto h : hs) CHECK(api.mem_release(h));
      }
      std::printf("%8d %8.1f / %7.1f %8.1f / %7.1f %8.1f / %7.1f\n", k, maps.pct(0.5), maps.pct(0.9), acc.pct(0.5),
                  acc.pct(0.9), unm.pct(0.5), unm.pct(0.9));
    }

    // Parallel: K handles split into T contiguous shares, one thread each.
    // Wall time of each phase per handle; if the driver serialises, it stays
    // flat in T.
    std::printf("%-8s %14s %14s %14s %14s   (32 x 16 MiB, wall us per handle, median)\n", "threads", "create",
                "map+access", "unmap", "release");
    constexpr int kHandles = 32;
    const std::size_t unit = 16 * kMiB;
    for (int threads : {1, 2, 4, 8}) {
      Series cr, ma, un, re;
      for (int rep = 0; rep < std::max(3, reps / 4); ++rep) {
        std::vector<CUmemGenericAllocationHandle> hs(kHandles);
        auto phase = [&](auto&& work) {
          auto t = Clock::now();
          std::vector<std::thread> pool;
          for (int w = 0; w < threads; ++w)
            pool.emplace_back([&, w] {
              const int lo = kHandles * w / threads, hi = kHandles * (w + 1) / threads;
              work(lo, hi);
            });
          for (auto& th : pool) th.join();
          return us_since(t) / kHandles;
        };
        cr.add(phase([&](int lo, int hi) {
          for (int i = lo; i < hi; ++i) CHECK(api.mem_create(&hs[static_cast<std::size_t>(i)], unit, &prop, 0));
        }));
        ma.add(phase([&](int lo, int hi) {
          for (int i = lo; i < hi; ++i)
            CHECK(api.mem_map(base + static_cast<std::size_t>(i) * unit, unit, 0, hs[static_cast<std::size_t>(i)], 0));
          CHECK(api.mem_set_access(base + static_cast<std::size_t>(lo) * unit, static_cast<std::size_t>(hi - lo) * unit,
                                   &access, 1));
        }));
        un.add(phase([&](int lo, int hi) {
          CHECK(api.mem_unmap(base + static_cast<std::size_t>(lo) * unit, static_cast<std::size_t>(hi - lo) * unit));
        }));
        re.add(phase([&](int lo, int hi) {
          for (int i = lo; i < hi; ++i) CHECK(api.mem_release(hs[static_cast<std::size_t>(i)]));
        }));
      }
      std::printf("%8d %14.1f %14.1f %14.1f %14.1f\n", threads, cr.pct(0.5), ma.pct(0.5), un.pct(0.5), re.pct(0.5));
    }
    CHECK(api.mem_address_free(base, range_bytes));
  }

  // cudaMallocAsync for scale: first-touch growth and cached reuse.
  cudaMemPool_t pool;
  cudaDeviceGetDefaultMemPool(&pool, 0);
  unsigned long long threshold = ~0ULL;
  cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  std::printf("== cudaMallocAsync growth (fresh pool bytes), microseconds for one call\n");
  for (std::size_t mib : {2, 16, 64, 256}) {
    void* p = nullptr;
    auto t = Clock::now();
    cudaMallocAsync(&p, mib << 20, s);
    double grow = us_since(t);
    cudaFreeAsync(p, s);
    cudaStreamSynchronize(s);
    t = Clock::now();
    cudaMallocAsync(&p, mib << 20, s);
    double again = us_since(t);
    cudaFreeAsync(p, s);
    cudaStreamSynchronize(s);
    cudaMemPoolTrimTo(pool, 0);
    std::printf("%5zu MiB  grow %8.1f  cached %6.1f\n", mib, grow, again);
  }
  return 0;
}

#else
int main() {
  std::printf("memd_vmm_calls: built without CUDA; nothing measured\n");
  return 0;
}
#endif
