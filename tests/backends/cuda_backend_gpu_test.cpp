// CUDA backend: the shared conformance suite on cuda:0, plus CUDA-only
// promises (pinned/managed cpu segments, no-driver discovery, the per-size
// handle cache of mapping units, GPU UUIDs and peers, shareable VRAM imported
// through its exported descriptor, shareable pinned memfds).
// Every test skips with "no CUDA device found: …" where no GPU is visible, so
// this binary is safe to run anywhere; it has the ctest label `gpu`.
#include <gtest/gtest.h>

#if defined(MEMD_WITH_CUDA)

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "backends/backend_conformance.hpp"
#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/driver_api.hpp"
#include "backends/device_catalog.hpp"

namespace memd {
namespace {

std::string no_gpu_message() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();
  if (error != cudaSuccess)
    return std::string("no CUDA device found: cudaGetDeviceCount returned ") +
           cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")";
  return "no CUDA device found: cudaGetDeviceCount reported " + std::to_string(count) +
         " devices and the backend lists no cuda:0";
}

struct CudaTraits {
  static std::unique_ptr<Backend> make() { return make_cuda_backend(); }
  static DeviceId device() { return DeviceId::cuda(0); }
  static std::string skip_message() { return no_gpu_message(); }
};

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = make_cuda_backend();
    if (backend_->devices().empty()) GTEST_SKIP() << no_gpu_message();
  }
  std::unique_ptr<Backend> backend_;
};

}  // namespace

namespace testing {
INSTANTIATE_TYPED_TEST_SUITE_P(Cuda, BackendConformance, ::memd::CudaTraits);
}  // namespace testing

namespace {

// Runs everywhere: without a GPU the backend must exist, be empty and answer
// with errors, not crash.
TEST(CudaBackendDiscovery, StartsAndReportsNoDevicesWithoutAGpu) {
  auto backend = make_cuda_backend();
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->name(), "cuda");
  for (const auto& d : backend->devices()) {
    EXPECT_EQ(d.id.kind(), DeviceKind::Cuda) << "cpu is listed by the host backend only";
    EXPECT_EQ(d.backend, "cuda");
  }
  if (!backend->devices().empty()) return;
  EXPECT_EQ(backend->allocate(DeviceId::cuda(0), MemoryType::VRAM, 4096).error().code,
            ErrorCode::not_found);
  EXPECT_EQ(backend->allocate(DeviceId::cpu(), MemoryType::SharedMemory, 4096).error().code,
            ErrorCode::unavailable);
  EXPECT_FALSE(backend->memory_info(DeviceId::cuda(0)).has_value());
  EXPECT_FALSE(backend->reserve(DeviceId::cuda(0), 2 * kMiB).has_value());
  EXPECT_FALSE(backend->create_stream(DeviceId::cuda(0)).has_value());
  EXPECT_EQ(backend->physical_bytes(DeviceId::cuda(0)), 0u);
  EXPECT_EQ(backend->trim(), 0u);
}

TEST(CudaBackendDiscovery, CatalogRoutesCpuPinnedAndManagedToCudaWhenAGpuExists) {
  BackendOptions options;
  options.host_device_sizes = {64 * kMiB};
  auto catalog = DeviceCatalog::discover(options);
  ASSERT_TRUE(catalog.has_value()) << catalog.error().message;
  auto& c = **catalog;
  if (!c.has_cuda_devices()) {
    EXPECT_EQ(c.default_device(), DeviceId::host(0));
    GTEST_SKIP() << no_gpu_message();
  }
  EXPECT_EQ(c.default_device(), DeviceId::cuda(0));
  EXPECT_EQ((*c.backend_for(DeviceId::cpu(), MemoryType::SharedMemory))->name(), "cuda");
  EXPECT_EQ((*c.backend_for(DeviceId::cpu(), MemoryType::UnifiedMemory))->name(), "cuda");
  EXPECT_EQ((*c.backend_for(DeviceId::cpu(), MemoryType::RAM))->name(), "host");
  EXPECT_EQ((*c.backend_for(DeviceId::cuda(0), MemoryType::VRAM))->name(), "cuda");
  int cpu_listed = 0;
  for (const auto& d : c.devices()) cpu_listed += d.id == DeviceId::cpu() ? 1 : 0;
  EXPECT_EQ(cpu_listed, 1);
}

