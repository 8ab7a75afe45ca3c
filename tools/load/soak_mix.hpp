// load/soak_mix.hpp — the weighted mix of scenarios a soak client loops over
// (memd-load --mode soak), and the seeded choice among them.
//
// Each scenario is a whole story with its own clean-up, so a client never
// holds anything between two of them: rw (allocate, write, read back,
// free), transfer (an asynchronous copy to another device), move (to
// another device or memory type, same id), copy (memory_copy at offsets),
// export (export, release, release again), status (status, usage,
// sessions, allocations, devices), model (load a small safetensors model,
// read a weight's bytes, unload) and session (allocate in a session, close
// it, the allocation is gone). --mix gives weights as
// "rw=4,transfer=2,...": names from this list, each once, whole numbers in
// [0, 1000], at least one above zero; names left out weigh 0 when --mix is
// given. Anything else is refused with the reason.
//
// Thread safety: values and pure functions; a MixPicker belongs to one client.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace memd::load {

enum class Scenario { rw, transfer, move, copy, exportable, status, model, session };
inline constexpr std::size_t kScenarios = 8;
const char* scenario_name(Scenario s);

struct SoakMix {
  std::array<std::uint32_t, kScenarios> weight{};  // by Scenario
  std::uint64_t total() const {
    std::uint64_t t = 0;
    for (auto w : weight) t += w;
    return t;
  }
};

// The default mix: every scenario, reads and writes the most.
SoakMix default_soak_mix();
// Parses --mix; on refusal returns nullopt and says why.
std::optional<SoakMix> parse_soak_mix(std::string_view text, std::string& why);
// "rw=4,transfer=2,…" (every scenario, in enum order).
std::string format_soak_mix(const SoakMix& mix);

// splitmix64: a client's stream of choices from its seed.
class SoakRandom {
 public:
  explicit SoakRandom(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();
  // Uniform in [0, n) (n > 0).
  std::uint64_t below(std::uint64_t n) { return next() % n; }

 private:
  std::uint64_t state_;
};

// The scenario a draw r in [0, mix.total()) falls on.
Scenario pick_scenario(const SoakMix& mix, std::uint64_t r);

}  // namespace memd::load
