// models/usage_predictor.hpp — which model is likely wanted next (issue 15,
// item 7), from the history of uses.
//
// Three signals, each a distribution over the models seen, mixed:
//   * succession (weight 0.6): which models followed the one used last — a
//     first-order chain over uses (an SDXL base, then its refiner; a
//     workflow that alternates two checkpoints);
//   * frequency (0.25): uses, decayed with a half-life (30 min by default),
//     so a model used all morning outranks one used once;
//   * recency (0.15): 1 / (1 + minutes since the last use), normalised.
// When a signal knows nothing (no successor seen yet) its weight goes to the
// others. The result is a probability per model; reuse_probability() is what
// the eviction planner weighs a victim by (core/eviction_plan.hpp).
//
// Preloading on a guess never evicts (the model manager only preloads into
// idle room); hits are counted here: a preload is a hit when the model is
// used before it is evicted or replaced by another preload, a miss
// otherwise. The hit rate goes to analytics.
//
// Bounded: at most max_models models are remembered (the least recently used
// is forgotten, with its successions), each with at most max_successors
// successors.
//
// What survives a restart (history()/restore(), kept by the state directory:
// service/state_store.hpp): each model's decayed use count, when it was
// last used and its successors, and the model used last. Times are on the
// wall clock there, since the steady clock starts again at boot. The
// preload counts and the models' preloaded marks are not kept (a preload
// does not survive a restart either).
//
// Thread safety: thread-safe (one mutex; calls are rare: a model use, a
// load, an eviction).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace memd {

struct PredictorOptions {
  std::chrono::seconds frequency_half_life{1800};
  std::size_t max_models = 1024;
  std::size_t max_successors = 32;
};

struct ModelPrediction {
  std::string model;
  double probability = 0;
};

struct PredictorStats {
  std::uint64_t uses = 0;
  std::uint64_t preloads = 0;
  std::uint64_t hits = 0;    // preloaded, then used
  std::uint64_t misses = 0;  // preloaded, then evicted or dropped unused
  double hit_rate() const { return hits + misses == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(hits + misses); }
};

// The history, with times on the wall clock.
struct PredictorHistory {
  struct Model {
    std::string name;
    double frequency = 0;  // decayed uses as of `updated`
    std::chrono::system_clock::time_point updated{};
    std::chrono::system_clock::time_point last_use{};
    std::map<std::string, std::uint64_t, std::less<>> successors;  // model used next → times
    bool operator==(const Model&) const = default;
  };
  std::vector<Model> models;  // by name
  std::optional<std::string> last;
  bool operator==(const PredictorHistory&) const = default;
};

class UsagePredictor {
 public:
  using Clock = std::chrono::steady_clock;
  explicit UsagePredictor(PredictorOptions options = {}) : options_(options) {}

  // A model was used (loaded on request, or its weights asked for).
  void record_use(std::string_view model, Clock::time_point now);
  // The model manager preloaded `model` on a guess / evicted it / forgot it.
  void record_preload(std::string_view model);
  void record_eviction(std::string_view model);
  // A model unloaded for good: forgotten, with its successions.
  void forget(std::string_view model);

  // Every model remembered, most likely first (probabilities sum to 1 when
  // any model is known); at most `limit`.
  std::vector<ModelPrediction> predict(Clock::time_point now, std::size_t limit = 8) const;
  // The probability that `model` is the next one used (0 when unknown).
  double reuse_probability(std::string_view model, Clock::time_point now) const;

  PredictorStats stats() const;
  std::optional<std::string> last_used() const;

  // The history now, its steady times moved to the wall clock (`now` and
  // `wall_now` being the same instant on the two clocks).
  PredictorHistory history(Clock::time_point now, std::chrono::system_clock::time_point wall_now) const;
  // Replaces the history (counts and preloaded marks are left alone). Times
  // after `wall_now` count as now; within the bounds of the options (the
  // most recently used models, each one's most frequent successors);
  // successors and `last` naming a model not in the history are dropped.
  void restore(const PredictorHistory& history, Clock::time_point now,
               std::chrono::system_clock::time_point wall_now);
  // Changes whenever history() would answer something else.
  std::uint64_t generation() const noexcept { return generation_.load(std::memory_order_acquire); }
  // Whether `model` was preloaded and has been neither used nor evicted
  // since (what a model's status reports as `preloaded`).
  bool preloaded(std::string_view model) const;

 private:
  struct Entry {
    double frequency = 0;  // decayed uses, as of `updated`
    Clock::time_point updated{};
    Clock::time_point last_use{};
    std::map<std::string, std::uint64_t, std::less<>> successors;
    bool preloaded = false;  // a preload not yet used or evicted
  };
  std::vector<ModelPrediction> predict_locked(Clock::time_point now) const;
  double decayed(const Entry& e, Clock::time_point now) const;
  void evict_oldest_locked();

  const PredictorOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> models_;
  std::optional<std::string> last_;
  PredictorStats stats_;
  std::atomic<std::uint64_t> generation_{0};
};

}  // namespace memd
