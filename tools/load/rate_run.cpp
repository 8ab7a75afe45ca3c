#include "rate_run.hpp"

#include <sys/resource.h>

#include <cstdio>
#include <memory>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "daemon.hpp"
#include "http_client.hpp"
#include "proc_stats.hpp"
#include "status_probe.hpp"

namespace memd::load {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::string_view kFloodOwner = "memd-load-flood";

double own_cpu_seconds() {
  rusage u{};
  if (::getrusage(RUSAGE_SELF, &u) != 0) return -1;
  auto secs = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return secs(u.ru_utime) + secs(u.ru_stime);
}

double loadavg_1m() {
  double l = -1;
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

class RateRun {
 public:
  RateRun(const LoadOptions& o, Daemon& d)
      : o_(o), daemon_(d), endpoint_(asio::ip::make_address(o.host), static_cast<unsigned short>(d.port())) {}
  RateReport run();

 private:
  asio::awaitable<void> sleep(Millis d) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(d);
    co_await t.async_wait(kTuple);
  }
  asio::awaitable<void> flooder();
  asio::awaitable<void> orchestrate();
  // One phase: a fresh probe for --duration, with or without the flood.
  asio::awaitable<void> phase(RatePhase& out, bool flood);

  const LoadOptions& o_;
  Daemon& daemon_;
  tcp::endpoint endpoint_;
  asio::io_context ioc_{1};
  RateReport report_;
  bool flooding_ = false;
  std::size_t flooders_live_ = 0;
  std::uint64_t ok_ = 0, limited_ = 0, sent_ = 0;
  bool ready_ = false;
};

asio::awaitable<void> RateRun::flooder() {
  Connection conn(co_await asio::this_coro::executor);
  RequestSpec status;
  status.target = "/api/memory/status";
  status.owner = kFloodOwner;
  status.body_limit = 16 << 20;
  while (flooding_ && !daemon_.exited()) {
    if (!conn.is_open()) {
      const Failure f = co_await conn.connect(endpoint_, o_.request_timeout);
      if (f != Failure::none) {
        report_.errors.add(fmt::format("flood.{}", failure_name(f)));
        co_await sleep(Millis(100));
        continue;
      }
    }
    Reply r = co_await conn.request(status, o_.request_timeout);
    ++sent_;
    if (r.failure == Failure::none && r.status == 200) {
      ++ok_;
    } else if (r.failure == Failure::none && r.status == 429 &&
               r.body.find("\"rate_limited\"") != std::string::npos) {
      ++limited_;
    } else if (flooding_) {
      report_.errors.add(r.failure == Failure::none ? fmt::format("flood.status_{}", r.status)
                                                    : fmt::format("flood.{}", failure_name(r.failure)),
                         r.failure == Failure::none ? r.body.substr(0, 200) : r.detail);
    }
  }
  conn.close();
  --flooders_live_;
}

asio::awaitable<void> RateRun::phase(RatePhase& out, bool flood) {
  const std::uint64_t ok0 = ok_, limited0 = limited_, sent0 = sent_;
  if (flood) {
    flooding_ = true;
    flooders_live_ = o_.flooders;
    for (std::uint64_t i = 0; i < o_.flooders; ++i)
      asio::co_spawn(ioc_, flooder(), [this](const std::exception_ptr& e) {
        if (e) report_.errors.add("internal", "a flooder threw");
      });
    co_await sleep(Millis(500));  // the flood under way before the probe starts
  }
  const std::uint64_t ok1 = ok_, sent1 = sent_, limited1 = limited_;
  const auto t0 = Clock::now();
  const auto daemon_cpu0 = read_proc_cpu_seconds(daemon_.pid());
  const double own_cpu0 = own_cpu_seconds();
  StatusProbe probe(endpoint_, o_.probe_interval, o_.request_timeout, daemon_.pid());
  probe.start();
  co_await sleep(o_.duration);
  probe.stop();
  out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (const auto daemon_cpu1 = read_proc_cpu_seconds(daemon_.pid()); daemon_cpu0 && daemon_cpu1)
    out.daemon_cpu_percent = (*daemon_cpu1 - *daemon_cpu0) / out.seconds * 100;
  if (own_cpu0 >= 0) out.client_cpu_percent = (own_cpu_seconds() - own_cpu0) / out.seconds * 100;
  out.loadavg = loadavg_1m();
  // The flood's rates over the probe's window only.
  out.flood_ok = ok_ - ok1;
  out.flood_limited = limited_ - limited1;
  out.flood_accepted_per_s = static_cast<double>(out.flood_ok) / out.seconds;
  out.flood_sent_per_s = static_cast<double>(sent_ - sent1) / out.seconds;
  (void)ok0, (void)limited0, (void)sent0;
  if (flood) {
    flooding_ = false;
    const auto end = Clock::now() + 2 * o_.request_timeout;
    while (flooders_live_ > 0 && Clock::now() < end) co_await sleep(Millis(20));
  }
  const auto& p = probe.results();
  out.keep_alive = summarize(p.keep_alive_ns);
  out.fresh = summarize(p.fresh_ns);
  ErrorTally e = p.errors;
  report_.errors.merge(e);
}

asio::awaitable<void> RateRun::orchestrate() {
  // Healthy first (a spawned daemon may still be starting).
  Connection conn(co_await asio::this_coro::executor);
  RequestSpec health;
  health.target = "/healthz";
  for (int i = 0; i < 300 && !ready_; ++i) {
    if (conn.is_open() || co_await conn.connect(endpoint_, o_.request_timeout) == Failure::none) {
      Reply r = co_await conn.request(health, o_.request_timeout);
      ready_ = r.failure == Failure::none && r.status == 200;
    }
    if (!ready_) co_await sleep(Millis(100));
  }
  conn.close();
  if (!ready_) {
    report_.stop_reason = "the daemon did not answer GET /healthz with 200";
    co_return;
  }
  co_await phase(report_.quiet, false);
  co_await phase(report_.flooded, true);
}

RateReport RateRun::run() {
  report_.daemon = fmt::format("{} pid {} on port {}", daemon_.spawned() ? "spawned" : "attached", daemon_.pid(),
                               daemon_.port());
  report_.flooders = o_.flooders;
  report_.limit = o_.flood_limit;
  asio::co_spawn(ioc_, orchestrate(), [this](const std::exception_ptr& e) {
    if (e) report_.errors.add("internal", "the run threw");
  });
  ioc_.run();
  auto& q = report_.quiet;
  auto& f = report_.flooded;
  if (q.keep_alive.p50_ms > 0) report_.p50_ratio = f.keep_alive.p50_ms / q.keep_alive.p50_ms;
  if (q.keep_alive.p99_ms > 0) report_.p99_ratio = f.keep_alive.p99_ms / q.keep_alive.p99_ms;
  if (q.fresh.p99_ms > 0) report_.fresh_p99_ratio = f.fresh.p99_ms / q.fresh.p99_ms;

  auto& fail = report_.failures;
  if (!report_.stop_reason.empty()) fail.push_back("stopped: " + report_.stop_reason);
  if (report_.errors.total() > 0) fail.push_back(fmt::format("{} errors", report_.errors.total()));
  if (q.keep_alive.count == 0 || f.keep_alive.count == 0) fail.push_back("the probe got no answer in a phase");
  if (report_.limit > 0 && f.flood_limited == 0)
    fail.push_back("the flood was never refused: is the rate limit on (--rate-limit-loopback)?");
  if (o_.max_flood_ratio && report_.p99_ratio > *o_.max_flood_ratio)
    fail.push_back(fmt::format("flooded p99 / quiet p99 {:.2f} over --max-flood-ratio {}", report_.p99_ratio,
                               *o_.max_flood_ratio));
  return report_;
}

json phase_json(const RatePhase& p) {
  auto lat = [](const LatencySummary& s) {
    return json{{"count", s.count}, {"p50Ms", s.p50_ms}, {"p99Ms", s.p99_ms}, {"maxMs", s.max_ms},
                {"meanMs", s.mean_ms}};
  };
  return {{"seconds", p.seconds},
          {"probeKeepAlive", lat(p.keep_alive)},
          {"probeFresh", lat(p.fresh)},
          {"floodAccepted", p.flood_ok},
          {"floodRateLimited", p.flood_limited},
          {"floodAcceptedPerSecond", p.flood_accepted_per_s},
          {"floodSentPerSecond", p.flood_sent_per_s},
          {"daemonCpuPercent", p.daemon_cpu_percent},
          {"clientCpuPercent", p.client_cpu_percent},
          {"loadAverage1m", p.loadavg}};
}

}  // namespace

