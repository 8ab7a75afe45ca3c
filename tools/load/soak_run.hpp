// load/soak_run.hpp — memd-load --mode soak (issue 17, item 2): N clients,
// each its own owner, loop a seeded weighted mix of whole scenarios
// (soak_mix.hpp) against one daemon for --duration, checking every answer's
// status and body and every byte read back; K event subscribers stay
// connected the whole run and must see the event script — refused
// allocations of owner memd-load-script spread over the run, one
// limit_reached each — in order with none missing (sse_subscribers.hpp).
// Then, with every client stopped, the daemon must be back where it
// started: live allocations, allocated bytes (devices and pools), requested
// bytes and allocations by usage, open sessions, pending or running
// transfers, loaded models. Its RSS is read at the start, every second, and
// at the end.
//
// The spawned daemon (main.cpp) gets two host devices and a --model-root of
// a fresh temporary folder where the soak writes two small safetensors
// files; an attached daemon needs --model-root of its own for the model
// scenario (give it weight 0 otherwise). Clients on one io_context thread;
// the subscribers on theirs.
//
// Thread safety: run_soak runs on the calling thread (plus the subscribers'),
// all joined before it returns.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "load_options.hpp"
#include "run_state.hpp"
#include "soak_holdings.hpp"
#include "sse_script.hpp"

namespace memd::load {

class Daemon;

struct SoakReport {
  std::string daemon;
  std::string daemon_end;
  std::string stop_reason;
  std::uint64_t clients = 0, subscribers = 0;
  std::string mix;
  std::uint64_t seed = 0;
  std::vector<std::string> places;  // "host:0/VRAM", …: where allocations went
  double duration_s = 0, total_s = 0;
  std::map<std::string, std::uint64_t> ops;        // requests by operation, answered as expected
  std::map<std::string, std::uint64_t> scenarios;  // scenarios finished whole, by name
  std::uint64_t requests = 0, bytes_checked = 0, mismatches = 0;
  ErrorTally errors;
  std::optional<DaemonHoldings> start, end;
  std::vector<std::string> leaks;  // "allocations 12 → 13", empty: none
  std::int64_t leaked_bytes = 0;   // end - start allocated bytes
  std::vector<std::string> leftovers;  // with a leak: the first allocations still there, described
  std::uint64_t rss_start = 0, rss_peak = 0, rss_end = 0;
  std::optional<SseSummary> sse;
  std::uint64_t script_sent = 0, script_refused = 0;
  std::vector<std::string> failures;
  bool ok() const { return failures.empty(); }
};

SoakReport run_soak(const LoadOptions& options, Daemon& daemon, const std::string& model_root);

std::string soak_report_text(const LoadOptions& options, const SoakReport& report);
std::string soak_report_json(const LoadOptions& options, const SoakReport& report);

}  // namespace memd::load
