#include "load_options.hpp"

#include <CLI/CLI.hpp>

#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <fmt/format.h>

#include "sse_script.hpp"

namespace memd::load {
namespace {

// Bounds: a typo must not open a million sockets, allocate a terabyte or run
// for a day.
constexpr std::uint64_t kMaxConnections = 60'000;
constexpr std::uint64_t kMaxClients = 1'024;
constexpr Millis kMaxDuration{3'600'000};

struct Refusal {
  std::string message;
};

std::uint64_t whole(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || n < lo || n > hi)
    throw Refusal{fmt::format("{}: '{}' is not a whole number in [{}, {}]", flag, text, lo, hi)};
  return n;
}

std::uint64_t size(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi) {
  auto bytes = parse_size(text);
  if (!bytes) throw Refusal{fmt::format("{}: '{}' is not a size ({})", flag, text, bytes.error().message)};
  if (*bytes < lo || *bytes > hi)
    throw Refusal{fmt::format("{}: '{}' is outside [{}, {}]", flag, text, format_size(lo), format_size(hi))};
  return *bytes;
}

Millis duration(const std::string& flag, const std::string& text, Millis lo, Millis hi) {
  auto ms = parse_duration(text);
  if (!ms) throw Refusal{fmt::format("{}: '{}' is not a duration (250ms, 1.5s, 2m)", flag, text)};
  if (*ms < lo || *ms > hi)
    throw Refusal{fmt::format("{}: '{}' is outside [{} ms, {} ms]", flag, text, lo.count(), hi.count())};
  return *ms;
}

double positive(const std::string& flag, const std::string& text, double hi) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !(v > 0 && v <= hi))
    throw Refusal{fmt::format("{}: '{}' is not a number in (0, {}]", flag, text, hi)};
  return v;
}

}  // namespace

std::optional<double> parse_duration_ms(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.'))
    ++digits;
  const std::string number = text.substr(0, digits), unit = text.substr(digits);
  if (number.empty() || number.size() > 12 || number.front() == '.' || number.back() == '.' ||
      number.find('.') != number.rfind('.'))
    return std::nullopt;
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1000;
  else if (unit == "ms") scale = 1;
  else if (unit == "m" || unit == "min") scale = 60'000;
  else return std::nullopt;
  const double ms = std::strtod(number.c_str(), nullptr) * scale;
  if (!std::isfinite(ms) || ms > 1e12) return std::nullopt;
  return ms;
}

std::optional<Millis> parse_duration(const std::string& text) {
  auto ms = parse_duration_ms(text);
  if (!ms) return std::nullopt;
  return Millis(static_cast<std::int64_t>(std::llround(*ms)));
}

bool parse_loopback_url(const std::string& url, std::string& host, int& port, std::string& why) {
  constexpr std::string_view scheme = "http://";
  if (!url.starts_with(scheme)) {
    why = "only http:// URLs (memd-load talks to a daemon on loopback)";
    return false;
  }
  std::string_view rest = std::string_view(url).substr(scheme.size());
  if (rest.ends_with("/")) rest.remove_suffix(1);
  std::string_view h, p;
  if (rest.starts_with("[")) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      why = "expected http://[::1]:PORT";
      return false;
    }
    h = rest.substr(1, close - 1);
    p = rest.substr(close + 2);
  } else {
    const auto colon = rest.find(':');
    if (colon == std::string_view::npos) {
      why = "the URL needs a port (http://127.0.0.1:PORT)";
      return false;
    }
    h = rest.substr(0, colon);
    p = rest.substr(colon + 1);
  }
  int n = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), n);
  if (p.empty() || ec != std::errc{} || end != p.data() + p.size() || n < 1 || n > 65535) {
    why = fmt::format("'{}' is not a port in [1, 65535]", p);
    return false;
  }
  // 127.0.0.0/8 as four decimal parts, ::1, or localhost (resolved to 127.0.0.1).
  bool loopback = h == "::1" || h == "localhost";
  if (!loopback && h.starts_with("127.")) {
    int parts = 0;
    bool ok = true;
    std::string_view s = h;
    while (ok && !s.empty()) {
      const auto dot = std::min(s.find('.'), s.size());
      int v = 0;
      auto [e, c] = std::from_chars(s.data(), s.data() + dot, v);
      ok = dot > 0 && dot <= 3 && c == std::errc{} && e == s.data() + dot && v <= 255;
      ++parts;
      s = dot < s.size() ? s.substr(dot + 1) : std::string_view{};
      if (dot < h.size() && s.empty() && h.back() == '.') ok = false;
    }
    loopback = ok && parts == 4;
  }
  if (!loopback) {
    why = fmt::format("'{}' is not a loopback address (127.0.0.0/8, ::1, localhost)", h);
    return false;
  }
  host = h == "localhost" ? "127.0.0.1" : std::string(h);
  port = n;
  return true;
}

