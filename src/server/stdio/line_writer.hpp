// server/stdio/line_writer.hpp — whole lines to one output, from several
// threads.
//
// The stdio doors write two kinds of line to stdout: responses (the request
// loop's thread) and event lines (the event pump's thread, once the host has
// subscribed). Each line is written whole under one mutex, so a response is
// never split by an event and the host reads one JSON object per line.
// hold() keeps the output for a caller that must do something between two
// lines atomically: memory_subscribe installs its subscription and writes
// its answer under one hold, so no event of the new filter comes before the
// answer and none of the old filter after it.
//
// Thread safety: every method is thread-safe; write_line_held requires the
// calling thread to own hold().
#pragma once

#include <atomic>
#include <mutex>
#include <string_view>

namespace memd {

class LineWriter {
 public:
  explicit LineWriter(int fd) : fd_(fd) {}
  LineWriter(const LineWriter&) = delete;
  LineWriter& operator=(const LineWriter&) = delete;

  // `text` and a newline, whole. False once a write failed (then every later
  // write fails too: a half-written line cannot be followed by another).
  bool write_line(std::string_view text);
  [[nodiscard]] std::unique_lock<std::mutex> hold() { return std::unique_lock(mu_); }
  bool write_line_held(std::string_view text);
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }

 private:
  const int fd_;
  std::mutex mu_;
  std::atomic<bool> failed_{false};
};

}  // namespace memd
