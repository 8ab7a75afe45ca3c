#include "report.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace memd::load {
namespace {

std::string signed_size(std::int64_t bytes) {
  return bytes < 0 ? "-" + format_size(static_cast<std::uint64_t>(-bytes)) : format_size(static_cast<std::uint64_t>(bytes));
}

nlohmann::json latency_json(const LatencySummary& s) {
  return {{"count", s.count}, {"p50Ms", s.p50_ms}, {"p99Ms", s.p99_ms}, {"maxMs", s.max_ms}, {"meanMs", s.mean_ms}};
}

}  // namespace

std::string report_text(const LoadOptions& o, const RunReport& r) {
  std::string out;
  auto line = [&out](const std::string& s) { out += s + "\n"; };
  line(fmt::format("memd-load: {} — {}", r.daemon, r.ok() ? "PASS" : "FAIL"));
  if (!r.stop_reason.empty()) line("  stopped early: " + r.stop_reason);
  if (!r.daemon_end.empty()) line("  daemon ended: " + r.daemon_end);
  line(fmt::format("  phases: set-up {:.1f} s, idle ramp {:.1f} s, slow ramp {:.1f} s, load {:.1f} s, total {:.1f} s",
                   r.setup_s, r.idle_ramp_s, r.slow_ramp_s, r.load_s, r.total_s));
  line(fmt::format("  idle connections: {} wanted, {} opened, {} failed, {} not attempted, {} closed by the server, "
                   "reuse at the end {} ok / {} failed",
                   o.idle, r.idle_opened, r.idle_failed, r.idle_not_attempted, r.idle_closed_by_server,
                   r.idle_reuse_ok, r.idle_reuse_failed));
  line(fmt::format("  slow readers: {} wanted, {} opened, {} failed, {} not attempted, {} broken, {} still reading "
                   "at the load's end, {} read and checked ({} bodies completed)",
                   o.slow, r.slow_opened, r.slow_failed, r.slow_not_attempted, r.slow_broken,
                   r.slow_open_at_load_end, format_size(r.slow_bytes), r.slow_completed));
  line(fmt::format("  cycles: {} by {} clients ({:.1f}/s), {} moved, {} reconnects", r.cycles, o.clients,
                   r.load_s > 0 ? static_cast<double>(r.cycles) / r.load_s : 0.0, format_size(r.cycle_bytes),
                   r.cycle_reconnects));
  line(fmt::format("  errors: {} ({} timeouts); mismatches: {}", r.errors.total(), r.errors.timeouts(),
                   r.mismatches));
  for (const auto& [kind, n] : r.errors.by_kind) line(fmt::format("    {:<34} {}", kind, n));
  for (std::size_t i = 0; i < r.errors.examples.size() && i < 5; ++i) line("    e.g. " + r.errors.examples[i]);
  line(fmt::format("  GET /api/memory/status, kept alive: n {} p50 {:.3f} ms p99 {:.3f} ms max {:.3f} ms",
                   r.keep_alive.count, r.keep_alive.p50_ms, r.keep_alive.p99_ms, r.keep_alive.max_ms));
  line(fmt::format("  GET /api/memory/status, fresh conn: n {} p50 {:.3f} ms p99 {:.3f} ms max {:.3f} ms",
                   r.fresh.count, r.fresh.p50_ms, r.fresh.p99_ms, r.fresh.max_ms));
  line(fmt::format("  kept-alive / fresh: p50 {:.3g}, p99 {:.3g} ({} probe reconnects)", r.ratio_p50, r.ratio_p99,
                   r.probe_reconnects));
  line(fmt::format("  daemon RSS: peak {} (limit {}); after set-up {}, after idle ramp {}, after slow ramp {}, "
                   "at load end {}",
                   format_size(r.peak_rss), format_size(r.rss_limit), format_size(r.rss_after_setup),
                   format_size(r.rss_after_idle), format_size(r.rss_after_slow), format_size(r.rss_at_load_end)));
  line(fmt::format("  allocated: {} after set-up, {} most seen; peak RSS - allocated {}; largest sampled "
                   "RSS - allocated {}",
                   format_size(r.allocated_after_setup), format_size(r.allocated_max),
                   signed_size(r.peak_rss_minus_allocated), signed_size(r.sampled_rss_minus_allocated)));
  if (r.sse) {
    const SseSummary& e = *r.sse;
    line(fmt::format("  event subscribers: {} wanted, {} connected ({:.1f} s), {} failed{}; RSS after them {}",
                     e.wanted, e.connected, r.sse_ramp_s, e.connect_failed,
                     e.refused_status ? fmt::format(" (first refusal: status {})", e.refused_status) : "",
                     format_size(r.rss_after_sse)));
    line(fmt::format("  event script: {} of {} refused allocations sent ({} refused with quota_exceeded); "
                     "per subscriber {}..{} of {} events; {} complete in order, {} short, {} out of order, "
                     "{} ended early, {} lost, {} other events",
                     r.script_sent, o.sse_script, r.script_refused, e.received_min, e.received_max, e.expected,
                     e.complete, e.missing, e.misordered, e.broken, e.lost, e.other_events));
    line(fmt::format("  event delivery (request sent → event read): n {} p50 {:.3f} ms p99 {:.3f} ms max {:.3f} ms",
                     e.delivery.count, e.delivery.p50_ms, e.delivery.p99_ms, e.delivery.max_ms));
    line(fmt::format("  status p99 with {} subscribers open: {:.3f} ms kept alive, {:.3f} ms fresh", e.connected,
                     r.keep_alive.p99_ms, r.fresh.p99_ms));
    for (std::size_t i = 0; i < e.problems.size() && i < 5; ++i) line("    e.g. " + e.problems[i]);
  }
  for (const auto& f : r.failures) line("  FAIL: " + f);
  return out;
}

