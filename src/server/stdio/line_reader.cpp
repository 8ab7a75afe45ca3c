// Chunked, bounded line reading (see line_reader.hpp).
#include "server/stdio/line_reader.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace memd {

LineReader::LineReader(int fd, std::size_t max_line, std::size_t chunk)
    : fd_(fd), max_line_(max_line), chunk_(chunk == 0 ? 1 : chunk) {}

bool LineReader::fill() {
  if (eof_ || error_) return false;
  for (;;) {
    const ssize_t n = ::read(fd_, chunk_.data(), chunk_.size());
    if (n > 0) {
      begin_ = 0;
      end_ = static_cast<std::size_t>(n);
      return true;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error_ = true;
    else eof_ = true;
    return false;
  }
}

LineReader::Status LineReader::next(std::string& line) {
  line.clear();
  bool too_long = false;
  bool any = false;
  for (;;) {
    if (begin_ == end_ && !fill()) {
      if (too_long) return Status::TooLong;
      if (any) break;  // last line without a newline
      return error_ ? Status::Error : Status::Eof;
    }
    any = true;
    const char* start = chunk_.data() + begin_;
    const auto* nl = static_cast<const char*>(std::memchr(start, '\n', end_ - begin_));
    const std::size_t take = nl != nullptr ? static_cast<std::size_t>(nl - start) : end_ - begin_;
    if (!too_long) {
      if (line.size() + take > max_line_) {
        too_long = true;
        line.clear();
        line.shrink_to_fit();
      } else {
        line.append(start, take);
      }
    }
    begin_ += take;
    if (nl != nullptr) {
      ++begin_;  // the newline
      if (too_long) return Status::TooLong;
      break;
    }
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return Status::Line;
}

}  // namespace memd
