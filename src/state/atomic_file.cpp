// state/atomic_file.cpp — see atomic_file.hpp.
#include "state/atomic_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace memd {
namespace {

namespace fs = std::filesystem;

ErrorCode code_of(int e) { return e == EACCES || e == EPERM ? ErrorCode::permission_denied : ErrorCode::backend_error; }

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

Result<void> write_file_atomically(const fs::path& path, std::string_view bytes, mode_t mode) {
  static std::atomic<std::uint64_t> counter{0};
  const fs::path tmp = path.string() + fmt::format(".tmp.{}.{}", ::getpid(), counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return fail(code_of(errno), "create {}: {}", tmp.string(), std::strerror(errno));
  auto abandon = [&](std::string_view what, int e) -> Result<void> {
    ::close(fd);
    ::unlink(tmp.c_str());
    return fail(code_of(e), "{} {}: {}", what, tmp.string(), std::strerror(e));
  };
  // The umask may have taken bits the caller asked for; never more than asked.
  if (::fchmod(fd, mode) != 0) return abandon("chmod", errno);
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return abandon("write", errno);
    }
    done += static_cast<std::size_t>(n);
  }
  // Data on disk before the name points at it: after a crash the target is
  // the old file or the new one, never a new name over missing data.
  if (::fsync(fd) != 0) return abandon("fsync", errno);
  if (::close(fd) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return fail(code_of(e), "close {}: {}", tmp.string(), std::strerror(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return fail(code_of(e), "rename {} to {}: {}", tmp.string(), path.string(), std::strerror(e));
  }
  // The rename durable: without this a crash could bring the old name back.
  fs::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fail(code_of(errno), "open directory {}: {}", dir.string(), std::strerror(errno));
  const int synced = ::fsync(dfd);
  const int e = errno;
  ::close(dfd);
  // Some filesystems refuse fsync on a directory (EINVAL); the rename is
  // then as durable as they make it.
  if (synced != 0 && e != EINVAL)
    return fail(code_of(e), "fsync directory {}: {}", dir.string(), std::strerror(e));
  return {};
}

Result<std::string> read_file_bounded(const fs::path& path, std::uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return fail(ErrorCode::not_found, "{} does not exist", path.string());
    if (errno == ELOOP) return fail(ErrorCode::invalid_argument, "{} is a symbolic link", path.string());
    return fail(code_of(errno), "open {}: {}", path.string(), std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(code_of(errno), "stat {}: {}", path.string(), std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(ErrorCode::invalid_argument, "{} is not a regular file", path.string());
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
    return fail(ErrorCode::invalid_argument, "{} is {} bytes, over the limit of {}", path.string(), st.st_size,
                max_bytes);
  std::string text;
  text.reserve(static_cast<std::size_t>(st.st_size));
  char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(code_of(errno), "read {}: {}", path.string(), std::strerror(errno));
    }
    if (n == 0) break;
    // A file growing under us is held to the same bound.
    if (text.size() + static_cast<std::size_t>(n) > max_bytes)
      return fail(ErrorCode::invalid_argument, "{} grew past the limit of {} bytes while read", path.string(),
                  max_bytes);
    text.append(buf, static_cast<std::size_t>(n));
  }
  return text;
}

Result<fs::path> set_aside(const fs::path& path, std::chrono::system_clock::time_point now) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  const std::string base = path.string() + ".bad-" + stamp;
  for (int i = 0; i < 1000; ++i) {
    const fs::path to = i == 0 ? fs::path(base) : fs::path(fmt::format("{}-{}", base, i));
    struct stat st {};
    if (::lstat(to.c_str(), &st) == 0) continue;  // taken: the next suffix
    // link + unlink rather than rename: rename would replace a file that
    // appeared since the lstat; link refuses to.
    if (::link(path.c_str(), to.c_str()) != 0) {
      if (errno == EEXIST) continue;
      // Filesystems without hard links: rename (the race above is harmless
      // in a directory only this daemon writes).
      if (::rename(path.c_str(), to.c_str()) != 0)
        return fail(code_of(errno), "rename {} to {}: {}", path.string(), to.string(), std::strerror(errno));
      return to;
    }
    if (::unlink(path.c_str()) != 0)
      return fail(code_of(errno), "remove {} after copying it to {}: {}", path.string(), to.string(),
                  std::strerror(errno));
    return to;
  }
  return fail(ErrorCode::conflict, "{}: a thousand set-aside copies already exist for this second", path.string());
}

std::size_t remove_leftover_temporaries(const fs::path& dir) {
  std::size_t removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // <name>.tmp.<pid>.<counter>
    const auto at = name.rfind(".tmp.");
    if (at == std::string::npos || at == 0) continue;
    const std::string_view tail = std::string_view(name).substr(at + 5);
    const auto dot = tail.find('.');
    if (dot == std::string_view::npos || !all_digits(tail.substr(0, dot)) || !all_digits(tail.substr(dot + 1)))
      continue;
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec) || it->is_symlink(type_ec)) continue;
    if (std::error_code rm; fs::remove(it->path(), rm)) ++removed;
  }
  return removed;
}

Result<DirectoryLock> DirectoryLock::acquire(const fs::path& dir) {
  const fs::path path = dir / kFileName;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return fail(code_of(errno), "open {}: {}", path.string(), std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int e = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    ::close(fd);
    std::string holder(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!holder.empty() && std::isspace(static_cast<unsigned char>(holder.back()))) holder.pop_back();
    if (e == EWOULDBLOCK)
      return fail(ErrorCode::conflict, "state directory {} is in use by another memd{}", dir.string(),
                  all_digits(holder) ? " (pid " + holder + ")" : "");
    return fail(code_of(e), "lock {}: {}", path.string(), std::strerror(e));
  }
  // Who holds it, for the next one's message (the lock is the flock, not this).
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, pid.data(), pid.size(), 0);
  return DirectoryLock(fd);
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor drops the flock
}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

}  // namespace memd
