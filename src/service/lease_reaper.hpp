// service/lease_reaper.hpp — the thread that ends lapsed leases.
//
// A LeaseReaper calls its sweep with the clock's time every `interval`, on a
// thread of its own, until stopped; wake() asks for a sweep now. It knows
// nothing of sessions: MemoryService hands it a sweep that takes lapsed
// sessions out of the table and releases their allocations. The clock is
// injected, so a test can move time and wake() the reaper instead of
// sleeping through a lease.
//
// Thread safety: wake(), stop() and sweeps() may be called from any thread.
// stop() (also run by the destructor) returns once the thread has joined, so
// no sweep runs after it; the sweep must not call stop().
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "service/session_table.hpp"

namespace memd {

using LeaseClock = std::function<SteadyTime()>;

class LeaseReaper {
 public:
  using Sweep = std::function<void(SteadyTime now)>;

  // interval must be positive; a null clock means std::chrono::steady_clock.
  LeaseReaper(Sweep sweep, std::chrono::milliseconds interval, LeaseClock clock = {});
  ~LeaseReaper();
  LeaseReaper(const LeaseReaper&) = delete;
  LeaseReaper& operator=(const LeaseReaper&) = delete;

  // Runs a sweep as soon as the thread is free.
  void wake();
  // Stops and joins the thread; idempotent.
  void stop();
  // Sweeps completed so far.
  std::uint64_t sweeps() const;

 private:
  void run();

  const Sweep sweep_;
  const std::chrono::milliseconds interval_;
  const LeaseClock clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool woken_ = false;
  std::uint64_t sweeps_ = 0;
  std::mutex join_mu_;
  std::thread thread_;  // last: started once everything above is built
};

}  // namespace memd
