// libFuzzer target: arbitrary bytes as an allocation trace file (plain or
// gzip). Loading must return a trace or an error, never crash, and a loaded
// trace must be self-consistent.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "trace.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  int fd = memfd_create("trace", 0);
  if (fd < 0) std::abort();
  if (size > 0 && ::write(fd, data, size) != static_cast<ssize_t>(size)) std::abort();
  auto trace = memd::replay::load_trace("/proc/self/fd/" + std::to_string(fd));
  ::close(fd);
  if (trace) {
    std::uint64_t allocations = 0;
    for (const auto& op : trace->ops) {
      if (op.slot >= trace->slots) std::abort();
      allocations += op.allocate;
    }
    if (allocations != trace->allocations) std::abort();
  }
  return 0;
}
