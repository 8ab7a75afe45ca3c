// models/model_file.cpp — see model_file.hpp.
#include "models/model_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace memd {
namespace {

FileIdentity identity_of(const struct stat& st) {
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino),
          static_cast<std::uint64_t>(st.st_size),
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

}  // namespace

Result<ModelFile> ModelFile::open(const std::filesystem::path& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
  // below, once fstat says what it is).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT || e == ENOTDIR) return fail(ErrorCode::not_found, "no model file {}", path.string());
    if (e == EACCES || e == EPERM) return fail(ErrorCode::permission_denied, "cannot read model file {}", path.string());
    if (e == ELOOP) return fail(ErrorCode::invalid_argument, "model file {} is a symbolic link", path.string());
    return fail(ErrorCode::backend_error, "open {}: {}", path.string(), std::strerror(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return fail(ErrorCode::backend_error, "fstat {}: {}", path.string(), std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(ErrorCode::invalid_argument, "model file {} is not a regular file", path.string());
  }
  // Reads block from here on (a regular file ignores O_NONBLOCK anyway).
  (void)::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return ModelFile(fd, path, identity_of(st));
}

ModelFile::ModelFile(ModelFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)), identity_(other.identity_) {}

ModelFile& ModelFile::operator=(ModelFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    identity_ = other.identity_;
  }
  return *this;
}

ModelFile::~ModelFile() {
  if (fd_ >= 0) ::close(fd_);
}

Result<void> ModelFile::read_at(std::uint64_t offset, std::span<std::byte> out) const {
  if (fd_ < 0) return fail(ErrorCode::invalid_argument, "read of a closed model file");
  if (offset > identity_.size || out.size() > identity_.size - offset)
    return fail(ErrorCode::invalid_argument, "{}: read of {} bytes at {} is past its end ({} bytes)", path_.string(),
                out.size(), offset, identity_.size);
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::backend_error, "{}: read at {}: {}", path_.string(), offset + done, std::strerror(errno));
    }
    if (n == 0)
      return fail(ErrorCode::invalid_file, "{}: ends at {} bytes, {} expected (truncated while in use?)",
                  path_.string(), offset + done, identity_.size);
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Result<FileIdentity> ModelFile::current_identity() const {
  struct stat st {};
  if (fd_ < 0 || ::fstat(fd_, &st) != 0)
    return fail(ErrorCode::backend_error, "fstat {}: {}", path_.string(), std::strerror(errno));
  return identity_of(st);
}

Result<FileIdentity> identify_file(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return fail(ErrorCode::not_found, "no model file {}", path.string());
    return fail(ErrorCode::backend_error, "stat {}: {}", path.string(), std::strerror(errno));
  }
  return identity_of(st);
}

}  // namespace memd
