// load/daemon.hpp — the memd daemon under load: one memd-load spawned, or one
// it attached to.
//
// A spawned daemon runs `PATH --no-cuda --host-device SIZE [--host-device
// SIZE…] [ENGINE ARGS] serve --listen 127.0.0.1:0 ARGS...` (the soak gives
// two host devices and a --model-root) with stdin from /dev/null, its banner line read from
// stdout for the port (the rest of stdout is drained so it never blocks),
// its stderr inherited or sent to a file, the descriptor limit it inherits
// from memd-load (raised before the fork), and PR_SET_PDEATHSIG so it dies
// with memd-load. An attached daemon is only watched, never signalled.
//
// Thread safety: exited() and kill_now() may be called from the watchdog
// thread while the owner waits; stop() from one thread, once.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace memd::load {

class Daemon {
 public:
  // Starts the daemon and waits up to `startup` for its banner; on failure
  // returns null and says why in `why`.
  static std::unique_ptr<Daemon> spawn(const std::string& path, const std::vector<std::uint64_t>& host_devices,
                                       const std::vector<std::string>& engine_args,
                                       const std::vector<std::string>& serve_args, const std::string& log_path,
                                       std::chrono::milliseconds startup, std::string& why);
  static std::unique_ptr<Daemon> attach(pid_t pid, int port);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  bool spawned() const { return spawned_; }
  // The process has exited (a spawned one is not reaped by this call), or,
  // attached, /proc/PID is gone.
  bool exited() const;
  // SIGKILL, spawned daemons only (the watchdog's last resort).
  void kill_now();
  // SIGTERM, up to `grace` for it to exit, then SIGKILL; reaps. Returns how
  // it ended ("exit 0", "signal 9 (killed by memd-load)"), or "attached".
  std::string stop(std::chrono::milliseconds grace);

 private:
  Daemon() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  bool spawned_ = false;
  int stdout_fd_ = -1;
  std::thread drain_;
  std::atomic<bool> killed_{false};
  std::atomic<bool> reaped_{false};
  std::string ended_;
};

}  // namespace memd::load
