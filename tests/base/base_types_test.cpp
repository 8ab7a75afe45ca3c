// The public value types: enum names and values, ids, device names, sizes.
#include <gtest/gtest.h>

#include <set>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"
#include "memd/size.hpp"

namespace memd {
namespace {

TEST(MemoryTypes, SeedValuesAreFixed) {
  EXPECT_EQ(static_cast<int>(MemoryType::Unknown), 0);
  EXPECT_EQ(static_cast<int>(MemoryType::RAM), 1);
  EXPECT_EQ(static_cast<int>(MemoryType::VRAM), 2);
  EXPECT_EQ(static_cast<int>(MemoryType::SharedMemory), 3);
  EXPECT_EQ(static_cast<int>(MemoryType::UnifiedMemory), 4);
}

TEST(MemoryTypes, NamesRoundTripAndIntegersParse) {
  for (MemoryType t : all_memory_types()) EXPECT_EQ(parse_memory_type(to_string(t)), t);
  for (auto t : all_allocation_types()) EXPECT_EQ(parse_allocation_type(to_string(t)), t);
  for (auto t : all_allocation_statuses()) EXPECT_EQ(parse_allocation_status(to_string(t)), t);
  for (auto t : all_priorities()) EXPECT_EQ(parse_priority(to_string(t)), t);
  for (auto t : all_transfer_statuses()) EXPECT_EQ(parse_transfer_status(to_string(t)), t);
  for (auto t : all_health_statuses()) EXPECT_EQ(parse_health_status(to_string(t)), t);
  EXPECT_EQ(parse_memory_type("2"), MemoryType::VRAM);
  EXPECT_EQ(parse_memory_type("vram"), MemoryType::VRAM);
  EXPECT_EQ(memory_type_from_int(4), MemoryType::UnifiedMemory);
  EXPECT_FALSE(parse_memory_type("GPU"));
  EXPECT_FALSE(parse_memory_type("7"));
  EXPECT_FALSE(parse_memory_type(""));
  EXPECT_FALSE(memory_type_from_int(-1));
  EXPECT_FALSE(parse_priority("2x"));
}

TEST(ErrorCodes, EveryCodeHasOneNameAndStatus) {
  std::set<std::string_view> names;
  for (ErrorCode c : kAllErrorCodes) {
    EXPECT_TRUE(names.insert(to_string(c)).second);
    EXPECT_EQ(parse_error_code(to_string(c)), c);
    EXPECT_GE(http_status(c), 400);
  }
  EXPECT_EQ(http_status(ErrorCode::invalid_argument), 400);
  EXPECT_EQ(http_status(ErrorCode::not_found), 404);
  EXPECT_EQ(http_status(ErrorCode::conflict), 409);
  EXPECT_EQ(http_status(ErrorCode::permission_denied), 403);
  EXPECT_EQ(http_status(ErrorCode::out_of_range), 416);
  EXPECT_EQ(http_status(ErrorCode::invalid_file), 422);
  EXPECT_EQ(http_status(ErrorCode::method_not_allowed), 405);
  EXPECT_EQ(http_status(ErrorCode::uri_too_long), 414);
  EXPECT_EQ(http_status(ErrorCode::unsupported_media_type), 415);
  EXPECT_EQ(http_status(ErrorCode::out_of_memory), 507);
  EXPECT_EQ(http_status(ErrorCode::quota_exceeded), 507);
  EXPECT_EQ(http_status(ErrorCode::unavailable), 503);
  EXPECT_EQ(http_status(ErrorCode::internal), 500);
  EXPECT_FALSE(parse_error_code("oom"));
}

TEST(AllocationId, GeneratedIdsAreV4AndRoundTrip) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = AllocationId::generate();
    auto text = id.to_string();
    ASSERT_EQ(text.size(), 36u);
    EXPECT_EQ(text[14], '4') << text;  // version nibble
    EXPECT_TRUE(text[19] == '8' || text[19] == '9' || text[19] == 'a' || text[19] == 'b') << text;
    auto parsed = AllocationId::parse(text);
    ASSERT_TRUE(parsed) << parsed.error().message;
    EXPECT_EQ(*parsed, id);
    EXPECT_TRUE(seen.insert(text).second);
  }
}

TEST(AllocationId, ParseRejectsMalformed) {
  for (std::string_view bad : {"", "a1b2c3d4", "a1b2c3d4-e5f6-4890-abcd-ef123456789",
                               "a1b2c3d4-e5f6-4890-abcd-ef12345678901",
                               "a1b2c3d4xe5f6-4890-abcd-ef1234567890",
                               "g1b2c3d4-e5f6-4890-abcd-ef1234567890",
                               "a1b2c3d4-e5f6-4890-abcd-ef123456789\0"}) {
    auto r = AllocationId::parse(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  }
  auto upper = AllocationId::parse("A1B2C3D4-E5F6-4890-ABCD-EF1234567890");
  ASSERT_TRUE(upper);
  EXPECT_EQ(upper->to_string(), "a1b2c3d4-e5f6-4890-abcd-ef1234567890");
  EXPECT_TRUE(AllocationId().is_nil());
}

TEST(DeviceId, ParsesTheThreeForms) {
  EXPECT_EQ(DeviceId::parse("cuda:0").value(), DeviceId::cuda(0));
  EXPECT_EQ(DeviceId::parse("host:12").value(), DeviceId::host(12));
  EXPECT_EQ(DeviceId::parse("cpu").value(), DeviceId::cpu());
  EXPECT_EQ(DeviceId::cuda(3).to_string(), "cuda:3");
  EXPECT_EQ(DeviceId::cpu().to_string(), "cpu");
  for (std::string_view bad : {"", "cuda", "cuda:", "cuda:-1", "cuda:+1", "cuda:1x", "gpu:0",
                               "cuda:99999", "cuda:1024", "CPU", " cuda:0", "cpu:0"})
    EXPECT_FALSE(DeviceId::parse(bad)) << bad;
}

TEST(Size, ParsesUnitsAndRejectsNonsense) {
  EXPECT_EQ(parse_size("0").value(), 0u);
  EXPECT_EQ(parse_size("4096").value(), 4096u);
  EXPECT_EQ(parse_size("512MiB").value(), 512 * kMiB);
  EXPECT_EQ(parse_size("8GiB").value(), 8 * kGiB);
  EXPECT_EQ(parse_size("8g").value(), 8 * kGiB);
  EXPECT_EQ(parse_size("1.5KiB").value(), 1536u);
  EXPECT_EQ(parse_size("2 MB").value(), 2 * kMiB);
  for (std::string_view bad : {"", "-1", "MiB", "1.5", "1e9", "12QB", "9223372036854775808",
                               "9999999999TiB", "1..2G", "0x10"})
    EXPECT_FALSE(parse_size(bad)) << bad;
  EXPECT_EQ(format_size(1536), "1.5 KiB");
  EXPECT_EQ(format_size(0), "0 B");
}

}  // namespace
}  // namespace memd
