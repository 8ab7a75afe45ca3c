// load/rate_run.hpp — memd-load --mode rate (issue 17, item 5): does one
// owner's flood leave another owner's latency alone?
//
// Two phases of --duration each, in one run against one daemon so the
// baseline is this run's: quiet (the status probe alone: GET
// /api/memory/status as owner memd-load every --probe-interval, kept alive
// and fresh, status_probe.hpp), then flooded (the same probe while
// --flooders clients of owner memd-load-flood send GET /api/memory/status
// back to back on kept-alive connections, ignoring Retry-After). With the
// daemon's per-owner rate limit on (--rate-limit-requests R
// --rate-limit-loopback; --flood-limit spawns it so) the flood should get
// about R answers a second and 429 rate_limited for the rest, and the
// probe's p99 should stay near its quiet p99. Any other answer to the flood
// (or any probe failure, a 429 included: the probe is under the limit) is an
// error.
//
// Thread safety: run_rate runs the flooders on the calling thread and each
// probe on its own, all joined before it returns.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "latency.hpp"
#include "load_options.hpp"
#include "run_state.hpp"

namespace memd::load {

class Daemon;

struct RatePhase {
  double seconds = 0;
  LatencySummary keep_alive, fresh;  // the probe's
  std::uint64_t flood_ok = 0, flood_limited = 0;  // the flood's 200s and 429 rate_limited
  double flood_accepted_per_s = 0, flood_sent_per_s = 0;
  // Where the time went: the daemon's and memd-load's CPU over the phase (%
  // of one core), and the machine's load average at its end.
  double daemon_cpu_percent = -1, client_cpu_percent = -1, loadavg = -1;
};

struct RateReport {
  std::string daemon, daemon_end, stop_reason;
  std::uint64_t flooders = 0;
  double limit = 0;  // the configured --rate-limit-requests (0: not known, attached)
  RatePhase quiet, flooded;
  double p50_ratio = 0, p99_ratio = 0;  // flooded ÷ quiet, kept alive
  double fresh_p99_ratio = 0;
  ErrorTally errors;
  std::vector<std::string> failures;
  bool ok() const { return failures.empty(); }
};

RateReport run_rate(const LoadOptions& options, Daemon& daemon);
std::string rate_report_text(const LoadOptions& options, const RateReport& report);
std::string rate_report_json(const LoadOptions& options, const RateReport& report);

}  // namespace memd::load
