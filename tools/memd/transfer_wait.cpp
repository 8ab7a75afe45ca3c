// Waiting on a transfer: the progress line, Ctrl-C, and the polling loop.
#include "transfer_wait.hpp"

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>

#include "memd/size.hpp"

namespace memd::cli {
namespace {

constexpr int kBarWidth = 20;

// Seconds as "M:SS" or "H:MM:SS"; past 99 hours an estimate means nothing.
std::string clock_text(long double seconds) {
  if (!(seconds >= 0) || seconds > 99.0L * 3600) return "--";
  const auto s = static_cast<std::uint64_t>(std::ceil(seconds));
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%llu:%02llu:%02llu", static_cast<unsigned long long>(s / 3600),
                               static_cast<unsigned long long>(s / 60 % 60), static_cast<unsigned long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%llu:%02llu", static_cast<unsigned long long>(s / 60),
                     static_cast<unsigned long long>(s % 60));
  return buf;
}

// Set by the handler, read by the loop: a lock-free atomic is safe to
// store from a signal handler, and sanitizers see the ordering.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);
struct sigaction g_previous {};

extern "C" void on_sigint(int) { g_interrupted.store(true, std::memory_order_relaxed); }


// A batch's report has no rate, only bytes: the rate is what this client
// saw go by since its first look.
class RateMeter {
 public:
  double observe(std::uint64_t bytes) {
    const auto now = std::chrono::steady_clock::now();
    if (!started_) {
      started_ = true;
      t0_ = now;
      b0_ = bytes;
      return 0;
    }
    const double seconds = std::chrono::duration<double>(now - t0_).count();
    // Under a tenth of a second the estimate is mostly noise.
    if (seconds < 0.1 || bytes < b0_) return 0;
    return static_cast<double>(bytes - b0_) / seconds;
  }

 private:
  bool started_ = false;
  std::chrono::steady_clock::time_point t0_;
  std::uint64_t b0_ = 0;
};

std::uint64_t unsigned_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

ProgressSample sample_of(const nlohmann::json& report, bool batch, RateMeter& meter) {
  ProgressSample s;
  s.bytes_done = unsigned_field(report, "bytesDone");
  s.total_bytes = unsigned_field(report, "sizeBytes");
  s.finished = is_finished_status(report.value("status", ""));
  if (batch) {
    s.rate_bytes_per_second = meter.observe(s.bytes_done);
  } else if (auto it = report.find("rateBytesPerSecond"); it != report.end() && it->is_number()) {
    s.rate_bytes_per_second = it->get<double>();
  }
  return s;
}

// Sleeps, but a signal (Ctrl-C) ends the nap early: nanosleep is not
// restarted, unlike std::this_thread::sleep_for.
void nap(std::chrono::milliseconds ms) {
  timespec t{static_cast<time_t>(ms.count() / 1000), static_cast<long>(ms.count() % 1000) * 1'000'000};
  ::nanosleep(&t, nullptr);
}

}  // namespace

std::string format_progress(const ProgressSample& s) {
  const long double fraction =
      s.total_bytes ? std::min<long double>(1.0L, static_cast<long double>(s.bytes_done) / s.total_bytes)
                    : (s.finished ? 1.0L : 0.0L);
  // Rounded down: 99.9% is not done yet.
  const int percent = static_cast<int>(std::floor(fraction * 100 + 1e-9L));
  const int filled = static_cast<int>(std::floor(fraction * kBarWidth + 1e-9L));
  std::string line = "[" + std::string(filled, '#') + std::string(kBarWidth - filled, '-') + "] ";
  char pct[8];
  std::snprintf(pct, sizeof pct, "%3d%%", percent);
  line += pct;
  line += "  " + format_size(s.bytes_done) + " / " + format_size(s.total_bytes) + "  ";
  const bool has_rate = s.rate_bytes_per_second > 0 && std::isfinite(s.rate_bytes_per_second);
  line += has_rate ? format_size(static_cast<std::uint64_t>(s.rate_bytes_per_second)) + "/s" : std::string("--");
  if (s.finished) {
    line += s.total_bytes == 0 || s.bytes_done >= s.total_bytes ? "  done" : "  stopped";
  } else {
    const std::uint64_t left = s.total_bytes - std::min(s.bytes_done, s.total_bytes);
    line += "  ETA ";
    line += left == 0 ? "0:00" : (has_rate ? clock_text(left / static_cast<long double>(s.rate_bytes_per_second)) : "--");
  }
  return line;
}

bool is_finished_status(std::string_view status) noexcept {
  return status == "Completed" || status == "Failed" || status == "Cancelled";
}

bool is_batch_report(const nlohmann::json& report) {
  return report.is_object() && report.contains("transferIds");
}

std::string report_id(const nlohmann::json& report) {
  if (!report.is_object()) return {};
  auto it = report.find(is_batch_report(report) ? "batchId" : "transferId");
  return it != report.end() && it->is_string() ? it->get<std::string>() : std::string();
}

InterruptGuard::InterruptGuard() {
  g_interrupted.store(false, std::memory_order_relaxed);
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: a nap in progress ends at once. SA_RESETHAND: the next
  // Ctrl-C gets the default action (the process ends).
  sa.sa_flags = SA_RESETHAND;
  ::sigaction(SIGINT, &sa, &g_previous);
}

InterruptGuard::~InterruptGuard() { ::sigaction(SIGINT, &g_previous, nullptr); }

bool InterruptGuard::interrupted() noexcept { return g_interrupted.load(std::memory_order_relaxed); }

Result<WaitResult> wait_for_transfer(ApiClient& api, nlohmann::json report, const WaitOptions& options) {
  try {
    const std::string id = report_id(report);
    if (id.empty()) return fail(ErrorCode::internal, "memd answered a transfer report without an id");
    const bool batch = is_batch_report(report);
    const std::string target = "/api/memory/transfers/" + url_encode(id);
    ProgressLine line(options.show_progress);
    RateMeter meter;
    WaitResult out;
    auto interval = options.first_interval;
    for (;;) {
      line.draw(format_progress(sample_of(report, batch, meter)));
      if (is_finished_status(report.value("status", ""))) break;
      // A Ctrl-C that came during the last status call is acted on now,
      // not after another nap. After a cancel, look again soon: it lands
      // at the transfer's next chunk.
      if (!InterruptGuard::interrupted() || out.interrupted) {
        nap(out.interrupted ? options.first_interval : interval);
        interval = std::min(interval * 3 / 2, options.max_interval);
      }
      Result<nlohmann::json> next;
      if (InterruptGuard::interrupted() && !out.interrupted) {
        out.interrupted = true;
        next = api.del(target);
        // Finished between the last look and the cancel: read how it ended.
        if (!next && next.error().code == ErrorCode::conflict) next = api.get(target);
      } else {
        next = api.get(target);
      }
      if (!next)
        return fail(next.error().code, "{} (while waiting on {} {}; `memd transfer-status {}` reads it later)",
                    next.error().message, batch ? "batch" : "transfer", id, id);
      report = std::move(*next);
    }
    line.finish();
    out.report = std::move(report);
    return out;
  } catch (const nlohmann::json::exception& e) {
    return fail(ErrorCode::internal, "unexpected answer from the daemon: {}", e.what());
  }
}

}  // namespace memd::cli
