// load/run_state.hpp — what the parts of a run share: why it stopped, the
// tally of errors by kind, and how a coroutine that threw is counted.
//
// StopSignal is set once, by whichever part sees a reason first (deadline,
// watchdog, daemon gone, set-up failed); every part polls it. ErrorTally
// keys are "<part>.<kind>" (cycle.timeout, slow.closed, idle.status_503);
// kinds ending in "timeout" are also reported as timeouts.
//
// Thread safety: StopSignal is safe from any thread. An ErrorTally belongs to
// one thread (the bulk client, the probe); tallies are merged after joining.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace memd::load {

class StopSignal {
 public:
  // The first reason wins; later ones are ignored. Returns true for the first.
  bool request(std::string reason, bool failure = true) {
    std::lock_guard lock(mutex_);
    if (stopped_.load()) return false;
    reason_ = std::move(reason);
    failure_ = failure;
    stopped_.store(true);
    return true;
  }
  bool stopped() const { return stopped_.load(std::memory_order_relaxed); }
  std::string reason() const {
    std::lock_guard lock(mutex_);
    return reason_;
  }
  bool failure() const {
    std::lock_guard lock(mutex_);
    return stopped_.load() && failure_;
  }

 private:
  mutable std::mutex mutex_;
  std::atomic<bool> stopped_{false};
  std::string reason_;
  bool failure_ = false;
};

struct ErrorTally {
  std::map<std::string, std::uint64_t> by_kind;
  std::vector<std::string> examples;  // the first few messages, for people

  void add(const std::string& key, const std::string& detail = {}) {
    ++by_kind[key];
    if (examples.size() < 20) examples.push_back(detail.empty() ? key : key + ": " + detail);
  }
  std::uint64_t total() const {
    std::uint64_t n = 0;
    for (const auto& [k, v] : by_kind) n += v;
    return n;
  }
  std::uint64_t timeouts() const {
    std::uint64_t n = 0;
    for (const auto& [k, v] : by_kind)
      if (k.ends_with("timeout")) n += v;
    return n;
  }
  void merge(const ErrorTally& other) {
    for (const auto& [k, v] : other.by_kind) by_kind[k] += v;
    for (const auto& e : other.examples)
      if (examples.size() < 20) examples.push_back(e);
  }
};

// The completion handler for a run's asio::co_spawn: a coroutine that threw
// counts as an "internal" error with its message, and with `stop` the run
// stops too. Runs on the io_context's thread, the tally's owner.
inline auto count_throw(ErrorTally& errors, StopSignal* stop = nullptr) {
  return [&errors, stop](const std::exception_ptr& e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      errors.add("internal", x.what());
    } catch (...) {
      errors.add("internal", "unknown exception");
    }
    if (stop) stop->request("an internal error (see errors)");
  };
}

}  // namespace memd::load
