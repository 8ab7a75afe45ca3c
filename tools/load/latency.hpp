// load/latency.hpp — latency samples and the summary memd-load reports.
//
// Percentiles are nearest-rank over every sample kept (a 60 s run at one
// sample per 20 ms keeps 3,000), so p99 is a sample that was measured.
//
// Thread safety: values; a Samples object belongs to one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace memd::load {

struct LatencySummary {
  std::size_t count = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;
};

// Nearest-rank percentile q in (0, 1] of the samples (in nanoseconds);
// an empty list summarises to all zeros.
LatencySummary summarize(std::vector<std::int64_t> samples_ns);

}  // namespace memd::load