TEST_F(CudaBackendTest, DeviceInfoDescribesTheGpu) {
  for (const auto& d : backend_->devices()) {
    SCOPED_TRACE(d.id.to_string());
    EXPECT_FALSE(d.simulated);
    EXPECT_GT(d.compute_major, 0);
    EXPECT_FALSE(d.bus_id.empty());
    EXPECT_TRUE(d.uuid.starts_with("GPU-")) << d.uuid;
    EXPECT_EQ(d.uuid.size(), 40u) << d.uuid;
    EXPECT_EQ(d.memory_types,
              (std::vector<MemoryType>{MemoryType::VRAM, MemoryType::UnifiedMemory}));
    auto mem = backend_->memory_info(d.id);
    ASSERT_TRUE(mem.has_value()) << mem.error().message;
    EXPECT_TRUE(mem->sees_other_processes);
  }
}

TEST_F(CudaBackendTest, CpuPinnedAndManagedSegmentsWork) {
  for (auto type : {MemoryType::SharedMemory, MemoryType::UnifiedMemory}) {
    SCOPED_TRACE(std::string(to_string(type)));
    const auto before = backend_->physical_bytes(DeviceId::cpu());
    auto seg = backend_->allocate(DeviceId::cpu(), type, 3 * kMiB);
    ASSERT_TRUE(seg.has_value()) << seg.error().message;
    // Host-addressable directly, and reachable by the GPU's copy engine.
    std::memset(seg->ptr, 0x3C, 3 * kMiB);
    auto vram = backend_->allocate(DeviceId::cuda(0), MemoryType::VRAM, 3 * kMiB);
    ASSERT_TRUE(vram.has_value()) << vram.error().message;
    const Stream stream{DeviceId::cuda(0), 0};
    ASSERT_TRUE(backend_->copy(vram->ptr, seg->ptr, 3 * kMiB, stream).has_value());
    ASSERT_TRUE(backend_->fill(seg->ptr, 0, 3 * kMiB, stream).has_value());
    ASSERT_TRUE(backend_->copy(seg->ptr, vram->ptr, 3 * kMiB, stream).has_value());
    ASSERT_TRUE(backend_->synchronize(stream).has_value());
    EXPECT_EQ(static_cast<unsigned char*>(seg->ptr)[3 * kMiB - 1], 0x3C);
    EXPECT_EQ(backend_->physical_bytes(DeviceId::cpu()), before + 3 * kMiB);
    ASSERT_TRUE(backend_->free(*vram).has_value());
    ASSERT_TRUE(backend_->free(*seg).has_value());
    EXPECT_EQ(backend_->physical_bytes(DeviceId::cpu()), before);
  }
  EXPECT_EQ(backend_->allocate(DeviceId::cpu(), MemoryType::RAM, 4096).error().code,
            ErrorCode::invalid_argument);
}

