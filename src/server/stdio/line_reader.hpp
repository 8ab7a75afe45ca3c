// server/stdio/line_reader.hpp — bounded line reading from a file descriptor.
//
// Reads in fixed chunks and never holds more than max_line bytes of one line:
// a line over the limit is reported as TooLong and the rest of it is read and
// dropped up to its newline, so a hostile host cannot make memd buffer an
// unbounded line. A final line without a newline still counts as a line.
//
// Thread safety: one reader per thread; not thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace memd {

class LineReader {
 public:
  enum class Status { Line, TooLong, Eof, Error };

  LineReader(int fd, std::size_t max_line, std::size_t chunk = 64 * 1024);

  // On Line, `line` holds it without the newline (and without a trailing '\r').
  Status next(std::string& line);

 private:
  bool fill();  // false at end of input or on a read error

  int fd_;
  std::size_t max_line_;
  std::vector<char> chunk_;
  std::size_t begin_ = 0, end_ = 0;  // unread bytes in chunk_
  bool eof_ = false;
  bool error_ = false;
};

}  // namespace memd
