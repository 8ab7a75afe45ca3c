// CUDA backend: the shared conformance suite on cuda:0, plus CUDA-only
// promises (pinned/managed cpu segments, no-driver discovery, the per-size
// handle cache of mapping units).
// Every test skips with "no CUDA device found: …" where no GPU is visible, so
// this binary is safe to run anywhere; it has the ctest label `gpu`.
#include <gtest/gtest.h>

#if defined(MEMD_WITH_CUDA)

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "backends/backend_conformance.hpp"
#include "backends/cuda/cuda_backend.hpp"
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
  options.host_device_bytes = 64 * kMiB;
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
