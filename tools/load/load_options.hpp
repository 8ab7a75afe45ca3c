// load/load_options.hpp — memd-load's flags, checked before anything runs.
//
// Every count, size and duration has bounds, so a typo cannot open a million
// sockets or run for a day; the daemon must be on loopback. A flag that does
// not parse or is out of bounds is refused with a message naming it (exit 2).
//
// Thread safety: values and pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memd/size.hpp"
#include "soak_mix.hpp"

namespace memd::load {

using Millis = std::chrono::milliseconds;

// What one run of memd-load does: the REST door under held-open load
// (issue 12), the soak (issue 17 item 2: load_run.hpp's neighbour
// soak_run.hpp), or another owner's latency under a flood (issue 17 item 5:
// rate_run.hpp).
enum class Mode { load, soak, rate };

struct LoadOptions {
  Mode mode = Mode::load;
  // The daemon: attach (url + pid) or spawn (path, extra `serve` args).
  std::string url;  // normalised: host and port below
  std::string host;
  int port = 0;
  int pid = 0;
  std::string spawn;
  std::vector<std::string> daemon_args;
  std::uint64_t host_device = 0;  // spawn: --host-device for memd; 0 = enough for the load
  std::string daemon_log;         // spawn: the daemon's stderr goes here ("" = ours)
  std::string device = "host:0";

  // The load.
  std::uint64_t idle = 10'000;
  std::uint64_t slow = 1'000;
  std::uint64_t clients = 16;
  std::uint64_t big_count = 4;
  std::uint64_t big_size = 256 * kMiB;
  std::uint64_t cycle_size = 4 * kMiB;
  std::uint64_t slow_rate = 32 * kKiB;   // bytes per second, per slow reader
  std::uint64_t slow_rcvbuf = 8 * kKiB;  // SO_RCVBUF of a slow reader's socket
  std::uint64_t fill_piece = 16 * kMiB;  // set-up writes the big allocations in PUTs of this size
  Millis duration{60'000};
  Millis ramp_timeout{60'000};   // each ramp (idle, then slow) stops launching after this
  Millis request_timeout{10'000};
  Millis probe_interval{20};
  Millis progress_interval{5'000};  // a progress line on stderr; 0 = none
  Millis deadline{0};  // whole run; 0 = 2 ramps + duration + 10 request timeouts + 120 s
  std::uint64_t connect_concurrency = 256;

  // Protecting the machine.
  std::uint64_t rss_limit = 8 * kGiB;
  std::uint64_t min_available = 1 * kGiB;

  // Event subscribers (issue 14): held open from before the load; a script
  // of sse_script refused allocations during it, whose limit_reached events
  // every subscriber must receive in order (load/sse_script.hpp).
  std::uint64_t sse_subscribers = 0;
  std::uint64_t sse_script = 100;
  std::string sse_kinds = "limit_reached";

  // --mode soak: every client loops over the mix (seeded), as its own owner.
  SoakMix mix = default_soak_mix();
  std::uint64_t seed = 1;
  std::uint64_t model_size = 256 * kKiB;  // the weight tensor of each model file the soak writes
  std::uint64_t max_rss_growth = 0;       // exit 1 when the daemon's end RSS - start RSS exceeds it (0: not checked)

  // --mode rate: the probe alone for --duration, then with F flooders.
  std::uint64_t flooders = 4;
  double flood_limit = 0;  // spawn: --rate-limit-requests (and --rate-limit-loopback); 0 = attached/as given
  std::optional<double> max_flood_ratio;  // exit 1 when flooded p99 / quiet p99 exceeds it

  std::string json_path;
  // Goals checked only when given (exit 1 when missed).
  std::optional<double> max_status_p99_ms;
  std::optional<std::uint64_t> max_overhead;
  std::optional<double> max_keepalive_ratio;

  // Descriptors this process needs, with a margin (flooders run only in
  // --mode rate).
  std::uint64_t descriptors_needed() const {
    return idle + slow + clients + sse_subscribers + (mode == Mode::rate ? flooders : 0) + 64;
  }
};

struct ParsedFlags {
  std::optional<LoadOptions> options;  // set when the run should go ahead
  int exit_code = 0;                   // otherwise: 0 (help) or 2 (refused)
  std::string message;                 // the help text, or why refused
};

ParsedFlags parse_load_flags(int argc, const char* const* argv);

// "250ms", "1.5s", "2m", "60" (seconds) → milliseconds; nullopt if malformed.
std::optional<Millis> parse_duration(const std::string& text);
std::optional<double> parse_duration_ms(const std::string& text);
// "http://127.0.0.1:7870[/]" → host and port; loopback hosts only.
bool parse_loopback_url(const std::string& url, std::string& host, int& port, std::string& why);

}  // namespace memd::load
