// load/load_run.hpp — one run of memd-load against one daemon, and what it
// found.
//
// Phases, each bounded: set-up (the big allocations, written with the
// pattern in pieces), the idle ramp (N connections, one GET /healthz each,
// then a pending read that notices a server close), the slow ramp (M
// readers: GET …/data of a big allocation from an offset of its own, read at
// --slow-rate through a small SO_RCVBUF and checked against the pattern),
// the event subscribers' ramp (--sse-subscribers: each connected, its
// response header read), the load (C cycle clients and the status probe for
// --duration; with subscribers, the event script runs inside it and the load
// goes on until every subscriber has the script or a grace passed), the reuse
// check (every idle connection still open asks /healthz once more), then
// everything is closed and the big allocations freed. A stop (deadline,
// watchdog, daemon gone) skips to closing; errors seen after it are not
// counted, since the stop is the finding.
//
// Thread safety: run_load runs the bulk client on the calling thread, plus
// the probe's and the watchdog's threads, all joined before it returns.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "latency.hpp"
#include "load_options.hpp"
#include "run_state.hpp"
#include "sse_script.hpp"

namespace memd::load {

class Daemon;

struct RunReport {
  std::string daemon;       // "spawned pid 123 on port 4567" / "attached pid 123 on port 4567"
  std::string stop_reason;  // empty: ran to the end
  bool watchdog_tripped = false;
  std::string daemon_end;  // how a spawned daemon ended

  double setup_s = 0, idle_ramp_s = 0, slow_ramp_s = 0, load_s = 0, total_s = 0;

  std::uint64_t idle_opened = 0, idle_failed = 0, idle_not_attempted = 0, idle_closed_by_server = 0,
                idle_reuse_ok = 0, idle_reuse_failed = 0;
  std::uint64_t slow_opened = 0, slow_failed = 0, slow_not_attempted = 0, slow_broken = 0, slow_completed = 0,
                slow_bytes = 0, slow_open_at_load_end = 0;
  std::uint64_t cycles = 0, cycle_bytes = 0, cycle_reconnects = 0;
  std::uint64_t mismatches = 0;

  ErrorTally errors;  // every part's, the probe's included
  LatencySummary keep_alive, fresh;
  double ratio_p50 = 0, ratio_p99 = 0;  // keep-alive ÷ fresh
  std::uint64_t probe_reconnects = 0;

  std::uint64_t rss_limit = 0;
  std::uint64_t peak_rss = 0;  // the daemon's VmHWM (last read), or the highest VmRSS read if larger
  std::uint64_t rss_after_setup = 0, rss_after_idle = 0, rss_after_slow = 0, rss_at_load_end = 0;
  std::uint64_t allocated_after_setup = 0;  // the big allocations, as the daemon counts them
  std::uint64_t allocated_max = 0;          // largest allocatedBytes the probe saw
  std::int64_t peak_rss_minus_allocated = 0;     // peak_rss - allocated_after_setup
  std::int64_t sampled_rss_minus_allocated = 0;  // largest VmRSS - allocatedBytes of one probe sample
  std::uint64_t min_mem_available = 0;

  // Event subscribers and the script (with --sse-subscribers).
  std::optional<SseSummary> sse;
  double sse_ramp_s = 0;
  std::uint64_t rss_after_sse = 0;
  std::uint64_t script_sent = 0, script_refused = 0;  // refused with quota_exceeded, as meant

  std::vector<std::string> failures;  // why the run failed; empty: passed
  bool ok() const { return failures.empty(); }
};

RunReport run_load(const LoadOptions& options, Daemon& daemon);

}  // namespace memd::load
