// First pass and later passes apart (pass_summary.hpp).
#include "pass_summary.hpp"

#include <algorithm>

namespace memd::replay {

PassSummary summarise_passes(const std::vector<PassFigures>& passes) {
  PassSummary s;
  s.passes = static_cast<int>(passes.size());
  if (passes.empty()) return s;
  auto per_op = [](std::uint64_t ns, std::uint64_t ops) {
    return ops == 0 ? 0.0 : static_cast<double>(ns) / static_cast<double>(ops);
  };
  const PassFigures& first = passes.front();
  s.ns_per_op_first = per_op(first.ns, first.ops);
  s.counted = std::all_of(passes.begin(), passes.end(), [](const PassFigures& p) {
    return p.map_calls >= 0 && p.unmap_calls >= 0 && p.mapped_units >= 0 && p.unmapped_units >= 0;
  });
  if (s.counted) {
    s.map_calls_first = first.map_calls;
    s.unmap_calls_first = first.unmap_calls;
    s.mapped_units_first = first.mapped_units;
    s.unmapped_units_first = first.unmapped_units;
  }
  if (passes.size() == 1) return s;
  std::uint64_t ns = 0, ops = 0;
  std::int64_t maps = 0, unmaps = 0, mapped = 0, unmapped = 0;
  for (auto it = passes.begin() + 1; it != passes.end(); ++it) {
    ns += it->ns;
    ops += it->ops;
    if (!s.counted) continue;
    maps += it->map_calls;
    unmaps += it->unmap_calls;
    mapped += it->mapped_units;
    unmapped += it->unmapped_units;
    s.map_unmap_calls_later_max = std::max(s.map_unmap_calls_later_max, it->map_calls + it->unmap_calls);
  }
  s.ns_per_op_later = per_op(ns, ops);
  const auto later = static_cast<double>(passes.size() - 1);
  s.map_calls_later_per_pass = static_cast<double>(maps) / later;
  s.unmap_calls_later_per_pass = static_cast<double>(unmaps) / later;
  s.mapped_units_later_per_pass = static_cast<double>(mapped) / later;
  s.unmapped_units_later_per_pass = static_cast<double>(unmapped) / later;
  return s;
}

}  // namespace memd::replay
