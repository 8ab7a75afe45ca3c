// A memfd mapped MAP_SHARED: shareable host memory for both backends.
#include "backends/memfd_mapping.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "backends/page_run.hpp"
#include "memd/size.hpp"

namespace memd {
namespace {

std::string errno_text(int error) { return std::system_category().message(error); }

ErrorCode code_of(int error) {
  if (error == ENOMEM) return ErrorCode::out_of_memory;
  if (error == EMFILE || error == ENFILE) return ErrorCode::unavailable;
  return ErrorCode::backend_error;
}

}  // namespace

std::uint64_t host_page_size() noexcept {
  static const std::uint64_t size = [] {
    const long page = ::sysconf(_SC_PAGESIZE);
    return page > 0 ? static_cast<std::uint64_t>(page) : std::uint64_t{4096};
  }();
  return size;
}

Result<MemfdMapping> create_memfd_mapping(std::uint64_t bytes, const char* name) {
  if (bytes == 0) return fail(ErrorCode::invalid_argument, "cannot map a memfd of 0 bytes");
  if (bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "{} bytes exceeds the largest request", bytes);
  MemfdMapping m;
  m.size = round_up(bytes, host_page_size());
  m.fd = ::memfd_create(name, MFD_CLOEXEC);
  if (m.fd < 0) {
    const int error = errno;
    return fail(code_of(error), "memfd_create for {} bytes failed: {}", m.size, errno_text(error));
  }
  // The file's length is set once: pages past it would SIGBUS in a mapping.
  if (::ftruncate(m.fd, static_cast<off_t>(m.size)) != 0) {
    const int error = errno;
    ::close(m.fd);
    return fail(code_of(error), "ftruncate of a memfd to {} bytes failed: {}", m.size,
                errno_text(error));
  }
  m.ptr = ::mmap(nullptr, m.size, PROT_READ | PROT_WRITE, MAP_SHARED, m.fd, 0);
  if (m.ptr == MAP_FAILED) {
    const int error = errno;
    ::close(m.fd);
    return fail(code_of(error), "mmap of a {}-byte memfd failed: {}", m.size, errno_text(error));
  }
  return m;
}

Result<void> destroy_memfd_mapping(const MemfdMapping& mapping) {
  Result<void> result;
  if (mapping.ptr != nullptr && ::munmap(mapping.ptr, mapping.size) != 0)
    result = fail(ErrorCode::backend_error, "munmap of a {}-byte memfd at {} failed: {}",
                  mapping.size, mapping.ptr, errno_text(errno));
  if (mapping.fd >= 0 && ::close(mapping.fd) != 0 && result)
    result = fail(ErrorCode::backend_error, "close of memfd {} failed: {}", mapping.fd,
                  errno_text(errno));
  return result;
}

Result<int> duplicate_memfd(int fd) {
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (copy < 0) {
    const int error = errno;
    return fail(code_of(error), "duplicating memfd {} failed: {}", fd, errno_text(error));
  }
  return copy;
}

}  // namespace memd
