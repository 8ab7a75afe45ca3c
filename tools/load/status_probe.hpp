// load/status_probe.hpp — GET /api/memory/status latency, kept-alive and fresh.
//
// Its own thread and io_context, so the probe's timings are not delayed
// behind the bulk client's thousands of sockets. Every --probe-interval it
// asks once on a kept-alive connection (the time from writing the request to
// the answer's last byte) and once on a new connection (from connect() to
// the last byte; it asks the server to close and waits for that close, so
// TIME_WAIT stays on the server's side). A kept-alive connection the server
// closed is reopened outside the timing. Each kept-alive answer is also a
// memory sample: the daemon's VmRSS read right after it, minus the
// allocated bytes it reports.
//
// Thread safety: start/stop from the owner's thread; results read after stop.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "http_client.hpp"
#include "run_state.hpp"

namespace memd::load {

struct ProbeResults {
  std::vector<std::int64_t> keep_alive_ns, fresh_ns;
  ErrorTally errors;
  std::uint64_t reconnects = 0;             // kept-alive connections the server closed
  std::uint64_t allocated_max = 0;          // largest allocatedBytes seen
  std::int64_t rss_minus_allocated_max = 0;  // largest VmRSS - allocatedBytes of one sample
  std::uint64_t samples = 0;
};

class StatusProbe {
 public:
  StatusProbe(tcp::endpoint endpoint, Millis interval, Millis timeout, int pid)
      : endpoint_(endpoint), interval_(interval), timeout_(timeout), pid_(pid) {}
  ~StatusProbe() { stop(); }
  void start();
  void stop();
  const ProbeResults& results() const { return results_; }

 private:
  asio::awaitable<void> run();
  void sample_memory(const std::string& body);

  tcp::endpoint endpoint_;
  Millis interval_, timeout_;
  int pid_;
  asio::io_context ioc_{1};
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  ProbeResults results_;
  // Touched only on the probe's thread (stop() posts there).
  Connection* kept_ = nullptr;
  Connection* fresh_ = nullptr;
  asio::steady_timer* timer_ = nullptr;
};

}  // namespace memd::load
