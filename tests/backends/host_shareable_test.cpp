// Host backend shareable segments beyond the conformance suite: cpu RAM and
// SharedMemory, host:N capacity charged for them, a separate process that
// maps the exported memfd knowing nothing but its descriptor number, and
// exports racing a free.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend_conformance.hpp"
#include "backends/host/host_backend.hpp"
#include "backends/memfd_mapping.hpp"

extern char** environ;

namespace memd {
namespace {

using testing::pattern;

constexpr std::uint64_t kCapacity = 64 * kMiB;
constexpr const char* kChildFdVariable = "MEMD_SHAREABLE_CHILD_FD";
constexpr std::uint8_t kParentSeed = 31, kChildSeed = 32;

std::unique_ptr<Backend> make_backend() {
  BackendOptions options;
  options.host_device_sizes = {kCapacity};
  options.enable_cuda = false;
  return make_host_backend(options);
}

std::uint64_t page() { return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)); }

TEST(HostShareable, CpuRamAndSharedMemoryAreShareable) {
  auto backend = make_backend();
  for (auto type : {MemoryType::RAM, MemoryType::SharedMemory}) {
    SCOPED_TRACE(std::string(to_string(type)));
    const auto before = backend->physical_bytes(DeviceId::cpu());
    auto s = backend->allocate_shareable(DeviceId::cpu(), type, 5000);
    ASSERT_TRUE(s.has_value()) << s.error().message;
    EXPECT_EQ(s->kind, ShareableKind::Memfd);
    EXPECT_EQ(s->segment.size, (5000 + page() - 1) / page() * page());
    EXPECT_EQ(backend->physical_bytes(DeviceId::cpu()), before + s->segment.size);
    std::memset(s->segment.ptr, 0x5C, s->segment.size);
    auto fd = backend->export_fd(*s);
    ASSERT_TRUE(fd.has_value()) << fd.error().message;
    auto* other = static_cast<unsigned char*>(
        ::mmap(nullptr, s->segment.size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0));
    ASSERT_NE(static_cast<void*>(other), MAP_FAILED);
    EXPECT_EQ(other[s->segment.size - 1], 0x5C);
    other[0] = 0x11;
    EXPECT_EQ(static_cast<unsigned char*>(s->segment.ptr)[0], 0x11);
    ::munmap(other, s->segment.size);
    ::close(*fd);
    ASSERT_TRUE(backend->free_shareable(*s).has_value());
    EXPECT_EQ(backend->physical_bytes(DeviceId::cpu()), before);
  }
  // Managed memory cannot be exported, and cpu has no VRAM.
  EXPECT_EQ(backend->allocate_shareable(DeviceId::cpu(), MemoryType::UnifiedMemory, 4096).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(backend->allocate_shareable(DeviceId::cpu(), MemoryType::VRAM, 4096).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(backend->allocate_shareable(DeviceId::cuda(0), MemoryType::VRAM, 4096).error().code,
            ErrorCode::not_found);
}

// Shareable bytes on host:N are committed bytes like mapped pages: they
// count against its capacity and come back on free.
TEST(HostShareable, HostDeviceCapacityCountsShareableSegments) {
  auto backend = make_backend();
  auto& b = *backend;
  const auto device = DeviceId::host(0);
  {
    auto over = b.allocate_shareable(device, MemoryType::VRAM, kCapacity + 1);
    ASSERT_FALSE(over.has_value());
    EXPECT_EQ(over.error().code, ErrorCode::out_of_memory) << over.error().message;
  }
  EXPECT_EQ(b.physical_bytes(device), 0u);
  auto first = b.allocate_shareable(device, MemoryType::VRAM, 40 * kMiB);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  EXPECT_EQ(b.memory_info(device)->used_bytes, 40 * kMiB);
  EXPECT_EQ(b.devices()[0].free_bytes, kCapacity - 40 * kMiB);
  {
    auto second = b.allocate_shareable(device, MemoryType::VRAM, 30 * kMiB);
    ASSERT_FALSE(second.has_value());
    EXPECT_EQ(second.error().code, ErrorCode::out_of_memory) << second.error().message;
  }
  // Mapped pages and shareable segments share the one capacity.
  auto range = b.reserve(device, 32 * kMiB);
  ASSERT_TRUE(range.has_value());
  ASSERT_TRUE(b.map(*range, 0, 24 * kMiB).has_value());
  {
    auto full = b.map(*range, 24 * kMiB, 2 * kMiB);
    ASSERT_FALSE(full.has_value());
    EXPECT_EQ(full.error().code, ErrorCode::out_of_memory);
  }
  ASSERT_TRUE(b.free_shareable(*first).has_value());
  EXPECT_EQ(b.physical_bytes(device), 24 * kMiB) << "the shareable bytes came back";
  auto second = b.allocate_shareable(device, MemoryType::VRAM, 30 * kMiB);
  ASSERT_TRUE(second.has_value()) << second.error().message;
  EXPECT_EQ(b.physical_bytes(device), 54 * kMiB);
  ASSERT_TRUE(b.free_shareable(*second).has_value());
  ASSERT_TRUE(b.release(*range).has_value());
  EXPECT_EQ(b.physical_bytes(device), 0u);
}

// The half of AChildProcessMapsTheDescriptor that runs in the child, after
// exec: it knows only the descriptor's number (from the environment), maps
// it, checks the parent's bytes and writes its own. Skips when run directly.
TEST(HostShareableChild, MapsTheInheritedDescriptor) {
  const char* text = std::getenv(kChildFdVariable);
  if (text == nullptr) GTEST_SKIP() << "runs only as the child of HostShareable.AChildProcessMapsTheDescriptor";
  const int fd = std::atoi(text);
  struct stat st {};
  ASSERT_EQ(::fstat(fd, &st), 0) << "descriptor " << fd << " was not inherited";
  const auto n = static_cast<std::size_t>(st.st_size);
  void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(m, MAP_FAILED);
  EXPECT_EQ(std::memcmp(m, pattern(n, kParentSeed).data(), n), 0) << "the child sees the parent's bytes";
  std::memcpy(m, pattern(n, kChildSeed).data(), n);
  ::munmap(m, n);
  ::close(fd);
}

// A separate program (this test binary, exec'd) receives nothing but the
// number of an exported descriptor, as after SCM_RIGHTS: it maps the memfd,
// sees memd's bytes, and memd sees what it writes.
TEST(HostShareable, AChildProcessMapsTheDescriptor) {
  auto backend = make_backend();
  for (auto [device, type] : {std::pair{DeviceId::host(0), MemoryType::VRAM},
                              std::pair{DeviceId::cpu(), MemoryType::SharedMemory}}) {
    SCOPED_TRACE(device.to_string());
    auto s = backend->allocate_shareable(device, type, 3 * kMiB + 5);
    ASSERT_TRUE(s.has_value()) << s.error().message;
    const auto n = static_cast<std::size_t>(s->segment.size);
    std::memcpy(s->segment.ptr, pattern(n, kParentSeed).data(), n);
    auto fd = backend->export_fd(*s);
    ASSERT_TRUE(fd.has_value()) << fd.error().message;

    // Everything the child needs is built before fork: between fork and exec
    // only async-signal-safe calls are allowed.
    const std::string variable = std::string(kChildFdVariable) + "=" + std::to_string(*fd);
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::strncmp(*e, "GTEST_OUTPUT=", 13) != 0) env.push_back(*e);  // the parent's report is its own
    env.push_back(const_cast<char*>(variable.c_str()));
    env.push_back(nullptr);
    char exe[] = "/proc/self/exe";
    char filter[] = "--gtest_filter=HostShareableChild.MapsTheInheritedDescriptor";
    char brief[] = "--gtest_brief=1";
    char* argv[] = {exe, filter, brief, nullptr};
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Exports are close-on-exec; this one is meant to cross the exec.
      ::fcntl(*fd, F_SETFD, 0);
      ::execve(exe, argv, env.data());
      ::_exit(127);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's checks failed";
    EXPECT_EQ(std::memcmp(s->segment.ptr, pattern(n, kChildSeed).data(), n), 0)
        << "memd sees the child's bytes";
    ::close(*fd);
    ASSERT_TRUE(backend->free_shareable(*s).has_value());
  }
}

// export_fd and free_shareable racing: every export is a descriptor of the
// segment's memfd (never a recycled number of some other file) or not_found.
TEST(HostShareable, ExportsRacingAFreeGetTheMemfdOrNotFound) {
  auto backend = make_backend();
  for (int round = 0; round < 50; ++round) {
    auto s = backend->allocate_shareable(DeviceId::cpu(), MemoryType::RAM, 3 * page());
    ASSERT_TRUE(s.has_value()) << s.error().message;
    std::atomic<int> wrong{0};
    std::atomic<bool> go{false};
    std::thread exporter([&] {
      while (!go.load()) std::this_thread::yield();
      for (;;) {
        auto fd = backend->export_fd(*s);
        if (!fd) {
          if (fd.error().code != ErrorCode::not_found) ++wrong;
          return;
        }
        struct stat st {};
        if (::fstat(*fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) != 3 * page()) ++wrong;
        ::close(*fd);
      }
    });
    // Meanwhile descriptors come and go here, so a closed number gets reused.
    go = true;
    for (int k = 0; k < round % 7; ++k) ::close(::dup(STDERR_FILENO));
    ASSERT_TRUE(backend->free_shareable(*s).has_value());
    exporter.join();
    EXPECT_EQ(wrong.load(), 0);
  }
}

}  // namespace
}  // namespace memd
