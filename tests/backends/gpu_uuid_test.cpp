// GPU UUIDs are written as nvidia-smi writes them, so clients can match cuda:N
// with the GPU their own tools name.
#include <gtest/gtest.h>

#include <array>

#include "backends/gpu_uuid.hpp"

namespace memd {
namespace {

TEST(GpuUuid, IsWrittenAsNvidiaSmiWritesIt) {
  const std::array<std::uint8_t, 16> bytes{0x4f, 0x1a, 0x8e, 0x2b, 0x03, 0xc4, 0x9d, 0x55,
                                           0xa0, 0x0f, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x23};
  EXPECT_EQ(format_gpu_uuid(bytes), "GPU-4f1a8e2b-03c4-9d55-a00f-deadbeef0123");
  const std::array<std::uint8_t, 16> zero{};
  EXPECT_EQ(format_gpu_uuid(zero), "GPU-00000000-0000-0000-0000-000000000000");
}

}  // namespace
}  // namespace memd
