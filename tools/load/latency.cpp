#include "latency.hpp"

#include <algorithm>
#include <cmath>

namespace memd::load {

LatencySummary summarize(std::vector<std::int64_t> samples_ns) {
  LatencySummary s;
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  const std::size_t n = samples_ns.size();
  auto rank = [&](double q) {
    const auto r = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
    return samples_ns[std::clamp<std::size_t>(r, 1, n) - 1];
  };
  double sum = 0;
  for (auto v : samples_ns) sum += static_cast<double>(v);
  s.count = n;
  s.p50_ms = static_cast<double>(rank(0.50)) / 1e6;
  s.p99_ms = static_cast<double>(rank(0.99)) / 1e6;
  s.max_ms = static_cast<double>(samples_ns.back()) / 1e6;
  s.mean_ms = sum / static_cast<double>(n) / 1e6;
  return s;
}

}  // namespace memd::load