ParsedFlags parse_load_flags(int argc, const char* const* argv) {
  ParsedFlags out;
  CLI::App app{
      "memd-load: load a memd daemon on loopback and check every answer. Three modes:\n"
      "  load (default): hold idle keep-alive connections and slow streaming reads open while clients run "
      "allocate/write/read/free cycles with byte checks; report errors, GET /api/memory/status latency and "
      "the daemon's memory.\n"
      "  soak: --clients clients, each its own owner (memd-load-soak-N), loop a seeded weighted --mix of "
      "scenarios for --duration (rw: allocate/write/read/free of sizes from 1 B to 8 MiB on every device "
      "and memory type; transfer; move; copy; export/release; status; model load/read/unload of a "
      "safetensors file it writes; session open/allocate/close), every answer and byte checked, while "
      "--sse-subscribers subscribers must see the --sse-script events in order; then the daemon's "
      "allocations, bytes, pool bytes, sessions, transfers and models must be back where they started. "
      "A spawned daemon gets two host devices and a --model-root.\n"
      "  rate: GET /api/memory/status of owner memd-load every --probe-interval, for --duration alone, then "
      "for --duration while --flooders clients of owner memd-load-flood send requests back to back; "
      "reports both phases' p50/p99, the flood's accepted rate and its 429s. --flood-limit R spawns the "
      "daemon with --rate-limit-requests R --rate-limit-loopback.\n"
      "Extra arguments after `--` go to `memd serve` (with --spawn)."};
  app.set_help_flag("-h,--help", "Print this help and exit");
  std::string url, pid, spawn, host_device, daemon_log, device = "host:0";
  std::string idle = "10000", slow = "1000", clients = "16", big_count = "4", big_size = "256MiB",
              cycle_size = "4MiB", slow_rate = "32KiB", slow_rcvbuf = "8KiB", fill_piece = "16MiB",
              dur = "60s", ramp = "60s", request_timeout = "10s", probe = "20ms", progress = "5s", deadline, concurrency = "256",
              rss_limit = "8GiB", min_available = "1GiB", json, max_p99, max_overhead, max_ratio,
              sse_subscribers = "0", sse_script = "100", sse_kinds = "limit_reached", mode = "load", mix, seed = "1",
              model_size = "256KiB", max_rss_growth, flooders = "4", flood_limit, max_flood_ratio;
  std::vector<std::string> extra;
  app.add_option("--url", url, "Attach to the daemon at this loopback URL (http://127.0.0.1:PORT); needs --pid");
  app.add_option("--pid", pid, "The attached daemon's pid (its memory is read from /proc/PID/status)");
  app.add_option("--spawn", spawn, "Start this memd binary as `memd --no-cuda --host-device SIZE serve "
                                   "--listen 127.0.0.1:0 [ARGS after --]` (soak: two host devices and a "
                                   "--model-root of its own), and stop it at the end");
  app.add_option("--host-device", host_device, "With --spawn: host:0's capacity (soak: host:0's and host:1's each; default: what the load needs)");
  app.add_option("--daemon-log", daemon_log, "With --spawn: write the daemon's stderr to this file");
  app.add_option("--device", device, "Device the allocations go to")->capture_default_str();
  app.add_option("--idle", idle, "Idle keep-alive connections (one GET /healthz each, then silence)")
      ->capture_default_str();
  app.add_option("--slow", slow, "Slow streaming readers (GET .../data of the big allocations)")
      ->capture_default_str();
  app.add_option("--clients", clients, "Clients running allocate/write/read/free cycles (soak: clients looping the --mix)")->capture_default_str();
  app.add_option("--big-count", big_count, "Big allocations the slow readers read")->capture_default_str();
  app.add_option("--big-size", big_size, "Size of each big allocation")->capture_default_str();
  app.add_option("--cycle-size", cycle_size, "Size of each cycle's allocation")->capture_default_str();
  app.add_option("--slow-rate", slow_rate, "Bytes per second each slow reader takes")->capture_default_str();
  app.add_option("--slow-rcvbuf", slow_rcvbuf, "SO_RCVBUF of a slow reader's socket")->capture_default_str();
  app.add_option("--fill-piece", fill_piece, "Set-up writes the big allocations in PUTs of this size")
      ->capture_default_str();
  app.add_option("--duration", dur, "How long the cycles run with everything held open")->capture_default_str();
  app.add_option("--ramp-timeout", ramp, "Each ramp (idle, then slow) stops opening connections after this")
      ->capture_default_str();
  app.add_option("--request-timeout", request_timeout, "A request with no complete answer by then is a timeout")
      ->capture_default_str();
  app.add_option("--probe-interval", probe, "Pause between status probes (keep-alive, then fresh)")
      ->capture_default_str();
  app.add_option("--progress", progress, "A progress line on stderr this often (0: none)")->capture_default_str();
  app.add_option("--deadline", deadline, "Stop everything after this (default: 2 ramps + duration + 10 request timeouts + 120s)");
  app.add_option("--connect-concurrency", concurrency, "Connections being opened at once during a ramp (slow readers: at most 64)")
      ->capture_default_str();
  app.add_option("--rss-limit", rss_limit, "Stop the run (and kill a spawned daemon) when the daemon's RSS "
                                           "passes this")
      ->capture_default_str();
  app.add_option("--min-available", min_available, "Stop the run when the machine's MemAvailable falls below this")
      ->capture_default_str();
  app.add_option("--sse-subscribers", sse_subscribers,
                 "Subscribers of GET /api/memory/events held open from before the load; each must receive "
                 "every event of the script, in order")
      ->capture_default_str();
  app.add_option("--sse-script", sse_script,
                 "Events in the script: refused allocations of owner memd-load-script (one limit_reached each), "
                 "sent during the load when there are subscribers (soak: spread over --duration)")
      ->capture_default_str();
  app.add_option("--sse-kinds", sse_kinds, "The subscribers' kinds= filter (must include limit_reached)")
      ->capture_default_str();
  app.add_option("--mode", mode, "load, soak or rate (above)")->capture_default_str();
  app.add_option("--mix", mix,
                 fmt::format("soak: scenario weights, name=N[,name=N…] from rw, transfer, move, copy, export, "
                             "status, model, session (N in [0, 1000]; names left out weigh 0). Default {}",
                             format_soak_mix(default_soak_mix())));
  app.add_option("--seed", seed, "soak: seed of the clients' choices (client k uses seed + k)")->capture_default_str();
  app.add_option("--model-size", model_size, "soak: bytes of the weight tensor of the model files it writes")
      ->capture_default_str();
  app.add_option("--max-rss-growth", max_rss_growth,
                 "soak: exit 1 if the daemon's RSS at the end exceeds its RSS at the start by more than this");
  app.add_option("--flooders", flooders, "rate: clients flooding as owner memd-load-flood")->capture_default_str();
  app.add_option("--flood-limit", flood_limit,
                 "rate, with --spawn: requests per second per owner (memd serve --rate-limit-requests, with "
                 "--rate-limit-loopback)");
  app.add_option("--max-flood-ratio", max_flood_ratio,
                 "rate: exit 1 if the probe's flooded p99 / quiet p99 exceeds this (e.g. 2)");
  app.add_option("--json", json, "Also write the report as JSON to this file");
  app.add_option("--max-status-p99", max_p99, "Exit 1 if keep-alive status p99 exceeds this (e.g. 5ms)");
  app.add_option("--max-overhead", max_overhead, "Exit 1 if peak RSS - allocated exceeds this (e.g. 256MiB)");
  app.add_option("--max-keepalive-ratio", max_ratio, "Exit 1 if keep-alive p99 / fresh p99 exceeds this (e.g. 2)");
  app.add_option("DAEMON_ARGS", extra, "After --: more arguments for `memd serve` (with --spawn)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out.message = app.help();
    return out;
  } catch (const CLI::ParseError& e) {
    out.exit_code = 2;
    out.message = e.what();
    return out;
  }

  try {
    LoadOptions o;
    if (spawn.empty() == url.empty()) throw Refusal{"give either --spawn PATH or --url URL with --pid PID"};
    if (!url.empty()) {
      std::string why;
      if (!parse_loopback_url(url, o.host, o.port, why)) throw Refusal{fmt::format("--url: '{}': {}", url, why)};
      if (pid.empty()) throw Refusal{"--url needs --pid (the daemon's memory is read from /proc/PID/status)"};
      o.pid = static_cast<int>(whole("--pid", pid, 1, 4'194'304));
      if (!extra.empty() || !host_device.empty() || !daemon_log.empty())
        throw Refusal{"--host-device, --daemon-log and arguments after -- need --spawn"};
      o.url = url;
    } else {
      if (!pid.empty()) throw Refusal{"--pid is for --url (a spawned daemon's pid is known)"};
      o.spawn = spawn;
      o.daemon_args = extra;
      o.daemon_log = daemon_log;
      o.host = "127.0.0.1";
      // memd refuses a host device under 64MiB; say so here, naming our flag.
      if (!host_device.empty()) o.host_device = size("--host-device", host_device, 64 * kMiB, 1024 * kGiB);
    }
    if (device.empty() || device.size() > 64 ||
        device.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789:") != std::string::npos)
      throw Refusal{fmt::format("--device: '{}' is not a device id (host:0, cuda:0, cpu)", device)};
    o.device = device;
    o.idle = whole("--idle", idle, 0, kMaxConnections);
    o.slow = whole("--slow", slow, 0, kMaxConnections);
    o.clients = whole("--clients", clients, 0, kMaxClients);
    o.big_count = whole("--big-count", big_count, 1, 64);
    o.big_size = size("--big-size", big_size, kMiB, 64 * kGiB);
    o.cycle_size = size("--cycle-size", cycle_size, 1, 1 * kGiB);
    o.slow_rate = size("--slow-rate", slow_rate, 1, 64 * kGiB);
    o.slow_rcvbuf = size("--slow-rcvbuf", slow_rcvbuf, 1 * kKiB, 64 * kMiB);
    o.fill_piece = size("--fill-piece", fill_piece, 4 * kKiB, 1 * kGiB);
    o.duration = duration("--duration", dur, Millis(100), kMaxDuration);
    o.ramp_timeout = duration("--ramp-timeout", ramp, Millis(100), kMaxDuration);
    o.request_timeout = duration("--request-timeout", request_timeout, Millis(10), Millis(600'000));
    o.probe_interval = duration("--probe-interval", probe, Millis(1), Millis(60'000));
    o.progress_interval = duration("--progress", progress, Millis(0), kMaxDuration);
    if (o.progress_interval.count() > 0 && o.progress_interval < Millis(100))
      throw Refusal{fmt::format("--progress: '{}' is under 100 ms (0 turns it off)", progress)};
    // Default: every phase's own bound (set-up, two ramps and their
    // stragglers, the load and its last cycles, the reuse check, teardown)
    // plus two minutes.
    o.deadline = deadline.empty() ? 2 * o.ramp_timeout + o.duration + 10 * o.request_timeout + Millis(120'000)
                                  : duration("--deadline", deadline, Millis(1'000), 4 * kMaxDuration);
    o.connect_concurrency = whole("--connect-concurrency", concurrency, 1, 4096);
    o.rss_limit = size("--rss-limit", rss_limit, 64 * kMiB, 1024 * kGiB);
    o.min_available = size("--min-available", min_available, 0, 1024 * kGiB);
    o.sse_subscribers = whole("--sse-subscribers", sse_subscribers, 0, kMaxConnections);
    o.sse_script = whole("--sse-script", sse_script, 1, 100'000);
    if (const auto why = check_event_kinds(sse_kinds, "limit_reached"); !why.empty())
      throw Refusal{fmt::format("--sse-kinds: '{}': {}", sse_kinds.substr(0, 64), why)};
    o.sse_kinds = sse_kinds;
    o.json_path = json;
    if (mode == "load") o.mode = Mode::load;
    else if (mode == "soak") o.mode = Mode::soak;
    else if (mode == "rate") o.mode = Mode::rate;
    else throw Refusal{fmt::format("--mode: '{}' is not load, soak or rate", mode.substr(0, 32))};
    if (!mix.empty()) {
      if (o.mode != Mode::soak) throw Refusal{"--mix is for --mode soak"};
      std::string why;
      auto parsed = parse_soak_mix(mix, why);
      if (!parsed) throw Refusal{fmt::format("--mix: {}", why)};
      o.mix = *parsed;
    }
    o.seed = whole("--seed", seed, 0, std::numeric_limits<std::uint64_t>::max());
    o.model_size = size("--model-size", model_size, 1, 64 * kMiB);
    if (!max_rss_growth.empty()) o.max_rss_growth = size("--max-rss-growth", max_rss_growth, 1, 1024 * kGiB);
    o.flooders = whole("--flooders", flooders, 1, kMaxClients);
    if (!flood_limit.empty()) {
      if (o.mode != Mode::rate || spawn.empty()) throw Refusal{"--flood-limit is for --mode rate with --spawn"};
      o.flood_limit = positive("--flood-limit", flood_limit, 1e6);
      // The probe (one kept-alive and one fresh request per interval) must
      // stay well under the limit, or its own 429s would be the finding.
      const double probe_rate = 2000.0 / static_cast<double>(o.probe_interval.count());
      if (o.flood_limit < 2 * probe_rate)
        throw Refusal{fmt::format("--flood-limit: {} is under twice the probe's {:.0f} requests/s (--probe-interval)",
                                  flood_limit, probe_rate)};
    }
    if (!max_flood_ratio.empty()) o.max_flood_ratio = positive("--max-flood-ratio", max_flood_ratio, 1000);
    if (!max_p99.empty()) {
      auto ms = parse_duration_ms(max_p99);
      if (!ms || *ms <= 0 || *ms > 600'000)
        throw Refusal{fmt::format("--max-status-p99: '{}' is not a duration in (0, 600s]", max_p99)};
      o.max_status_p99_ms = *ms;
    }
    if (!max_overhead.empty()) o.max_overhead = size("--max-overhead", max_overhead, 0, 1024 * kGiB);
    if (!max_ratio.empty()) o.max_keepalive_ratio = positive("--max-keepalive-ratio", max_ratio, 1000);
    out.options = std::move(o);
  } catch (const Refusal& r) {
    out.exit_code = 2;
    out.message = r.message;
  }
  return out;
}

}  // namespace memd::load
