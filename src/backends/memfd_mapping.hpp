// backends/memfd_mapping.hpp — anonymous memory with a file descriptor: a
// memfd mapped read/write MAP_SHARED.
//
// Memory that another process may map must be reachable by a descriptor, and
// a memfd is the one kind that needs no file system path and no cleanup when
// a process dies: its pages live while any descriptor or mapping of it does.
// Both backends build their shareable host memory (and the CUDA backend its
// pinned memory) on it. The descriptor is MFD_CLOEXEC so it never leaks into
// a program memd starts; exports are duplicated from it on purpose.
//
// Thread safety: pure functions over the values they are given.
#pragma once

#include <cstdint>

#include "memd/error.hpp"

namespace memd {

struct MemfdMapping {
  int fd = -1;
  void* ptr = nullptr;
  std::uint64_t size = 0;  // a multiple of the page size: the file's length and the mapping's
};

// The system page size (sysconf), the unit of host shareable segments.
std::uint64_t host_page_size() noexcept;

// A memfd of `bytes` rounded up to the page size, mapped read/write
// MAP_SHARED at its offset 0. `name` shows in /proc/PID/fd (as "memfd:NAME").
// Nothing is left open when it fails: ENOMEM is out_of_memory, running out of
// descriptors is unavailable, anything else backend_error.
Result<MemfdMapping> create_memfd_mapping(std::uint64_t bytes, const char* name);

// munmap, then close; both are attempted and the first failure is reported.
Result<void> destroy_memfd_mapping(const MemfdMapping& mapping);

// A new descriptor of the same memfd, close-on-exec (a process receiving it
// over a socket sets its own flags), for export_fd().
Result<int> duplicate_memfd(int fd);

}  // namespace memd
