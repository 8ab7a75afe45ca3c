// Host backend: the shared conformance suite on host:0, plus what only the
// host backend promises (/proc/meminfo, the cpu device, catalog routing when
// no GPU exists, option validation, zeroed pages after remap, exact capacity
// exhaustion).
#include <gtest/gtest.h>

#include <cstring>

#include "backends/backend_conformance.hpp"
#include "backends/device_catalog.hpp"
#include "backends/host/host_backend.hpp"
#include "backends/host/meminfo.hpp"
#include "backends/host/stream_worker.hpp"

namespace memd {
namespace {

constexpr std::uint64_t kTestCapacity = 64 * kMiB;
constexpr std::uint64_t kTestGranularity = 2 * kMiB;

BackendOptions test_options(std::size_t host_devices = 1) {
  BackendOptions options;
  options.host_device_sizes.assign(host_devices, kTestCapacity);
  options.host_granularity = kTestGranularity;
  options.enable_cuda = false;
  return options;
}

struct HostTraits {
  static std::unique_ptr<Backend> make() { return make_host_backend(test_options()); }
  static DeviceId device() { return DeviceId::host(0); }
  static std::string skip_message() { return "host:0 missing from the host backend (a bug)"; }
};

// A finer granularity too: the allocator above may configure 64 KiB pages.
struct HostSmallPageTraits {
  static std::unique_ptr<Backend> make() {
    auto options = test_options();
    options.host_granularity = 64 * kKiB;
    options.host_device_sizes = {40 * kMiB};
    return make_host_backend(options);
  }
  static DeviceId device() { return DeviceId::host(0); }
  static std::string skip_message() { return "host:0 missing from the host backend (a bug)"; }
};

}  // namespace

namespace testing {
INSTANTIATE_TYPED_TEST_SUITE_P(Host, BackendConformance, ::memd::HostTraits);
INSTANTIATE_TYPED_TEST_SUITE_P(HostSmallPages, BackendConformance, ::memd::HostSmallPageTraits);
}  // namespace testing

namespace {

constexpr const char* kSampleMeminfo =
    "MemTotal:       16318152 kB\n"
    "MemFree:         1234567 kB\n"
    "MemAvailable:    9876543 kB\n"
    "Buffers:          345678 kB\n"
    "HugePages_Total:       0\n";

TEST(HostMeminfo, ParsesTotalAndAvailableInBytes) {
  auto mem = parse_meminfo(kSampleMeminfo);
  ASSERT_TRUE(mem.has_value()) << mem.error().message;
  EXPECT_EQ(mem->total_bytes, 16318152ull * 1024);
  EXPECT_EQ(mem->available_bytes, 9876543ull * 1024);
}

TEST(HostMeminfo, RejectsMissingOrMalformedFields) {
  EXPECT_FALSE(parse_meminfo("MemTotal: 100 kB\n").has_value());
  EXPECT_FALSE(parse_meminfo("MemAvailable: 100 kB\n").has_value());
  EXPECT_FALSE(parse_meminfo("").has_value());
  EXPECT_FALSE(parse_meminfo("MemTotal: lots kB\nMemAvailable: 1 kB\n").has_value());
  EXPECT_FALSE(parse_meminfo("MemTotal: 100 MB\nMemAvailable: 1 kB\n").has_value());
  EXPECT_FALSE(parse_meminfo("MemTotal: 100 kB\nMemAvailable: 200 kB\n").has_value());
  auto e = parse_meminfo("MemTotal: 100 kB\n");
  EXPECT_EQ(e.error().code, ErrorCode::invalid_argument);
  // No trailing newline and CRLF are both fine.
  EXPECT_TRUE(parse_meminfo("MemTotal: 100 kB\r\nMemAvailable: 50 kB").has_value());
}

TEST(HostMeminfo, ReadsThisMachine) {
  auto mem = read_meminfo();
  ASSERT_TRUE(mem.has_value()) << mem.error().message;
  EXPECT_GT(mem->total_bytes, 64 * kMiB);
  EXPECT_LE(mem->available_bytes, mem->total_bytes);
}

TEST(HostBackend, ListsCpuAndEachHostDevice) {
  auto backend = make_host_backend(test_options(3));
  EXPECT_EQ(backend->name(), "host");
  auto devices = backend->devices();
  ASSERT_EQ(devices.size(), 4u);
  int host_seen = 0;
  for (const auto& d : devices) {
    EXPECT_EQ(d.backend, "host");
    if (d.id.kind() == DeviceKind::Cpu) {
      EXPECT_EQ(d.name, "system RAM");
      EXPECT_FALSE(d.simulated);
      EXPECT_FALSE(d.virtual_memory);
      EXPECT_EQ(d.granularity, 0u);
      EXPECT_GT(d.total_bytes, 0u);
      EXPECT_LE(d.free_bytes, d.total_bytes);
      EXPECT_EQ(d.memory_types, (std::vector<MemoryType>{MemoryType::RAM, MemoryType::SharedMemory,
                                                          MemoryType::UnifiedMemory}));
    } else {
      ASSERT_EQ(d.id.kind(), DeviceKind::Host);
      EXPECT_EQ(d.id.index(), host_seen++);
      EXPECT_EQ(d.name, "host-backed device");
      EXPECT_TRUE(d.simulated);
      EXPECT_TRUE(d.virtual_memory);
      EXPECT_EQ(d.total_bytes, kTestCapacity);
      EXPECT_EQ(d.free_bytes, kTestCapacity);
      EXPECT_EQ(d.granularity, kTestGranularity);
      EXPECT_EQ(d.memory_types, std::vector<MemoryType>{MemoryType::VRAM});
    }
  }
  EXPECT_EQ(host_seen, 3);
  auto none = make_host_backend(test_options(0));
  ASSERT_EQ(none->devices().size(), 1u);
  EXPECT_EQ(none->devices()[0].id, DeviceId::cpu());
}

// host:N's capacity is host_device_sizes[N], each enforced on its own.
TEST(HostBackend, HostDevicesHaveTheirOwnSizes) {
  auto options = test_options();
  options.host_device_sizes = {64 * kMiB, 32 * kMiB, 128 * kMiB};
  auto backend = make_host_backend(options);
  auto devices = backend->devices();
  ASSERT_EQ(devices.size(), 4u);
  for (std::size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(devices[i].id, DeviceId::host(static_cast<int>(i)));
    EXPECT_EQ(devices[i].total_bytes, options.host_device_sizes[i]);
    EXPECT_EQ(devices[i].free_bytes, options.host_device_sizes[i]);
    auto info = backend->memory_info(devices[i].id);
    ASSERT_TRUE(info.has_value()) << info.error().message;
    EXPECT_EQ(info->total_bytes, options.host_device_sizes[i]);
  }
  const auto g = kTestGranularity;
  auto small = backend->reserve(DeviceId::host(1), 64 * kMiB);
  ASSERT_TRUE(small.has_value()) << small.error().message;
  ASSERT_TRUE(backend->map(*small, 0, 32 * kMiB).has_value()) << "host:1 holds its 32 MiB";
  auto over = backend->map(*small, 32 * kMiB, g);
  ASSERT_FALSE(over.has_value());
  EXPECT_EQ(over.error().code, ErrorCode::out_of_memory);
  EXPECT_NE(over.error().message.find("host:1"), std::string::npos) << over.error().message;
  // The other devices are not charged for host:1's pages.
  auto big = backend->reserve(DeviceId::host(0), 64 * kMiB);
  ASSERT_TRUE(big.has_value());
  ASSERT_TRUE(backend->map(*big, 0, 64 * kMiB).has_value());
  auto segment = backend->allocate(DeviceId::host(2), MemoryType::VRAM, 100 * kMiB);
  ASSERT_TRUE(segment.has_value()) << segment.error().message;
  EXPECT_EQ(backend->physical_bytes(DeviceId::host(0)), 64 * kMiB);
  EXPECT_EQ(backend->physical_bytes(DeviceId::host(1)), 32 * kMiB);
  EXPECT_EQ(backend->physical_bytes(DeviceId::host(2)), 100 * kMiB);
  EXPECT_EQ(backend->memory_info(DeviceId::host(2))->free_bytes, 28 * kMiB);
  ASSERT_TRUE(backend->free(*segment).has_value());
  ASSERT_TRUE(backend->release(*small).has_value());
  ASSERT_TRUE(backend->release(*big).has_value());
  EXPECT_FALSE(backend->memory_info(DeviceId::host(3)).has_value());
}

TEST(HostBackend, MemoryInfoOfCpuSeesOtherProcessesAndHostDevicesDoNot) {
  auto backend = make_host_backend(test_options());
  auto cpu = backend->memory_info(DeviceId::cpu());
  ASSERT_TRUE(cpu.has_value()) << cpu.error().message;
  EXPECT_TRUE(cpu->sees_other_processes);
  EXPECT_GT(cpu->total_bytes, 0u);
  EXPECT_EQ(cpu->used_bytes, cpu->total_bytes - cpu->free_bytes);

  auto seg = backend->allocate(DeviceId::host(0), MemoryType::VRAM, 3 * kMiB);
  ASSERT_TRUE(seg.has_value());
  auto host = backend->memory_info(DeviceId::host(0));
  ASSERT_TRUE(host.has_value());
  EXPECT_FALSE(host->sees_other_processes);
  EXPECT_EQ(host->total_bytes, kTestCapacity);
  EXPECT_EQ(host->used_bytes, 3 * kMiB);
  EXPECT_EQ(host->free_bytes, kTestCapacity - 3 * kMiB);
  EXPECT_EQ(backend->devices()[0].free_bytes, kTestCapacity - 3 * kMiB);
  ASSERT_TRUE(backend->free(*seg).has_value());
  EXPECT_EQ(backend->memory_info(DeviceId::cuda(0)).error().code, ErrorCode::not_found);
}

TEST(HostBackend, CpuSegmentsOfEveryTypeAreDirectlyAddressable) {
  auto backend = make_host_backend(test_options());
  for (auto type : {MemoryType::RAM, MemoryType::SharedMemory, MemoryType::UnifiedMemory}) {
    SCOPED_TRACE(std::string(to_string(type)));
    const auto before = backend->physical_bytes(DeviceId::cpu());
    auto seg = backend->allocate(DeviceId::cpu(), type, 5000);
    ASSERT_TRUE(seg.has_value()) << seg.error().message;
    std::memset(seg->ptr, 0x42, 5000);
    EXPECT_EQ(static_cast<unsigned char*>(seg->ptr)[4999], 0x42);
    EXPECT_EQ(backend->physical_bytes(DeviceId::cpu()), before + 5000);
    ASSERT_TRUE(backend->free(*seg).has_value());
    EXPECT_EQ(backend->physical_bytes(DeviceId::cpu()), before);
  }
  EXPECT_EQ(backend->allocate(DeviceId::cpu(), MemoryType::VRAM, 4096).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(backend->allocate(DeviceId::cpu(), MemoryType::RAM, 0).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(backend->reserve(DeviceId::cpu(), kTestGranularity).error().code,
            ErrorCode::invalid_argument);
  // cpu streams exist too: host-to-host copies are asynchronous like any other.
  auto stream = backend->create_stream(DeviceId::cpu());
  ASSERT_TRUE(stream.has_value());
  ASSERT_TRUE(backend->destroy_stream(*stream).has_value());
}

TEST(HostBackend, RemappedPagesReadAsZero) {
  auto backend = make_host_backend(test_options());
  auto range = backend->reserve(DeviceId::host(0), 2 * kTestGranularity);
  ASSERT_TRUE(range.has_value());
  ASSERT_TRUE(backend->map(*range, 0, kTestGranularity).has_value());
  ASSERT_TRUE(backend->map(*range, kTestGranularity, kTestGranularity).has_value());
  auto* bytes = reinterpret_cast<unsigned char*>(range->base);
  std::memset(bytes, 0xFF, 2 * kTestGranularity);
  ASSERT_TRUE(backend->unmap(*range, 0, kTestGranularity).has_value());
  ASSERT_TRUE(backend->map(*range, 0, kTestGranularity).has_value());
  EXPECT_EQ(bytes[0], 0);
  EXPECT_EQ(bytes[kTestGranularity - 1], 0);
  EXPECT_EQ(bytes[kTestGranularity], 0xFF) << "the untouched page keeps its bytes";
  ASSERT_TRUE(backend->release(*range).has_value());
}

// Filling a device to the byte is only safe on a host-backed one: a real GPU
// is shared with everything else on it.
TEST(HostBackend, CapacityExhaustionIsOutOfMemory) {
  for (const std::uint64_t granularity : {kTestGranularity, 64 * kKiB}) {
    SCOPED_TRACE(granularity);
    auto options = test_options();
    options.host_granularity = granularity;
    auto backend = make_host_backend(options);
    auto& b = *backend;
    const auto device = DeviceId::host(0);
    const auto g = granularity;
    const auto capacity = kTestCapacity / g * g;
    auto range = b.reserve(device, capacity + 2 * g);
    ASSERT_TRUE(range.has_value()) << range.error().message;
    // Two units, so one of them can be given back below.
    ASSERT_TRUE(b.map(*range, 0, g).has_value());
    ASSERT_TRUE(b.map(*range, g, capacity - g).has_value());
    {
      auto over = b.map(*range, capacity, g);
      ASSERT_FALSE(over.has_value());
      EXPECT_EQ(over.error().code, ErrorCode::out_of_memory);
      EXPECT_NE(over.error().message.find(std::to_string(kTestCapacity)), std::string::npos)
          << "the message explains with numbers: " << over.error().message;
    }
    EXPECT_EQ(b.physical_bytes(device), capacity) << "the failed map changed nothing";
    auto segment = b.allocate(device, MemoryType::VRAM, g);
    ASSERT_FALSE(segment.has_value());
    EXPECT_EQ(segment.error().code, ErrorCode::out_of_memory);
    auto info = b.memory_info(device);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->free_bytes, kTestCapacity - capacity);

    ASSERT_TRUE(b.unmap(*range, 0, g).has_value());
    ASSERT_TRUE(b.map(*range, capacity, g).has_value()) << "room again";
    ASSERT_TRUE(b.release(*range).has_value());
    EXPECT_EQ(b.physical_bytes(device), 0u);
  }
}

TEST(HostBackend, DestructionDrainsOutstandingWork) {
  std::vector<unsigned char> dst(32 * kMiB);
  std::vector<unsigned char> dst_default(32 * kMiB);  // two streams never share a target
  std::vector<unsigned char> src(32 * kMiB, 0x33);
  {
    auto backend = make_host_backend(test_options());
    auto stream = backend->create_stream(DeviceId::host(0));
    ASSERT_TRUE(stream.has_value());
    for (int i = 0; i < 8; ++i)
      ASSERT_TRUE(backend->copy(dst.data(), src.data(), dst.size(), *stream).has_value());
    ASSERT_TRUE(backend
                    ->copy(dst_default.data(), src.data(), dst.size(), Stream{DeviceId::host(0), 0})
                    .has_value());
    auto range = backend->reserve(DeviceId::host(0), kTestGranularity);
    ASSERT_TRUE(range.has_value());
    ASSERT_TRUE(backend->map(*range, 0, kTestGranularity).has_value());
    // backend goes out of scope with a stream, a range and queued copies
  }
  EXPECT_EQ(dst.front(), 0x33);
  EXPECT_EQ(dst.back(), 0x33);
  EXPECT_EQ(dst_default.back(), 0x33);
}

TEST(HostBackend, OptionsThatSkipCatalogValidationAreClamped) {
  BackendOptions options = test_options(0);
  options.host_granularity = 5000;  // not a power of two
  auto backend = make_host_backend(options);
  ASSERT_EQ(backend->devices().size(), 1u);  // cpu only
  options.host_device_sizes = {kTestCapacity};
  backend = make_host_backend(options);
  EXPECT_EQ(backend->devices()[0].granularity, 8192u);
  options.host_device_sizes.assign(100, kTestCapacity);
  backend = make_host_backend(options);
  EXPECT_EQ(backend->devices().size(), kMaxHostDevices + 1) << "64 host devices and cpu";
}

TEST(HostStreamWorker, RunsItemsInOrderAndAfterStop) {
  StreamWorker worker;
  std::vector<unsigned char> buf(1024, 0);
  const std::vector<unsigned char> ones(1024, 1);
  EXPECT_TRUE(worker.is_complete(0));
  worker.enqueue_fill(buf.data(), 7, buf.size());
  const auto seq = worker.enqueue_copy(buf.data(), ones.data(), 512);
  worker.wait_for(seq);
  EXPECT_EQ(buf[0], 1);
  EXPECT_EQ(buf[600], 7);
  worker.stop();
  worker.stop();  // idempotent
  const auto late = worker.enqueue_fill(buf.data(), 9, 4);
  EXPECT_TRUE(worker.is_complete(late)) << "work pushed after stop runs inline";
  EXPECT_EQ(buf[0], 9);
}

// --- device catalog ---------------------------------------------------------

TEST(DeviceCatalog, RoutesHostTypesToTheHostBackendWithoutAGpu) {
  BackendOptions options = test_options();
  options.enable_cuda = true;  // compiled in or not, this machine has no GPU
  auto catalog = DeviceCatalog::discover(options);
  ASSERT_TRUE(catalog.has_value()) << catalog.error().message;
  auto& c = **catalog;
  if (c.has_cuda_devices()) {
    // A GPU is present: the no-GPU routing does not apply, but RAM stays on host.
    EXPECT_EQ(c.default_device(), DeviceId::cuda(0));
    auto ram = c.backend_for(DeviceId::cpu(), MemoryType::RAM);
    ASSERT_TRUE(ram.has_value());
    EXPECT_EQ((*ram)->name(), "host");
    return;
  }
  EXPECT_EQ(c.default_device(), DeviceId::host(0));
  auto ram = c.backend_for(DeviceId::cpu(), MemoryType::RAM);
  ASSERT_TRUE(ram.has_value());
  EXPECT_EQ((*ram)->name(), "host");
  auto shared = c.backend_for(DeviceId::cpu(), MemoryType::SharedMemory);
  ASSERT_TRUE(shared.has_value());
  EXPECT_EQ((*shared)->name(), "host");
  auto unified = c.backend_for(DeviceId::cpu(), MemoryType::UnifiedMemory);
  ASSERT_TRUE(unified.has_value());
  EXPECT_EQ((*unified)->name(), "host");
  auto vram = c.backend_for(DeviceId::host(0), MemoryType::VRAM);
  ASSERT_TRUE(vram.has_value());
  EXPECT_EQ((*vram)->name(), "host");
  EXPECT_EQ(c.backend_for(DeviceId::host(0), MemoryType::RAM).error().code,
            ErrorCode::not_found);
  EXPECT_EQ(c.backend_for(DeviceId::cuda(0), MemoryType::VRAM).error().code, ErrorCode::not_found);
  EXPECT_EQ(c.backend_for(DeviceId::host(1), MemoryType::VRAM).error().code, ErrorCode::not_found);
  // host:0 before cpu: the order users see.
  ASSERT_EQ(c.devices().size(), 2u);
  EXPECT_EQ(c.devices()[0].id, DeviceId::host(0));
  EXPECT_EQ(c.devices()[1].id, DeviceId::cpu());
}

// host:N devices share the process's address space: each reaches every
// other directly. cpu is no peer; a device that does not exist is staged.
TEST(DeviceCatalog, HostDevicesReachEachOtherDirectly) {
  auto options = test_options();
  options.host_device_sizes = {64 * kMiB, 32 * kMiB, 128 * kMiB};
  auto catalog = DeviceCatalog::discover(options);
  ASSERT_TRUE(catalog.has_value()) << catalog.error().message;
  const auto& c = **catalog;
  const auto h0 = DeviceId::host(0), h1 = DeviceId::host(1), h2 = DeviceId::host(2);
  EXPECT_EQ(c.info(h0)->peers,
            (std::vector<PeerLink>{{h1, PeerAccess::Direct}, {h2, PeerAccess::Direct}}));
  EXPECT_EQ(c.info(h1)->peers,
            (std::vector<PeerLink>{{h0, PeerAccess::Direct}, {h2, PeerAccess::Direct}}));
  EXPECT_EQ(c.info(h2)->peers,
            (std::vector<PeerLink>{{h0, PeerAccess::Direct}, {h1, PeerAccess::Direct}}));
  EXPECT_TRUE(c.info(DeviceId::cpu())->peers.empty()) << "cpu is not GPU-like";
  for (const auto& d : c.devices()) EXPECT_TRUE(d.uuid.empty()) << d.id.to_string();
  EXPECT_EQ(c.info(h1)->total_bytes, 32 * kMiB);

  EXPECT_EQ(c.peer_access(h0, h1), PeerAccess::Direct);
  EXPECT_EQ(c.peer_access(h2, h0), PeerAccess::Direct);
  EXPECT_EQ(c.peer_access(h0, h0), PeerAccess::Direct);
  EXPECT_EQ(c.peer_access(h0, DeviceId::cpu()), PeerAccess::Staged);
  EXPECT_EQ(c.peer_access(DeviceId::cpu(), h0), PeerAccess::Staged);
  EXPECT_EQ(c.peer_access(h0, DeviceId::host(7)), PeerAccess::Staged);
  EXPECT_EQ(c.peer_access(h0, DeviceId::cuda(0)), PeerAccess::Staged);
  EXPECT_EQ(to_string(PeerAccess::Direct), "direct");
  EXPECT_EQ(to_string(PeerAccess::Staged), "staged");

  auto host = c.backend_for(h0, MemoryType::VRAM);
  ASSERT_TRUE(host.has_value());
  EXPECT_TRUE((*host)->can_access_peer(h0, h1));
  EXPECT_TRUE((*host)->can_access_peer(h2, h1));
  EXPECT_FALSE((*host)->can_access_peer(h0, h0)) << "a device is not its own peer";
  EXPECT_FALSE((*host)->can_access_peer(h0, DeviceId::cpu()));
  EXPECT_FALSE((*host)->can_access_peer(h0, DeviceId::host(3)));

  // One host device has no peers; none, no GPU-like devices at all.
  auto one = DeviceCatalog::discover(test_options(1));
  ASSERT_TRUE(one.has_value());
  EXPECT_TRUE((*one)->info(h0)->peers.empty());
}

TEST(DeviceCatalog, DefaultDeviceIsCpuWithoutHostDevices) {
  auto catalog = DeviceCatalog::discover(test_options(0));
  ASSERT_TRUE(catalog.has_value());
  EXPECT_EQ((*catalog)->default_device(), DeviceId::cpu());
  EXPECT_FALSE((*catalog)->info(DeviceId::host(0)).has_value());
}

TEST(DeviceCatalog, ValidatesBackendOptions) {
  auto bad = [](auto mutate) {
    BackendOptions options = test_options();
    mutate(options);
    auto catalog = DeviceCatalog::discover(options);
    return !catalog.has_value() && catalog.error().code == ErrorCode::invalid_argument;
  };
  EXPECT_TRUE(bad([](BackendOptions& o) { o.host_device_sizes.assign(65, kTestCapacity); }));
  EXPECT_TRUE(bad([](BackendOptions& o) { o.host_granularity = 0; }));
  EXPECT_TRUE(bad([](BackendOptions& o) { o.host_granularity = 2048; }));
  EXPECT_TRUE(bad([](BackendOptions& o) { o.host_granularity = 3 * kMiB; }));
  EXPECT_TRUE(bad([](BackendOptions& o) { o.host_device_sizes = {0}; }));
  EXPECT_TRUE(bad([](BackendOptions& o) { o.host_device_sizes = {kMiB}; }));  // < one granule
  EXPECT_TRUE(bad([](BackendOptions& o) { o.host_device_sizes = {kTestCapacity, kMiB}; }));
  EXPECT_FALSE(bad([](BackendOptions& o) { o.host_device_sizes.assign(64, kTestCapacity); }));
  EXPECT_FALSE(bad([](BackendOptions& o) { o.host_device_sizes.clear(); }));
  // The message names the device whose size is wrong.
  BackendOptions options = test_options();
  options.host_device_sizes = {kTestCapacity, kTestCapacity, kMiB};
  auto refused = DeviceCatalog::discover(options);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message.find("host:2"), std::string::npos) << refused.error().message;
}

}  // namespace
}  // namespace memd
