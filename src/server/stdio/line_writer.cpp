// Whole lines under one mutex (line_writer.hpp).
#include "server/stdio/line_writer.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

namespace memd {

bool LineWriter::write_line(std::string_view text) {
  std::lock_guard lock(mu_);
  return write_line_held(text);
}

bool LineWriter::write_line_held(std::string_view text) {
  if (failed_.load(std::memory_order_relaxed)) return false;
  static constexpr char kNewline = '\n';
  iovec parts[2] = {{const_cast<char*>(text.data()), text.size()}, {const_cast<char*>(&kNewline), 1}};
  iovec* next = parts;
  int count = 2;
  while (count > 0) {
    const ssize_t n = ::writev(fd_, next, count);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      failed_.store(true, std::memory_order_release);
      return false;
    }
    auto done = static_cast<std::size_t>(n);
    while (count > 0 && done >= next->iov_len) {
      done -= next->iov_len;
      ++next;
      --count;
    }
    if (count > 0) {
      next->iov_base = static_cast<char*>(next->iov_base) + done;
      next->iov_len -= done;
    }
  }
  return true;
}

}  // namespace memd