RateReport run_rate(const LoadOptions& options, Daemon& daemon) {
  RateRun run(options, daemon);
  return run.run();
}

std::string rate_report_text(const LoadOptions& o, const RateReport& r) {
  std::string out;
  auto line = [&](const std::string& s) { out += s + "\n"; };
  line(fmt::format("memd-load rate: daemon {}; probe every {} ms as memd-load; {} flooders as {}; limit {}",
                   r.daemon, o.probe_interval.count(), r.flooders, kFloodOwner,
                   r.limit > 0 ? fmt::format("{} requests/s per owner", r.limit) : std::string("as the daemon has it")));
  auto phase = [&](const char* name, const RatePhase& p) {
    line(fmt::format("  {:8} {:.1f} s  probe kept-alive p50 {:.3f} ms p99 {:.3f} ms max {:.3f} ms ({} samples); "
                     "fresh p50 {:.3f} ms p99 {:.3f} ms",
                     name, p.seconds, p.keep_alive.p50_ms, p.keep_alive.p99_ms, p.keep_alive.max_ms,
                     p.keep_alive.count, p.fresh.p50_ms, p.fresh.p99_ms));
    line(fmt::format("           daemon CPU {:.0f}% of a core, memd-load CPU {:.0f}%, load average {:.2f}",
                     p.daemon_cpu_percent, p.client_cpu_percent, p.loadavg));
  };
  phase("quiet", r.quiet);
  phase("flooded", r.flooded);
  line(fmt::format("  flood: {:.1f} requests/s sent, {:.1f}/s accepted (limit {}), {} answered 429 rate_limited",
                   r.flooded.flood_sent_per_s, r.flooded.flood_accepted_per_s, r.limit, r.flooded.flood_limited));
  line(fmt::format("  flooded / quiet: kept-alive p50 {:.2f}x, p99 {:.2f}x; fresh p99 {:.2f}x", r.p50_ratio,
                   r.p99_ratio, r.fresh_p99_ratio));
  line(fmt::format("  errors {}", r.errors.total()));
  for (const auto& e : r.errors.examples) line("    " + e);
  if (!r.daemon_end.empty()) line("  daemon ended: " + r.daemon_end);
  line(r.ok() ? "PASS" : "FAIL");
  for (const auto& f : r.failures) line("  " + f);
  return out;
}

std::string rate_report_json(const LoadOptions& o, const RateReport& r) {
  json doc;
  doc["mode"] = "rate";
  doc["ok"] = r.ok();
  doc["failures"] = r.failures;
  doc["daemon"] = r.daemon;
  doc["daemonEnd"] = r.daemon_end;
  doc["probeIntervalMs"] = o.probe_interval.count();
  doc["flooders"] = r.flooders;
  doc["limitRequestsPerSecond"] = r.limit;
  doc["quiet"] = phase_json(r.quiet);
  doc["flooded"] = phase_json(r.flooded);
  doc["p50Ratio"] = r.p50_ratio;
  doc["p99Ratio"] = r.p99_ratio;
  doc["freshP99Ratio"] = r.fresh_p99_ratio;
  doc["errors"] = {{"total", r.errors.total()}, {"byKind", r.errors.by_kind}, {"examples", r.errors.examples}};
  return doc.dump(2) + "\n";
}

}  // namespace memd::load
