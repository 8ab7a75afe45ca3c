// memd::Engine on a real GPU (cuda:0), through libmemd.so: a tracked
// allocation's bytes round trip through VRAM, a copy between VRAM and a host
// device, stream-ordered blocks on a CUDA stream, and the device's stats.
// Skips, saying why, where libmemd finds no CUDA device.
#include <gtest/gtest.h>

#include <optional>
#include <vector>

#include "memd/engine.hpp"
#include "memd/size.hpp"

namespace memd {
namespace {

class EngineGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions options;
    options.host_device_sizes = {64 * kMiB};
    options.owner = "engine-gpu-test";
    auto opened = Engine::open(options);
    ASSERT_TRUE(opened) << opened.error().message;
    engine_.emplace(std::move(*opened));
    bool gpu = false;
    for (const auto& d : engine_->devices()) gpu = gpu || d.id == DeviceId::cuda(0);
    if (!gpu) GTEST_SKIP() << "no CUDA device (libmemd built without CUDA, or no GPU or driver here)";
  }
  std::optional<Engine> engine_;
};

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> bytes(n);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((i * 7 + 1) & 0xff);
  return bytes;
}

TEST_F(EngineGpuTest, BytesRoundTripThroughVramAndCopiesToAHostDevice) {
  AllocateOptions request;
  request.size_bytes = 8 * kMiB;
  request.device = DeviceId::cuda(0);
  auto vram = engine_->allocate(request);
  ASSERT_TRUE(vram) << vram.error().message;
  EXPECT_NE(vram->pointer, nullptr);
  const auto bytes = pattern(3 * kMiB + 17);
  ASSERT_TRUE(engine_->write(vram->id, 4096, bytes));
  std::vector<std::byte> back(bytes.size());
  ASSERT_TRUE(engine_->read(vram->id, 4096, back));
  EXPECT_EQ(back, bytes);

  request.device = DeviceId::host(0);
  auto host = engine_->allocate(request);
  ASSERT_TRUE(host) << host.error().message;
  auto copied = engine_->copy(vram->id, 4096, host->id, 0, bytes.size());
  ASSERT_TRUE(copied) << copied.error().message;
  std::vector<std::byte> on_host(bytes.size());
  ASSERT_TRUE(engine_->read(host->id, 0, on_host));
  EXPECT_EQ(on_host, bytes);

  auto stats = engine_->stats(DeviceId::cuda(0));
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->front().allocations, 1u);
  EXPECT_GE(stats->front().allocated_bytes, 8 * kMiB);
  ASSERT_TRUE(engine_->free(vram->id));
  EXPECT_EQ(engine_->free(vram->id).error().code, ErrorCode::not_found);
}

TEST_F(EngineGpuTest, StreamOrderedBlocksOnACudaStream) {
  auto stream = engine_->create_stream(DeviceId::cuda(0));
  ASSERT_TRUE(stream) << stream.error().message;
  auto first = engine_->allocate_async(1 * kMiB, *stream);
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(engine_->free_async(*first, *stream));
  auto second = engine_->allocate_async(1 * kMiB, *stream);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, *first);  // reused on its own stream without a wait
  ASSERT_TRUE(engine_->free_async(*second, *stream));
  EXPECT_EQ(engine_->free_async(*second, *stream).error().code, ErrorCode::invalid_argument);
  ASSERT_TRUE(engine_->synchronize(*stream));
  ASSERT_TRUE(engine_->destroy_stream(*stream));
}

}  // namespace
}  // namespace memd
