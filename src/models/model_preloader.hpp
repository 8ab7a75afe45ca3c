// models/model_preloader.hpp — brings the model the usage predictor expects
// next up a tier before it is asked for (issue 15, item 7).
//
// After each use of a model (a load, a restore, a hit) the model manager
// nudges the preloader; its one thread asks the predictor
// (models/usage_predictor.hpp) which model comes next. When that model has
// been loaded before (the manager knows its files and device), now sits in
// a lower tier, and its probability reaches ModelOptions::preload_threshold,
// it is brought up:
//   * into VRAM, when its device has idle room for the missing components:
//     the device stays under ModelOptions::preload_vram_ceiling of its
//     capacity after the preload, so a guess never pushes the device to the
//     pressure policy's High level (80 %) where the policy would start
//     reclaiming — which would be evicting for a guess by the back door;
//   * else into the RAM tier (from Disk), when the RAM cache has room under
//     its limit as it is (nothing of it dropped).
// Never by evicting anything: room is checked first, and the allocations a
// preload makes do not reach the reclaim callback (on_preload_thread()), so
// a shortfall that appears meanwhile fails the preload rather than moving
// another model down.
//
// A preload is the model's job (Model::job) with Model::preloading set, so
// everything that respects a running job respects it: the eviction planner
// keeps it, a second load does not start. A real load that arrives during a
// preload takes it over (the preload finishes, then the load's own job runs
// with what it brought up); an unload cancels it and waits for it. One
// preload at a time: it is the preloader thread's work.
//
// Hit rate: the predictor counts the preload when it is claimed (with the
// job, under the manager's mutex, so a load that takes it over is its hit);
// the model's next use is a hit, its eviction (from VRAM, or from the RAM
// tier) before any use, a failed or cancelled preload, or an unload are
// misses.
//
// Thread safety: nudge() and stop() are thread-safe. The thread takes the
// manager's mutex only briefly, never while holding its own, and never
// across an allocation or a copy (the manager's rule).
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "memd/error.hpp"

namespace memd {

class ModelManager;

class ModelPreloader {
 public:
  explicit ModelPreloader(ModelManager& models);
  ~ModelPreloader();
  ModelPreloader(const ModelPreloader&) = delete;
  ModelPreloader& operator=(const ModelPreloader&) = delete;

  // A model was used: look again at what comes next (soon, on the thread).
  void nudge();
  // Ends the thread after its current preload (which the manager cancels
  // first when it shuts down); later nudges do nothing. Idempotent.
  void stop();
  // Returns once no nudge is pending and no look or preload is running
  // (tests: what a use led to has happened), or after stop().
  void wait_idle();
  // Tests: called on the preloader's thread once a preload of `model` is
  // claimed (its job set) and before anything moves, so a test can act in
  // the middle of a preload. Null: none.
  void set_claimed_hook(std::function<void(const std::string& model)> hook);
  // Whether the calling thread is making a preload's allocations: the
  // manager's reclaim callback evicts nothing for them.
  static bool on_preload_thread() noexcept;

 private:
  enum class Target { VRAM, RAM };
  struct Plan;
  void run();
  // One look: predict, pick (and claim), preload, finish.
  void consider();
  std::optional<Plan> pick();
  Result<void> preload(const Plan& plan);
  Result<void> preload_ram(const Plan& plan);

  ModelManager& models_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  bool nudged_ = false;
  bool working_ = false;
  std::function<void(const std::string&)> claimed_hook_;
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace memd
