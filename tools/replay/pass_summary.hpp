// replay/pass_summary.hpp — the first pass of a --passes run and the later
// ones apart.
//
// A replayer records each pass of a repeated trace (repeat_trace) as it goes;
// this turns the records into the figures memd-replay prints. Why apart: the
// first pass pays for growing the pool from nothing; the later ones show
// whether the pool, once grown, serves the same work again without mapping
// and unmapping (what a request loop or a reloaded model asks of it).
//
// Thread safety: values.
#pragma once

#include <cstdint>
#include <vector>

namespace memd::replay {

// One pass as replayed.
struct PassFigures {
  std::uint64_t ops = 0;
  std::uint64_t ns = 0;  // inside the timed allocate/free loop only
  // Pool counts during the pass (memd only; negative: not counted, for the
  // baselines, whose driver or OS calls are not visible).
  std::int64_t map_calls = -1;
  std::int64_t unmap_calls = -1;
  std::int64_t mapped_units = -1;
  std::int64_t unmapped_units = -1;
};

struct PassSummary {
  int passes = 0;
  double ns_per_op_first = 0;
  double ns_per_op_later = -1;  // over passes 2..N together; negative: one pass
  bool counted = false;         // the map/unmap figures below are known
  std::int64_t map_calls_first = 0;
  std::int64_t unmap_calls_first = 0;
  std::int64_t mapped_units_first = 0;
  std::int64_t unmapped_units_first = 0;
  // Averages over passes 2..N (0 with one pass).
  double map_calls_later_per_pass = 0;
  double unmap_calls_later_per_pass = 0;
  double mapped_units_later_per_pass = 0;
  double unmapped_units_later_per_pass = 0;
  // The most map + unmap calls of any single later pass: an average can hide
  // one pass that remaps everything.
  std::int64_t map_unmap_calls_later_max = 0;
};

PassSummary summarise_passes(const std::vector<PassFigures>& passes);

}  // namespace memd::replay