std::string report_json(const LoadOptions& o, const RunReport& r) {
  nlohmann::json j;
  j["ok"] = r.ok();
  j["failures"] = r.failures;
  j["daemon"] = r.daemon;
  j["daemonEnd"] = r.daemon_end;
  j["stopReason"] = r.stop_reason;
  j["watchdogTripped"] = r.watchdog_tripped;
  j["config"] = {{"idle", o.idle},
                 {"slow", o.slow},
                 {"clients", o.clients},
                 {"bigCount", o.big_count},
                 {"bigSizeBytes", o.big_size},
                 {"cycleSizeBytes", o.cycle_size},
                 {"slowRateBytesPerSecond", o.slow_rate},
                 {"slowRcvbufBytes", o.slow_rcvbuf},
                 {"durationMs", o.duration.count()},
                 {"rampTimeoutMs", o.ramp_timeout.count()},
                 {"requestTimeoutMs", o.request_timeout.count()},
                 {"probeIntervalMs", o.probe_interval.count()},
                 {"device", o.device},
                 {"sseSubscribers", o.sse_subscribers},
                 {"sseScript", o.sse_script},
                 {"sseKinds", o.sse_kinds}};
  j["phasesSeconds"] = {{"setup", r.setup_s}, {"idleRamp", r.idle_ramp_s}, {"slowRamp", r.slow_ramp_s},
                        {"load", r.load_s}, {"total", r.total_s}};
  j["idle"] = {{"opened", r.idle_opened},         {"failed", r.idle_failed},
               {"notAttempted", r.idle_not_attempted}, {"closedByServer", r.idle_closed_by_server},
               {"reuseOk", r.idle_reuse_ok},      {"reuseFailed", r.idle_reuse_failed}};
  j["slow"] = {{"opened", r.slow_opened},         {"failed", r.slow_failed},
               {"notAttempted", r.slow_not_attempted}, {"broken", r.slow_broken},
               {"readingAtLoadEnd", r.slow_open_at_load_end}, {"bytesChecked", r.slow_bytes},
               {"bodiesCompleted", r.slow_completed}};
  j["cycles"] = {{"completed", r.cycles}, {"bytes", r.cycle_bytes}, {"reconnects", r.cycle_reconnects}};
  j["errors"] = r.errors.by_kind;
  j["errorExamples"] = r.errors.examples;
  j["errorsTotal"] = r.errors.total();
  j["timeouts"] = r.errors.timeouts();
  j["mismatches"] = r.mismatches;
  j["statusLatency"] = {{"keepAlive", latency_json(r.keep_alive)},
                        {"fresh", latency_json(r.fresh)},
                        {"keepAliveOverFreshP50", r.ratio_p50},
                        {"keepAliveOverFreshP99", r.ratio_p99},
                        {"probeReconnects", r.probe_reconnects}};
  j["memory"] = {{"rssLimitBytes", r.rss_limit},
                 {"peakRssBytes", r.peak_rss},
                 {"rssAfterSetupBytes", r.rss_after_setup},
                 {"rssAfterIdleRampBytes", r.rss_after_idle},
                 {"rssAfterSlowRampBytes", r.rss_after_slow},
                 {"rssAtLoadEndBytes", r.rss_at_load_end},
                 {"allocatedAfterSetupBytes", r.allocated_after_setup},
                 {"allocatedMaxBytes", r.allocated_max},
                 {"peakRssMinusAllocatedBytes", r.peak_rss_minus_allocated},
                 {"sampledMaxRssMinusAllocatedBytes", r.sampled_rss_minus_allocated},
                 {"minMemAvailableBytes", r.min_mem_available}};
  if (r.sse) {
    const SseSummary& e = *r.sse;
    j["sse"] = {{"wanted", e.wanted},
                {"connected", e.connected},
                {"connectFailed", e.connect_failed},
                {"refusedStatus", e.refused_status},
                {"unavailable", e.refused_status == 404},
                {"rampSeconds", r.sse_ramp_s},
                {"rssAfterBytes", r.rss_after_sse},
                {"script", {{"events", o.sse_script}, {"sent", r.script_sent}, {"refused", r.script_refused}}},
                {"expectedPerSubscriber", e.expected},
                {"receivedMin", e.received_min},
                {"receivedMax", e.received_max},
                {"complete", e.complete},
                {"missing", e.missing},
                {"misordered", e.misordered},
                {"broken", e.broken},
                {"withProblems", e.with_problems},
                {"lostEvents", e.lost},
                {"otherEvents", e.other_events},
                {"deliveryLatency", latency_json(e.delivery)},
                {"problems", e.problems},
                {"ok", e.ok()}};
  }
  return j.dump(2) + "\n";
}

}  // namespace memd::load
