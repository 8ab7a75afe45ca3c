#include "soak_mix.hpp"

#include <charconv>

#include <fmt/format.h>

namespace memd::load {
namespace {

constexpr std::array<const char*, kScenarios> kNames{"rw", "transfer", "move", "copy",
                                                      "export", "status", "model", "session"};
constexpr std::uint32_t kMaxWeight = 1000;

}  // namespace

const char* scenario_name(Scenario s) { return kNames[static_cast<std::size_t>(s)]; }

SoakMix default_soak_mix() {
  SoakMix m;
  m.weight = {6, 2, 2, 2, 1, 2, 1, 1};
  return m;
}

std::optional<SoakMix> parse_soak_mix(std::string_view text, std::string& why) {
  if (text.empty() || text.size() > 512) {
    why = "expected name=weight pairs separated by commas (e.g. rw=4,model=1), at most 512 characters";
    return std::nullopt;
  }
  SoakMix mix;
  std::array<bool, kScenarios> seen{};
  while (true) {
    const auto comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    const auto eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) {
      why = fmt::format("'{}' is not name=weight", item);
      return std::nullopt;
    }
    const std::string_view name = item.substr(0, eq), value = item.substr(eq + 1);
    std::size_t k = 0;
    while (k < kScenarios && name != kNames[k]) ++k;
    if (k == kScenarios) {
      why = fmt::format("'{}' is not a scenario (rw, transfer, move, copy, export, status, model, session)",
                        name.substr(0, 32));
      return std::nullopt;
    }
    if (seen[k]) {
      why = fmt::format("'{}' is given twice", name);
      return std::nullopt;
    }
    seen[k] = true;
    std::uint32_t w = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), w);
    if (value.empty() || ec != std::errc{} || end != value.data() + value.size() || w > kMaxWeight) {
      why = fmt::format("{}: '{}' is not a whole number in [0, {}]", name, value.substr(0, 32), kMaxWeight);
      return std::nullopt;
    }
    mix.weight[k] = w;
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  if (mix.total() == 0) {
    why = "every weight is 0: nothing to run";
    return std::nullopt;
  }
  return mix;
}

std::string format_soak_mix(const SoakMix& mix) {
  std::string out;
  for (std::size_t k = 0; k < kScenarios; ++k)
    out += fmt::format("{}{}={}", k ? "," : "", kNames[k], mix.weight[k]);
  return out;
}

std::uint64_t SoakRandom::next() {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Scenario pick_scenario(const SoakMix& mix, std::uint64_t r) {
  for (std::size_t k = 0; k < kScenarios; ++k) {
    if (r < mix.weight[k]) return static_cast<Scenario>(k);
    r -= mix.weight[k];
  }
  // r was out of range: the last scenario with weight (callers draw below total()).
  for (std::size_t k = kScenarios; k-- > 0;)
    if (mix.weight[k] > 0) return static_cast<Scenario>(k);
  return Scenario::rw;
}

}  // namespace memd::load
