// models/model_file.hpp — one model file opened for reading, with its
// identity, read with pread only.
//
// Model files are read with pread, never mmap: a file truncated or replaced
// under memd gives an error on the read that crosses its end, never a
// SIGBUS in whichever thread touched the mapping. Every read is bounds-checked
// against the size seen at open, and a read that comes back short (the file
// shrank since) is an error that says so.
//
// FileIdentity (device, inode, size, modification time) is what the content
// hash cache is keyed by and what a load re-checks before and after it reads
// a component's bytes (and a restore from the Disk tier before): a file
// replaced or rewritten in place reads as a different identity.
//
// Thread safety: a ModelFile is immutable after open; read_at() may be called
// from any number of threads at once (pread has no shared file position).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "memd/error.hpp"

namespace memd {

struct FileIdentity {
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;  // st_mtim, in nanoseconds since the epoch
  bool operator==(const FileIdentity&) const = default;
};

class ModelFile {
 public:
  // Opens a regular file read-only (O_CLOEXEC | O_NOFOLLOW on the last
  // component: a symlink is resolved by the caller's confinement check, not
  // here). not_found when it does not exist; invalid_argument when it is not
  // a regular file (a FIFO, a device, a directory); permission_denied when
  // it cannot be read.
  static Result<ModelFile> open(const std::filesystem::path& path);

  ModelFile() = default;
  ModelFile(ModelFile&& other) noexcept;
  ModelFile& operator=(ModelFile&& other) noexcept;
  ModelFile(const ModelFile&) = delete;
  ModelFile& operator=(const ModelFile&) = delete;
  ~ModelFile();

  const std::filesystem::path& path() const noexcept { return path_; }
  // As seen at open.
  std::uint64_t size() const noexcept { return identity_.size; }
  const FileIdentity& identity() const noexcept { return identity_; }
  int fd() const noexcept { return fd_; }

  // Fills `out` with the bytes at `offset`. invalid_argument when the range
  // is not inside the size seen at open; invalid_file when the file ends
  // early (it was truncated since: the file changed under memd, the code's
  // meaning); backend_error for an I/O error.
  Result<void> read_at(std::uint64_t offset, std::span<std::byte> out) const;

  // The file's identity now (fstat of the open descriptor): compare with
  // identity() to see whether it changed in place since open.
  Result<FileIdentity> current_identity() const;

 private:
  ModelFile(int fd, std::filesystem::path path, FileIdentity identity)
      : fd_(fd), path_(std::move(path)), identity_(identity) {}
  int fd_ = -1;
  std::filesystem::path path_;
  FileIdentity identity_;
};

// The identity of the file at `path` now (stat, following symlinks).
Result<FileIdentity> identify_file(const std::filesystem::path& path);

}  // namespace memd
