// Replays a trace on memd's DevicePool (host:0 or cuda:0) and on glibc malloc.
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "alloc/device_pool.hpp"
#include "backends/device_catalog.hpp"
#include "replayers.hpp"

namespace memd::replay {
namespace {

using SteadyClock = std::chrono::steady_clock;

double ns_per_op(SteadyClock::duration d, std::uint64_t ops) {
  return ops == 0 ? 0.0 : static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) /
                              static_cast<double>(ops);
}

}  // namespace

Result<ReplayResult> replay_memd(const Trace& trace, const MemdReplayOptions& options) {
  BackendOptions bo;
  bo.enable_cuda = options.backend == "cuda";
  bo.host_device_bytes = options.host_device_bytes != 0
                             ? options.host_device_bytes
                             : std::max<std::uint64_t>(kGiB, (2 * trace.peak_live_bytes + kGiB - 1) / kGiB * kGiB);
  auto catalog = DeviceCatalog::discover(bo);
  if (!catalog) return fail(catalog.error());
  DeviceId device = options.backend == "cuda" ? DeviceId::cuda(0) : DeviceId::host(0);
  if (!(*catalog)->info(device))
    return fail(ErrorCode::unavailable, "no {} device for --backend {}", device.to_string(), options.backend);
  auto backend = (*catalog)->backend_for(device, MemoryType::VRAM);
  if (!backend) return fail(backend.error());
  PoolOptions po;
  po.device = device;
  po.mode = options.segments ? PoolMode::Segments : PoolMode::Virtual;
  if (options.backend == "host") po.capacity = bo.host_device_bytes;
  if (options.map_unit_max != 0) po.map_unit_max = options.map_unit_max;
  if (options.map_unit_min != 0) po.map_unit_min = options.map_unit_min;
  if (options.map_ahead_max != ~std::uint64_t{0}) po.map_ahead_max = options.map_ahead_max;
  if (options.huge_threshold != 0) po.huge_threshold = options.huge_threshold;
  if (options.retain_fraction >= 0) po.retain_fraction = options.retain_fraction;
  auto pool = DevicePool::create(**backend, po);
  if (!pool) return fail(pool.error());

  std::vector<void*> slots(trace.slots, nullptr);
  auto start = SteadyClock::now();
  for (const auto& op : trace.ops) {
    if (op.allocate) {
      auto p = (*pool)->allocate(op.size == 0 ? 1 : op.size);
      if (!p) return fail(p.error().code, "{}: replay failed: {}", trace.name, p.error().message);
      slots[op.slot] = *p;
    } else {
      if (auto r = (*pool)->deallocate(slots[op.slot]); !r) return fail(r.error());
    }
  }
  auto elapsed = SteadyClock::now() - start;
  if (options.validate)
    if (auto v = (*pool)->validate(); !v) return fail(v.error());
  auto stats = (*pool)->stats();
  ReplayResult r;
  r.trace = trace.name;
  r.allocator = options.segments ? "memd-segments" : "memd";
  r.backend = options.backend;
  r.device = device.to_string();
  r.peak_live_bytes = trace.peak_live_bytes;
  r.peak_footprint_bytes = stats.peak_reserved_bytes;
  r.footprint_ratio = static_cast<double>(r.peak_footprint_bytes) / static_cast<double>(trace.peak_live_bytes);
  r.ops = trace.ops.size();
  r.ns_per_op = ns_per_op(elapsed, r.ops);
  r.device_calls = stats.device_calls;
  r.mapping_ns_per_op = r.ops == 0 ? 0.0 : static_cast<double>(stats.mapping_ns) / static_cast<double>(r.ops);
  if (std::getenv("MEMD_REPLAY_DEBUG"))
    std::fprintf(stderr, "%s: map calls %llu (units %llu), unmap calls %llu (units %llu)\n", trace.name.c_str(),
                 static_cast<unsigned long long>(stats.map_calls), static_cast<unsigned long long>(stats.mapped_units),
                 static_cast<unsigned long long>(stats.unmap_calls),
                 static_cast<unsigned long long>(stats.unmapped_units));
  return r;
}

Result<ReplayResult> replay_malloc(const Trace& trace) {
  std::vector<void*> slots(trace.slots, nullptr);
  auto run = [&](bool sample) -> std::uint64_t {
    std::uint64_t peak = 0;
    for (const auto& op : trace.ops) {
      if (op.allocate) {
        slots[op.slot] = std::malloc(op.size == 0 ? 1 : op.size);
        if (sample) {
          // Address space glibc holds from the OS: heap arena plus mmapped chunks.
          struct mallinfo2 mi = mallinfo2();
          peak = std::max<std::uint64_t>(peak, mi.arena + mi.hblkhd);
        }
      } else {
        std::free(slots[op.slot]);
      }
    }
    return peak;
  };
  auto start = SteadyClock::now();
  run(false);
  auto elapsed = SteadyClock::now() - start;
  ReplayResult r;
  r.trace = trace.name;
  r.allocator = "malloc";
  r.backend = "host";
  r.device = "cpu";
  r.peak_live_bytes = trace.peak_live_bytes;
  r.peak_footprint_bytes = run(true);
  r.footprint_ratio = static_cast<double>(r.peak_footprint_bytes) / static_cast<double>(trace.peak_live_bytes);
  r.ops = trace.ops.size();
  r.ns_per_op = ns_per_op(elapsed, r.ops);
  r.device_calls = 0;  // glibc's brk/mmap calls are not visible from here
  return r;
}

#if !defined(MEMD_WITH_CUDA)
Result<ReplayResult> replay_cuda_malloc(const Trace&) {
  return fail(ErrorCode::unavailable, "memd-replay was built without CUDA");
}
Result<ReplayResult> replay_cuda_async(const Trace&) {
  return fail(ErrorCode::unavailable, "memd-replay was built without CUDA");
}
#endif

}  // namespace memd::replay
