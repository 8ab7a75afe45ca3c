// load/watchdog.hpp — stops a run before it hurts the machine.
//
// A thread reads the daemon's /proc/PID/status every 20 ms and the machine's
// MemAvailable every 100 ms. When the daemon's RSS passes --rss-limit, or
// MemAvailable falls under --min-available, it stops the run and kills a
// spawned daemon at once (SIGKILL: a daemon buffering whole bodies grows by
// hundreds of MiB between two reads). It also notices a daemon that exited.
// It keeps the highest RSS and the last VmHWM it read, so the report has the
// peak even when the daemon is gone.
//
// Thread safety: start/finish from the owner's thread; the figures are
// atomics, read at any time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include "daemon.hpp"
#include "run_state.hpp"

namespace memd::load {

class Watchdog {
 public:
  Watchdog(Daemon& daemon, StopSignal& stop, std::uint64_t rss_limit, std::uint64_t min_available)
      : daemon_(daemon), stop_(stop), rss_limit_(rss_limit), min_available_(min_available) {}
  ~Watchdog() { finish(); }

  void start();
  // Stops watching (before memd-load stops the daemon itself).
  void finish();

  std::uint64_t max_rss() const { return max_rss_.load(); }
  std::uint64_t last_hwm() const { return hwm_.load(); }
  std::uint64_t last_rss() const { return rss_.load(); }
  std::uint64_t min_available_seen() const { return min_avail_seen_.load(); }
  bool tripped() const { return tripped_.load(); }

 private:
  void loop();

  Daemon& daemon_;
  StopSignal& stop_;
  std::uint64_t rss_limit_, min_available_;
  std::thread thread_;
  std::atomic<bool> done_{false};
  std::atomic<bool> tripped_{false};
  std::atomic<std::uint64_t> max_rss_{0}, hwm_{0}, rss_{0}, min_avail_seen_{~std::uint64_t{0}};
};

}  // namespace memd::load
