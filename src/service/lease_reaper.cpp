// LeaseReaper: a periodic sweep on its own thread, stopped by a flag under a mutex.
#include "service/lease_reaper.hpp"

#include <spdlog/spdlog.h>

namespace memd {

LeaseReaper::LeaseReaper(Sweep sweep, std::chrono::milliseconds interval, LeaseClock clock)
    : sweep_(std::move(sweep)),
      interval_(interval.count() > 0 ? interval : std::chrono::milliseconds(1000)),
      clock_(clock ? std::move(clock) : LeaseClock([] { return std::chrono::steady_clock::now(); })),
      thread_([this] { run(); }) {}

LeaseReaper::~LeaseReaper() { stop(); }

void LeaseReaper::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void LeaseReaper::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  // Two threads may stop at once: one joins, the other waits for it here.
  std::lock_guard join(join_mu_);
  if (thread_.joinable()) thread_.join();
}

std::uint64_t LeaseReaper::sweeps() const {
  std::lock_guard lock(mu_);
  return sweeps_;
}

void LeaseReaper::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, interval_, [this] { return stopping_ || woken_; });
    if (stopping_) break;
    woken_ = false;
    lock.unlock();
    // The sweep releases memory: a failure there is logged and the next
    // sweep tries again, the reaper never dies of it.
    try {
      sweep_(clock_());
    } catch (const std::exception& e) {
      spdlog::error("lease reaper: sweep failed: {}", e.what());
    }
    lock.lock();
    ++sweeps_;
  }
}

}  // namespace memd
