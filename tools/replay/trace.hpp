// replay/trace.hpp — allocation traces in the shared/traces format.
//
// One event a line: `a ID SIZE` allocates SIZE bytes under a new ID, `f ID`
// frees it. Files may be gzip-compressed. The whole trace is parsed before any
// replay so that parsing never counts in a timing.
//
// Thread safety: values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "memd/error.hpp"

namespace memd::replay {

struct TraceOp {
  bool allocate = false;
  std::uint32_t slot = 0;  // dense index of the trace ID
  std::uint64_t size = 0;  // allocations only
};

struct Trace {
  std::string name;  // file name without directories and extensions
  std::vector<TraceOp> ops;
  std::uint32_t slots = 0;          // distinct IDs
  std::uint64_t peak_live_bytes = 0;
  std::uint64_t allocations = 0;
  // Op index where each pass begins (repeat_trace); empty: one pass, as
  // loaded. Replayers time and count each pass apart.
  std::vector<std::size_t> pass_starts;
};

// [begin, end) op indices of each pass: one range for a trace without
// pass_starts.
std::vector<std::pair<std::size_t, std::size_t>> pass_ranges(const Trace& trace);

// Parses a trace; malformed lines, reused IDs and frees of unknown IDs are
// errors that name the line.
Result<Trace> load_trace(const std::string& path);

// The same sequence with every size multiplied by `factor` (> 0), rounded
// down to PyTorch's 512 bytes and at least 512; named "<name>_x<factor>".
// Why: a policy tuned on a few traces can sit on a cliff of their exact
// sizes (vision_mix scaled by 0.5 once measured 1.0922 while the original
// was 1.0070); scaled copies make that visible in a test.
Trace scale_trace(const Trace& trace, double factor);

// The trace as if the workload had stopped the first time its live bytes
// reached `fraction` (in (0, 1]) of the peak: the events up to that one, then
// a free of every block still live (in slot order); named "<name>_to<percent>".
// Why: an allocator that does not know the future must hold its footprint
// ratio at every such point, since any of them could have been the peak; an
// allocator that grows in fixed steps looks good at the end of growth and not
// at a point before it (cudaMallocAsync: 1.13-1.28 on prefixes of traces it
// ends at 1.03-1.04, docs/benchmarks.md).
Trace prefix_trace(const Trace& trace, double fraction);

// The trace `passes` (>= 1) times back to back, as one run in one pool: pass
// k's slots are the trace's shifted by k × slots, so blocks the trace leaves
// live stay live and the next pass starts on top of them. Pass 1 is the trace
// as recorded; in passes 2..N each allocation's size is multiplied by a factor
// drawn uniformly from [1 - jitter, 1 + jitter] (0 <= jitter < 1; at least 1
// byte), from a generator seeded with `seed` (same seed, same trace; jitter 0
// draws nothing and copies exactly). peak_live_bytes is over the whole run;
// pass_starts says where each pass begins. The name stays the trace's (the
// replay reports the passes beside it). Why: a pool that serves one pass well
// may map and unmap on every later one (a request loop or a model reloaded),
// and only a run in one pool shows that.
Trace repeat_trace(const Trace& trace, int passes, double jitter, std::uint64_t seed);

}  // namespace memd::replay
