// tools/memd/transfer_wait.hpp — waiting for a transfer (or a batch) to end,
// as `memd transfer` and `memd move` do.
//
// Two pieces:
// - format_progress: a pure function from what a report says (bytes done of
//   the total, a rate) to the one progress line a terminal shows; unit-tested.
// - wait_for_transfer: polls memory_transfer_status (every 100 ms, backing off
//   to 500 ms) until the report is Completed, Failed or Cancelled, redrawing
//   that line on stderr when asked. A Ctrl-C caught by an InterruptGuard
//   turns into one memory_transfer_cancel, and the wait goes on until the
//   transfer has ended, so the CLI never exits with a copy still running that
//   it was asked to stop.
//
// Thread safety: the CLI is single-threaded; InterruptGuard installs a
// process-wide SIGINT handler (one guard at a time) whose only effect is to
// set a flag the polling loop reads.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "api_client.hpp"
#include "memd/error.hpp"

namespace memd::cli {

// What one line of progress shows.
struct ProgressSample {
  std::uint64_t bytes_done = 0;
  std::uint64_t total_bytes = 0;
  double rate_bytes_per_second = 0;  // 0 or less: not known yet
  bool finished = false;             // the transfer has ended (any way)
};

// "[#########-----------]  45%  1.8 MiB / 4.0 MiB  512 KiB/s  ETA 0:04".
// The percent rounds down, so 100% means done; a zero total reads 100% once
// finished and 0% before; without a rate the rate and ETA read "--".
// Finished lines end in "done" instead of an ETA.
std::string format_progress(const ProgressSample& sample);

// One line on stderr, redrawn in place with \r; a shorter line is padded
// with spaces over the longer one it replaces (no terminal escapes, so it
// also reads right in a terminal that lacks them).
class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
  ~ProgressLine() { finish(); }
  void draw(const std::string& text) {
    if (!enabled_) return;
    std::string out = "\r" + text;
    if (text.size() < width_) out.append(width_ - text.size(), ' ');
    width_ = std::max(width_, text.size());
    std::fputs(out.c_str(), stderr);
    std::fflush(stderr);
  }
  // Ends the line, so what is printed next starts on its own.
  void finish() {
    if (!enabled_ || width_ == 0) return;
    std::fputs("\n", stderr);
    std::fflush(stderr);
    width_ = 0;
  }

 private:
  bool enabled_;
  std::size_t width_ = 0;
};

// Statuses a report ends in: "Completed", "Failed", "Cancelled".
bool is_finished_status(std::string_view status) noexcept;

// A batch's report carries its members ("transferIds"); a transfer's does not.
bool is_batch_report(const nlohmann::json& report);

// The id that memory_transfer_status takes for this report: a batch's
// batchId, else the transferId.
std::string report_id(const nlohmann::json& report);

// Catches SIGINT for its lifetime: the first Ctrl-C only sets a flag (read
// with interrupted()); the handler is reset by it (SA_RESETHAND), so a
// second Ctrl-C ends the process at once, for a user who will not wait for
// the cancel to land. The previous handler comes back on destruction.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  static bool interrupted() noexcept;
};

struct WaitOptions {
  bool show_progress = false;  // draw the line on stderr (the caller checks isatty)
  std::chrono::milliseconds first_interval{100};
  std::chrono::milliseconds max_interval{500};
};

struct WaitResult {
  nlohmann::json report;     // the final report: finished
  bool interrupted = false;  // a Ctrl-C came, and a cancel was asked
};

// Polls from `submitted` (the report memory_transfer or memory_move
// answered) until the transfer or batch has ended. With an InterruptGuard
// alive, a Ctrl-C sends memory_transfer_cancel once; a cancel refused with
// conflict (it finished meanwhile) is not an error. A status call that
// fails ends the wait with its error, naming the id to look up later.
Result<WaitResult> wait_for_transfer(ApiClient& api, nlohmann::json submitted, const WaitOptions& options);

}  // namespace memd::cli
