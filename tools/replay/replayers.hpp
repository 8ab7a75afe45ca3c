// replay/replayers.hpp — one function per allocator the replay compares.
//
// Each replays a whole trace and reports the figures of issue 3: peak live
// bytes (from the trace), peak bytes held from the device or OS, their ratio,
// time per operation and calls into the device/OS. Timed passes do nothing but
// allocate and free; footprint that can only be sampled (glibc, cudaMalloc)
// is measured in a second, untimed pass. A trace of several passes
// (repeat_trace) is replayed in one allocator instance, and each pass is
// timed, and for memd counted, on its own: a timestamp at each boundary, and
// memd's counters() read between passes, outside the timed loop.
//
// Thread safety: run one replay at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "alloc/pool_options.hpp"
#include "memd/error.hpp"
#include "pass_summary.hpp"
#include "trace.hpp"

namespace memd::replay {

struct ReplayResult {
  std::string trace;
  std::string allocator;  // memd, malloc, cuda-malloc, cuda-async
  std::string backend;    // host or cuda
  std::string device;
  std::uint64_t peak_live_bytes = 0;
  std::uint64_t peak_footprint_bytes = 0;
  double footprint_ratio = 0;
  std::uint64_t ops = 0;
  double ns_per_op = 0;
  std::uint64_t device_calls = 0;
  // memd only: of ns_per_op, the time inside backend map/unmap calls
  // (negative: not measured, for the baselines).
  double mapping_ns_per_op = -1;
  // One record per pass of the trace (pass_ranges), in order.
  std::vector<PassFigures> passes;
};

// The highest --device index taken (DeviceId's index is an int; no host has
// more GPUs than this).
inline constexpr std::uint64_t kMaxReplayDevice = 1023;

struct MemdReplayOptions {
  std::string backend = "host";         // host | cuda
  int device = 0;                       // cuda: the GPU, cuda:N (host: always host:0)
  std::uint64_t host_device_bytes = 0;  // 0: 2 × peak live, at least 1 GiB
  bool segments = false;                // plain-segment mode instead of virtual memory
  bool validate = false;                // validate() after the run
  PoolPolicy policy = PoolPolicy::Footprint;  // throughput: reported as memd-throughput
  std::uint64_t map_unit_max = 0;
  std::uint64_t map_unit_min = 0;
  std::uint64_t map_ahead_max = ~std::uint64_t{0};  // all-ones: the pool's default
  std::uint64_t huge_threshold = 0;  // 0: the pool's default
  double retain_fraction = -1;  // <0: the pool's default
};

Result<ReplayResult> replay_memd(const Trace& trace, const MemdReplayOptions& options);
Result<ReplayResult> replay_malloc(const Trace& trace);
// Only with MEMD_WITH_CUDA; unavailable elsewhere.
// On cuda:`device`.
Result<ReplayResult> replay_cuda_malloc(const Trace& trace, int device);
Result<ReplayResult> replay_cuda_async(const Trace& trace, int device);

}  // namespace memd::replay
