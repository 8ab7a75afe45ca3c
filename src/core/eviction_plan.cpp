// core/eviction_plan.cpp — see eviction_plan.hpp.
#include "core/eviction_plan.hpp"

#include <algorithm>
#include <numeric>

namespace memd {
namespace {

double value_of(const EvictionCandidate& m) {
  const double recency = 1.0 / (1.0 + std::max(0.0, m.idle_seconds) / 60.0);
  const double likely = m.reuse_probability >= 0 ? std::min(1.0, m.reuse_probability) : recency;
  return std::max(0.0, m.restore_seconds) * likely;
}

}  // namespace

std::vector<std::uint32_t> eviction_order(const EvictionInput& input) {
  std::vector<std::uint32_t> order;
  for (std::uint32_t i = 0; i < input.models.size(); ++i)
    if (!input.models[i].pinned) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    const auto& x = input.models[a];
    const auto& y = input.models[b];
    if (x.priority != y.priority) return x.priority < y.priority;
    if (x.in_keep_alive != y.in_keep_alive) return !x.in_keep_alive;
    const double vx = value_of(x), vy = value_of(y);
    if (vx != vy) return vx < vy;
    if (x.idle_seconds != y.idle_seconds) return x.idle_seconds > y.idle_seconds;
    return a < b;
  });
  return order;
}

std::uint64_t freed_by(const EvictionInput& input, const std::vector<std::uint32_t>& victims,
                       std::vector<std::uint32_t>* freed) {
  // A component comes back when no staying model and nothing else holds it.
  std::vector<std::uint8_t> victim(input.models.size(), 0), kept(input.component_bytes.size(), 0),
      used(input.component_bytes.size(), 0);
  for (auto v : victims) victim[v] = 1;
  for (auto c : input.held_elsewhere)
    if (c < kept.size()) kept[c] = 1;
  for (std::uint32_t i = 0; i < input.models.size(); ++i)
    for (auto c : input.models[i].components) {
      if (c >= kept.size()) continue;
      if (victim[i]) used[c] = 1;
      else kept[c] = 1;
    }
  std::uint64_t bytes = 0;
  if (freed) freed->clear();
  for (std::uint32_t c = 0; c < input.component_bytes.size(); ++c)
    if (used[c] && !kept[c]) {
      bytes += input.component_bytes[c];
      if (freed) freed->push_back(c);
    }
  return bytes;
}

Result<EvictionPlan> plan_eviction(const EvictionInput& input) {
  for (std::uint32_t i = 0; i < input.models.size(); ++i)
    for (auto c : input.models[i].components)
      if (c >= input.component_bytes.size())
        return fail(ErrorCode::invalid_argument, "model {} names component {} of {}", i, c,
                    input.component_bytes.size());
  EvictionPlan plan;
  const auto order = eviction_order(input);
  plan.evictable_bytes = freed_by(input, order);
  if (input.bytes_needed == 0) {
    plan.enough = true;
    return plan;
  }
  // Take models in order until enough comes back.
  std::vector<std::uint32_t> chosen;
  std::uint64_t bytes = 0;
  for (auto m : order) {
    chosen.push_back(m);
    bytes = freed_by(input, chosen);
    if (bytes >= input.bytes_needed) break;
  }
  if (bytes < input.bytes_needed) {
    // Not enough even with every unpinned model gone: say so and evict
    // nothing (a load that cannot fit must not empty the tier first).
    plan.freed_bytes = 0;
    return plan;
  }
  // Give back any victim the others can do without, the most valuable
  // (latest chosen) first.
  for (std::size_t k = chosen.size(); k-- > 0;) {
    auto without = chosen;
    without.erase(without.begin() + static_cast<std::ptrdiff_t>(k));
    if (freed_by(input, without) >= input.bytes_needed) chosen = std::move(without);
  }
  plan.victims = std::move(chosen);
  plan.freed_bytes = freed_by(input, plan.victims, &plan.freed);
  plan.enough = true;
  return plan;
}

}  // namespace memd
