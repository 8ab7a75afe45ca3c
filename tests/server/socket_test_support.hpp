// tests/server/socket_test_support.hpp — pieces the socket door's tests
// share: a private directory for socket files, memfds with known bytes, and
// counting the process's open descriptors (to prove none leaked).
//
// Thread safety: values and pure functions.
#pragma once

#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace memd::testing {

// A fresh directory under /tmp (short: socket paths are at most 107 bytes),
// removed with everything in it.
class TempSocketDir {
 public:
  TempSocketDir() {
    char pattern[] = "/tmp/memd-sock-XXXXXX";
    if (::mkdtemp(pattern) != nullptr) path_ = pattern;
  }
  ~TempSocketDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempSocketDir(const TempSocketDir&) = delete;
  TempSocketDir& operator=(const TempSocketDir&) = delete;

  bool ok() const { return !path_.empty(); }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// The byte at offset i of pattern `seed`.
inline std::uint8_t pattern_byte(std::uint64_t seed, std::uint64_t i) {
  return static_cast<std::uint8_t>((i * 131 + seed * 7 + (i >> 8)) & 0xff);
}

// A memfd of `size` bytes holding pattern `seed`; -1 on failure.
inline int pattern_memfd(std::uint64_t seed, std::size_t size) {
  const int fd = ::memfd_create("memd-test", MFD_CLOEXEC);
  if (fd < 0) return -1;
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = pattern_byte(seed, i);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      ::pwrite(fd, bytes.data(), size, 0) != static_cast<ssize_t>(size)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Descriptors this process has open now.
inline std::size_t open_descriptors() {
  std::size_t n = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++n;
    ::closedir(dir);
  }
  return n;
}

}  // namespace memd::testing