TEST_F(CudaBackendTest, HandleCacheIsBoundedAndTrimmed) {
  const auto device = DeviceId::cuda(0);
  const auto info = backend_->devices()[0];
  ASSERT_TRUE(info.virtual_memory) << "cuda:0 has no virtual memory support";
  const auto g = info.granularity;
  backend_->set_handle_cache_limit(device, 0);
  backend_->trim();
  const auto p0 = backend_->physical_bytes(device);
  backend_->set_handle_cache_limit(device, 2 * g);
  auto range = backend_->reserve(device, 8 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  // A unit larger than the limit is never cached.
  ASSERT_TRUE(backend_->map(*range, 0, 8 * g).has_value());
  ASSERT_TRUE(backend_->unmap(*range, 0, 8 * g).has_value());
  EXPECT_EQ(backend_->physical_bytes(device), p0) << "an 8-page unit does not fit a 2-page cache";
  // Eight one-page units unmapped in one call: the cache keeps two.
  for (std::uint64_t i = 0; i < 8; ++i)
    ASSERT_TRUE(backend_->map(*range, i * g, g).has_value());
  ASSERT_TRUE(backend_->unmap(*range, 0, 8 * g).has_value());
  EXPECT_EQ(backend_->physical_bytes(device), p0 + 2 * g) << "cache keeps at most its limit";
  backend_->set_handle_cache_limit(device, g);
  EXPECT_EQ(backend_->physical_bytes(device), p0 + g) << "lowering the limit gives back the excess";
  EXPECT_EQ(backend_->trim(), g);
  EXPECT_EQ(backend_->physical_bytes(device), p0);
  ASSERT_TRUE(backend_->release(*range).has_value());
  backend_->set_handle_cache_limit(device, 0);
}

TEST_F(CudaBackendTest, HandleCacheServesMapsOfTheSameSizeOnly) {
  const auto device = DeviceId::cuda(0);
  const auto info = backend_->devices()[0];
  ASSERT_TRUE(info.virtual_memory) << "cuda:0 has no virtual memory support";
  const auto g = info.granularity;
  backend_->set_handle_cache_limit(device, 0);
  backend_->trim();
  const auto p0 = backend_->physical_bytes(device);
  backend_->set_handle_cache_limit(device, 4 * g);
  auto range = backend_->reserve(device, 6 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  ASSERT_TRUE(backend_->map(*range, 0, 2 * g).has_value());
  ASSERT_TRUE(backend_->unmap(*range, 0, 2 * g).has_value());
  EXPECT_EQ(backend_->physical_bytes(device), p0 + 2 * g) << "the 2-page unit is cached";
  ASSERT_TRUE(backend_->map(*range, 0, g).has_value());
  EXPECT_EQ(backend_->physical_bytes(device), p0 + 3 * g) << "a 1-page map cannot use it";
  ASSERT_TRUE(backend_->map(*range, 2 * g, 2 * g).has_value());
  EXPECT_EQ(backend_->physical_bytes(device), p0 + 3 * g) << "a 2-page map reuses it";
  // The reused memory works like fresh memory.
  std::vector<unsigned char> in(2 * g, 0x6D), out(2 * g, 0);
  const Stream stream{device, 0};
  auto* at = reinterpret_cast<void*>(range->base + 2 * g);
  ASSERT_TRUE(backend_->copy(at, in.data(), in.size(), stream).has_value());
  ASSERT_TRUE(backend_->copy(out.data(), at, out.size(), stream).has_value());
  ASSERT_TRUE(backend_->synchronize(stream).has_value());
  EXPECT_EQ(out, in);
  ASSERT_TRUE(backend_->release(*range).has_value());
  EXPECT_EQ(backend_->physical_bytes(device), p0 + 3 * g) << "release caches both units";
  EXPECT_EQ(backend_->trim(), 3 * g);
  EXPECT_EQ(backend_->physical_bytes(device), p0);
  backend_->set_handle_cache_limit(device, 0);
}

// Peers: GPU pairs are direct exactly where the backend enabled peer access
// both ways; a GPU and a host device are always staged.
TEST(CudaBackendDiscovery, CatalogListsPeersOfEveryGpu) {
  BackendOptions options;
  options.host_device_sizes = {64 * kMiB};
  auto catalog = DeviceCatalog::discover(options);
  ASSERT_TRUE(catalog.has_value()) << catalog.error().message;
  auto& c = **catalog;
  if (!c.has_cuda_devices()) GTEST_SKIP() << no_gpu_message();
  auto cuda = c.backend_for(DeviceId::cuda(0), MemoryType::VRAM);
  ASSERT_TRUE(cuda.has_value());
  for (const auto& d : c.devices()) {
    if (d.id.kind() != DeviceKind::Cuda) continue;
    SCOPED_TRACE(d.id.to_string());
    EXPECT_FALSE((*cuda)->can_access_peer(d.id, d.id));
    bool host_seen = false;
    for (const auto& p : d.peers) {
      EXPECT_NE(p.device, d.id);
      if (p.device.kind() == DeviceKind::Host) {
        host_seen = true;
        EXPECT_EQ(p.access, PeerAccess::Staged);
      } else {
        const bool both = (*cuda)->can_access_peer(d.id, p.device) &&
                          (*cuda)->can_access_peer(p.device, d.id);
        EXPECT_EQ(p.access, both ? PeerAccess::Direct : PeerAccess::Staged);
      }
      EXPECT_EQ(c.peer_access(d.id, p.device), p.access);
    }
    EXPECT_TRUE(host_seen);
  }
  EXPECT_EQ(c.info(DeviceId::host(0))->peers.size(), c.devices().size() - 2)
      << "host:0 lists every GPU";
}

// What another process does with an exported VRAM descriptor, done here:
// import it, map it at an address of its own, and see memd's bytes (and
// memd sees the importer's).
TEST_F(CudaBackendTest, ExportedVramImportsAndShowsTheSameBytes) {
  const auto& driver = cuda::driver_api();
  if (!driver.sharing_complete()) GTEST_SKIP() << "the driver offers no shareable handles";
  const auto device = DeviceId::cuda(0);
  auto s = backend_->allocate_shareable(device, MemoryType::VRAM, 3 * kMiB);
  if (!s && s.error().code == ErrorCode::unavailable) GTEST_SKIP() << s.error().message;
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(s->kind, ShareableKind::CudaPosixFd);
  const auto n = static_cast<std::size_t>(s->segment.size);
  const auto mine = testing::pattern(n, 41);
  ASSERT_EQ(cudaMemcpy(s->segment.ptr, mine.data(), n, cudaMemcpyHostToDevice), cudaSuccess);
  auto fd = backend_->export_fd(*s);
  ASSERT_TRUE(fd.has_value()) << fd.error().message;

  CUmemGenericAllocationHandle imported = 0;
  ASSERT_EQ(driver.mem_import_from_shareable_handle(
                &imported, reinterpret_cast<void*>(static_cast<std::uintptr_t>(*fd)),
                CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR),
            CUDA_SUCCESS);
  ::close(*fd);  // the imported handle keeps the memory
  CUdeviceptr at = 0;
  ASSERT_EQ(driver.mem_address_reserve(&at, n, 0, 0, 0), CUDA_SUCCESS);
  ASSERT_EQ(driver.mem_map(at, n, 0, imported, 0), CUDA_SUCCESS);
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = 0;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  ASSERT_EQ(driver.mem_set_access(at, n, &access, 1), CUDA_SUCCESS);
  std::vector<std::uint8_t> seen(n);
  ASSERT_EQ(cudaMemcpy(seen.data(), reinterpret_cast<void*>(at), n, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(seen, mine) << "the importer sees memd's bytes";
  const auto theirs = testing::pattern(n, 42);
  ASSERT_EQ(cudaMemcpy(reinterpret_cast<void*>(at), theirs.data(), n, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(seen.data(), s->segment.ptr, n, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(seen, theirs) << "memd sees the importer's bytes";

  // memd frees its side; the importer's mapping still holds the memory.
  const auto p0 = backend_->physical_bytes(device);
  ASSERT_TRUE(backend_->free_shareable(*s).has_value());
  EXPECT_EQ(backend_->physical_bytes(device), p0 - n);
  ASSERT_EQ(cudaMemcpy(seen.data(), reinterpret_cast<void*>(at), n, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(seen, theirs);
  EXPECT_EQ(driver.mem_unmap(at, n), CUDA_SUCCESS);
  EXPECT_EQ(driver.mem_address_free(at, n), CUDA_SUCCESS);
  EXPECT_EQ(driver.mem_release(imported), CUDA_SUCCESS);
  EXPECT_EQ(backend_->export_fd(*s).error().code, ErrorCode::not_found);
}

// Shareable pinned memory: a second mapping of the exported memfd sees both
// CPU writes and the GPU's DMA into memd's mapping.
TEST_F(CudaBackendTest, ShareablePinnedMemfdSeesDeviceCopies) {
  const auto before = backend_->physical_bytes(DeviceId::cpu());
  auto s = backend_->allocate_shareable(DeviceId::cpu(), MemoryType::SharedMemory, 2 * kMiB + 7);
  ASSERT_TRUE(s.has_value()) << s.error().message;
  EXPECT_EQ(s->kind, ShareableKind::Memfd);
  const auto n = static_cast<std::size_t>(s->segment.size);
  EXPECT_EQ(backend_->physical_bytes(DeviceId::cpu()), before + n);
  auto fd = backend_->export_fd(*s);
  ASSERT_TRUE(fd.has_value()) << fd.error().message;
  auto* other = static_cast<std::uint8_t*>(::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0));
  ASSERT_NE(static_cast<void*>(other), MAP_FAILED);
  ::close(*fd);
  auto vram = backend_->allocate(DeviceId::cuda(0), MemoryType::VRAM, n);
  ASSERT_TRUE(vram.has_value()) << vram.error().message;
  const auto data = testing::pattern(n, 43);
  const Stream stream{DeviceId::cuda(0), 0};
  std::memcpy(other, data.data(), n);  // written through the other mapping
  ASSERT_TRUE(backend_->copy(vram->ptr, s->segment.ptr, n, stream).has_value());
  ASSERT_TRUE(backend_->fill(s->segment.ptr, 0, n, stream).has_value());
  ASSERT_TRUE(backend_->synchronize(stream).has_value());
  EXPECT_EQ(other[n / 2], 0) << "the fill's DMA shows in the other mapping";
  ASSERT_TRUE(backend_->copy(s->segment.ptr, vram->ptr, n, stream).has_value());
  ASSERT_TRUE(backend_->synchronize(stream).has_value());
  EXPECT_EQ(std::memcmp(other, data.data(), n), 0) << "the copy's DMA shows in the other mapping";
  ::munmap(other, n);
  ASSERT_TRUE(backend_->free(*vram).has_value());
  ASSERT_TRUE(backend_->free_shareable(*s).has_value());
  EXPECT_EQ(backend_->physical_bytes(DeviceId::cpu()), before);
  EXPECT_EQ(backend_->allocate_shareable(DeviceId::cpu(), MemoryType::RAM, 4096).error().code,
            ErrorCode::invalid_argument)
      << "cpu RAM is the host backend's";
}

TEST_F(CudaBackendTest, ErrorsCarryTheCudaErrorName) {
  // A managed request larger than the device must fail up front as
  // out_of_memory, never abort.
  const auto info = backend_->devices()[0];
  auto huge = backend_->allocate(DeviceId::cuda(0), MemoryType::UnifiedMemory,
                                 info.total_bytes * 2);
  ASSERT_FALSE(huge.has_value());
  EXPECT_EQ(huge.error().code, ErrorCode::out_of_memory);
  auto vram = backend_->allocate(DeviceId::cuda(0), MemoryType::VRAM, info.total_bytes * 2);
  ASSERT_FALSE(vram.has_value());
  EXPECT_EQ(vram.error().code, ErrorCode::out_of_memory);
  EXPECT_NE(vram.error().message.find("cudaError"), std::string::npos) << vram.error().message;
  // The failure did not poison later calls.
  auto ok = backend_->allocate(DeviceId::cuda(0), MemoryType::VRAM, kMiB);
  ASSERT_TRUE(ok.has_value()) << ok.error().message;
  ASSERT_TRUE(backend_->free(*ok).has_value());
}

}  // namespace
}  // namespace memd

#else  // !MEMD_WITH_CUDA

TEST(CudaBackendDiscovery, NotBuilt) {
  GTEST_SKIP() << "no CUDA device found: memd was built without CUDA (MEMD_WITH_CUDA=OFF)";
}

#endif

namespace memd {
namespace {

// A stream made by another runtime user (PyTorch, in the shim) works as a
// backend stream: a copy and an event on it land, and destroy_stream only
// forgets it (the stream still works for its maker afterwards).
TEST_F(CudaBackendTest, AnAdoptedStreamCarriesCopiesAndEventsAndStaysItsMakers) {
  cudaStream_t theirs = nullptr;
  ASSERT_EQ(cudaStreamCreate(&theirs), cudaSuccess);
  auto adopted = backend_->adopt_stream(DeviceId::cuda(0), theirs);
  ASSERT_TRUE(adopted) << adopted.error().message;
  void* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, 4096), cudaSuccess);
  std::vector<unsigned char> in(4096, 0x5a), out(4096, 0);
  ASSERT_TRUE(backend_->copy(dev, in.data(), in.size(), *adopted));
  auto event = backend_->record(*adopted);
  ASSERT_TRUE(event);
  ASSERT_TRUE(backend_->wait(*event));
  ASSERT_TRUE(backend_->destroy_event(*event));
  ASSERT_TRUE(backend_->destroy_stream(*adopted));
  EXPECT_FALSE(backend_->destroy_stream(*adopted)) << "forgotten once";
  // Still the maker's: usable and destroyable by it.
  ASSERT_EQ(cudaMemcpyAsync(out.data(), dev, out.size(), cudaMemcpyDeviceToHost, theirs), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(theirs), cudaSuccess);
  EXPECT_EQ(out, in);
  EXPECT_EQ(cudaStreamDestroy(theirs), cudaSuccess);
  EXPECT_EQ(cudaFree(dev), cudaSuccess);
  EXPECT_FALSE(backend_->adopt_stream(DeviceId::cuda(99), nullptr)) << "no such GPU";
}

}  // namespace
}  // namespace memd
