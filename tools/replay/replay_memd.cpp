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

std::uint64_t to_ns(SteadyClock::duration d) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}

double ns_per_op(SteadyClock::duration d, std::uint64_t ops) {
  return ops == 0 ? 0.0 : static_cast<double>(to_ns(d)) / static_cast<double>(ops);
}

}  // namespace

Result<ReplayResult> replay_memd(const Trace& trace, const MemdReplayOptions& options) {
  BackendOptions bo;
  bo.enable_cuda = options.backend == "cuda";
  const std::uint64_t host_bytes =
      options.host_device_bytes != 0
          ? options.host_device_bytes
          : std::max<std::uint64_t>(kGiB, (2 * trace.peak_live_bytes + kGiB - 1) / kGiB * kGiB);
  bo.host_device_sizes = {host_bytes};
  auto catalog = DeviceCatalog::discover(bo);
  if (!catalog) return fail(catalog.error());
  DeviceId device = options.backend == "cuda" ? DeviceId::cuda(options.device) : DeviceId::host(0);
  if (!(*catalog)->info(device))
    return fail(ErrorCode::unavailable, "no {} device for --backend {}", device.to_string(), options.backend);
  auto backend = (*catalog)->backend_for(device, MemoryType::VRAM);
  if (!backend) return fail(backend.error());
  PoolOptions po;
  po.device = device;
  po.mode = options.segments ? PoolMode::Segments : PoolMode::Virtual;
  po.policy = options.policy;
  if (options.backend == "host") po.capacity = host_bytes;
  if (options.map_unit_max != 0) po.map_unit_max = options.map_unit_max;
  if (options.map_unit_min != 0) po.map_unit_min = options.map_unit_min;
  if (options.map_ahead_max != ~std::uint64_t{0}) po.map_ahead_max = options.map_ahead_max;
  if (options.huge_threshold != 0) po.huge_threshold = options.huge_threshold;
  if (options.retain_fraction >= 0) po.retain_fraction = options.retain_fraction;
  auto pool = DevicePool::create(**backend, po);
  if (!pool) return fail(pool.error());

  std::vector<void*> slots(trace.slots, nullptr);
  std::vector<PassFigures> passes;
  SteadyClock::duration elapsed{};
  PoolStats before = (*pool)->counters();
  for (auto [begin, end] : pass_ranges(trace)) {
    auto start = SteadyClock::now();
    for (std::size_t i = begin; i < end; ++i) {
      const TraceOp& op = trace.ops[i];
      if (op.allocate) {
        auto p = (*pool)->allocate(op.size == 0 ? 1 : op.size);
        if (!p) return fail(p.error().code, "{}: replay failed: {}", trace.name, p.error().message);
        slots[op.slot] = *p;
      } else {
        if (auto r = (*pool)->deallocate(slots[op.slot]); !r) return fail(r.error());
      }
    }
    const auto pass_time = SteadyClock::now() - start;
    elapsed += pass_time;
    // counters(), not stats(): stats() drains the thread caches, which would
    // change what the next pass finds.
    const PoolStats after = (*pool)->counters();
    auto delta = [](std::uint64_t a, std::uint64_t b) { return static_cast<std::int64_t>(a - b); };
    PassFigures pass;
    pass.ops = end - begin;
    pass.ns = to_ns(pass_time);
    pass.map_calls = delta(after.map_calls, before.map_calls);
    pass.unmap_calls = delta(after.unmap_calls, before.unmap_calls);
    pass.mapped_units = delta(after.mapped_units, before.mapped_units);
    pass.unmapped_units = delta(after.unmapped_units, before.unmapped_units);
    passes.push_back(pass);
    before = after;
  }
  if (options.validate)
    if (auto v = (*pool)->validate(); !v) return fail(v.error());
  auto stats = (*pool)->stats();
  ReplayResult r;
  r.trace = trace.name;
  r.allocator = options.segments ? "memd-segments" : "memd";
  if (options.policy == PoolPolicy::Throughput) r.allocator += "-throughput";
  r.backend = options.backend;
  r.device = device.to_string();
  r.peak_live_bytes = trace.peak_live_bytes;
  r.peak_footprint_bytes = stats.peak_reserved_bytes;
  r.footprint_ratio = static_cast<double>(r.peak_footprint_bytes) / static_cast<double>(trace.peak_live_bytes);
  r.ops = trace.ops.size();
  r.ns_per_op = ns_per_op(elapsed, r.ops);
  r.device_calls = stats.device_calls;
  r.mapping_ns_per_op = r.ops == 0 ? 0.0 : static_cast<double>(stats.mapping_ns) / static_cast<double>(r.ops);
  r.passes = std::move(passes);
  if (std::getenv("MEMD_REPLAY_DEBUG"))
    std::fprintf(stderr, "%s: map calls %llu (units %llu), unmap calls %llu (units %llu)\n", trace.name.c_str(),
                 static_cast<unsigned long long>(stats.map_calls), static_cast<unsigned long long>(stats.mapped_units),
                 static_cast<unsigned long long>(stats.unmap_calls),
                 static_cast<unsigned long long>(stats.unmapped_units));
  return r;
}

Result<ReplayResult> replay_malloc(const Trace& trace) {
  std::vector<void*> slots(trace.slots, nullptr);
  // With `passes`, timed: a timestamp at each pass boundary; without,
  // sampling footprint (untimed).
  auto run = [&](std::vector<PassFigures>* passes) -> std::uint64_t {
    std::uint64_t peak = 0;
    for (auto [begin, end] : pass_ranges(trace)) {
      auto start = SteadyClock::now();
      for (std::size_t i = begin; i < end; ++i) {
        const TraceOp& op = trace.ops[i];
        if (op.allocate) {
          slots[op.slot] = std::malloc(op.size == 0 ? 1 : op.size);
          if (passes == nullptr) {
            // Address space glibc holds from the OS: heap arena plus mmapped chunks.
            struct mallinfo2 mi = mallinfo2();
            peak = std::max<std::uint64_t>(peak, mi.arena + mi.hblkhd);
          }
        } else {
          std::free(slots[op.slot]);
        }
      }
      if (passes != nullptr) {
        PassFigures pass;
        pass.ops = end - begin;
        pass.ns = to_ns(SteadyClock::now() - start);
        passes->push_back(pass);
      }
    }
    return peak;
  };
  std::vector<PassFigures> passes;
  run(&passes);
  SteadyClock::duration elapsed{};
  for (const auto& p : passes) elapsed += std::chrono::nanoseconds(static_cast<std::int64_t>(p.ns));
  ReplayResult r;
  r.trace = trace.name;
  r.allocator = "malloc";
  r.backend = "host";
  r.device = "cpu";
  r.peak_live_bytes = trace.peak_live_bytes;
  r.peak_footprint_bytes = run(nullptr);
  r.footprint_ratio = static_cast<double>(r.peak_footprint_bytes) / static_cast<double>(trace.peak_live_bytes);
  r.ops = trace.ops.size();
  r.ns_per_op = ns_per_op(elapsed, r.ops);
  r.device_calls = 0;  // glibc's brk/mmap calls are not visible from here
  r.passes = std::move(passes);
  return r;
}

#if !defined(MEMD_WITH_CUDA)
Result<ReplayResult> replay_cuda_malloc(const Trace&, int) {
  return fail(ErrorCode::unavailable, "memd-replay was built without CUDA");
}
Result<ReplayResult> replay_cuda_async(const Trace&, int) {
  return fail(ErrorCode::unavailable, "memd-replay was built without CUDA");
}
#endif

}  // namespace memd::replay
