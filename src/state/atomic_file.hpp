// state/atomic_file.hpp — files that survive a crash whole or not at all,
// and the state directory's other file rules.
//
// write_file_atomically() is the one way memd replaces a file it keeps
// across restarts (the --state-dir files, the content-hash cache):
//   1. a temporary beside the target (same directory, so the rename below
//      stays within one filesystem), created O_EXCL with a name unique per
//      process and call: `<name>.tmp.<pid>.<n>`;
//   2. every byte written, then fsync of the temporary (its data on disk
//      before any name points at it);
//   3. rename over the target (atomic: a reader or a crash sees the old file
//      or the new one, never a mix or a truncated one);
//   4. fsync of the directory (the rename itself durable).
// A failure at any step removes the temporary and leaves the target as it
// was. A crash between 1 and 3 leaves a `.tmp.` file that no reader opens;
// remove_leftover_temporaries() deletes them at the next start.
//
// read_file_bounded() reads a whole file but refuses one over a size (a
// hostile or runaway file must not make memd allocate without bound), and
// tells a missing file (not_found) apart from an unreadable one.
// set_aside() renames a file memd refused to `<name>.bad-<UTC time>` so the
// operator can look at it and the next save does not overwrite it.
// DirectoryLock holds an exclusive flock on `<dir>/memd.lock` so two daemons
// never share one state directory (the kernel drops it when the process
// dies, SIGKILL included).
//
// Thread safety: free functions are reentrant; a DirectoryLock is a value
// owned by one thread at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "memd/error.hpp"

namespace memd {

// Replaces `path` with `bytes` as described above; `mode` for the new file.
// backend_error naming the step and the file when one fails.
Result<void> write_file_atomically(const std::filesystem::path& path, std::string_view bytes, mode_t mode = 0600);

// The whole file. not_found when it does not exist; invalid_argument when it
// is not a regular file or is over `max_bytes`; permission_denied or
// backend_error when it cannot be read.
Result<std::string> read_file_bounded(const std::filesystem::path& path, std::uint64_t max_bytes);

// Renames `path` to `<path>.bad-YYYYMMDDTHHMMSSZ` (then `-1`, `-2`, ... if
// that exists) and returns the new path.
Result<std::filesystem::path> set_aside(const std::filesystem::path& path,
                                        std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// Deletes what an interrupted write_file_atomically() left in `dir`: regular
// files named `<name>.tmp.<digits>.<digits>`. Returns how many went.
std::size_t remove_leftover_temporaries(const std::filesystem::path& dir);

class DirectoryLock {
 public:
  static constexpr std::string_view kFileName = "memd.lock";
  // conflict when another process (or another lock in this one) holds it;
  // the message names the directory and the holder's pid when known.
  static Result<DirectoryLock> acquire(const std::filesystem::path& dir);
  DirectoryLock() = default;
  ~DirectoryLock();
  DirectoryLock(DirectoryLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  bool held() const noexcept { return fd_ >= 0; }

 private:
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace memd
