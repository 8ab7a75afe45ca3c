// Parameter validation: sizes, enums, types, required keys.
#include <gtest/gtest.h>

#include "memd/size.hpp"
#include "protocol/params.hpp"

namespace memd {
namespace {

using nlohmann::json;

Optional<std::uint64_t> size_of(const json& v) {
  const json object = {{"sizeBytes", v}};
  return Params(object).size("sizeBytes");
}

TEST(Params, SizesAcceptIntegersAndUnitStrings) {
  EXPECT_EQ(**size_of(4096), 4096u);
  EXPECT_EQ(**size_of("512MiB"), 512 * kMiB);
  EXPECT_EQ(**size_of("1.5GiB"), kGiB + kGiB / 2);
  EXPECT_EQ(**size_of("4096"), 4096u);
  EXPECT_EQ(**size_of(json::number_unsigned_t{kMaxWireBytes}), kMaxWireBytes);
  EXPECT_EQ(**size_of("999999999999999999"), kMaxWireBytes);
  EXPECT_EQ(**size_of("1.5MiB"), kMiB + kMiB / 2);
  EXPECT_EQ(**size_of("2k"), 2 * kKiB);
  EXPECT_EQ(**size_of("0"), 0u);
}

TEST(Params, AllocationSizesAreAtLeastOneByte) {
  const json object = {{"zero", 0}, {"zeroText", "0.000G"}, {"one", "0.001K"}};
  Params p(object);
  EXPECT_EQ(p.size("zero", 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(p.size("zeroText", 1).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(**p.size("one", 1), 1u);
}

TEST(Params, SizesRefuseNegativeFractionalAbsurdAndWrongTypes) {
  for (const json& bad : {json(-1), json(1.5), json("-5"), json("5 parsecs"), json(true),
                          json::array(), json::object(), json(kMaxRequestBytes + 1),
                          json(std::uint64_t{1} << 63), json("8EiB"), json(1e30),
                          json(kMaxWireBytes + 1), json("1000000000000000000"), json("512 MiB"),
                          json("1.5B"), json("1.5"), json(".5M"), json("1.2345K"), json("100000T"),
                          json("+5"), json("")}) {
    auto r = size_of(bad);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("sizeBytes"), std::string::npos) << r.error().message;
  }
}

TEST(Params, AbsentIsNulloptAndNullIsRefused) {
  const json object = {{"a", nullptr}};
  Params p(object);
  EXPECT_EQ(p.size("a").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(p.string("a").error().code, ErrorCode::invalid_argument);
  EXPECT_FALSE(p.size("missing")->has_value());
  EXPECT_TRUE(p.contains("a"));
  EXPECT_FALSE(p.has_value("a"));
  EXPECT_TRUE(p.is_null("a"));
}

TEST(Params, EnumsTakeNamesAndSeedIntegers) {
  const json object = {{"t", "VRAM"}, {"i", 4}, {"lower", "ram"}, {"bad", "HBM"}, {"badInt", 9},
                       {"p", "High"}, {"pi", 0}, {"s", "Freed"}};
  Params p(object);
  EXPECT_EQ(**p.memory_type("t"), MemoryType::VRAM);
  EXPECT_EQ(**p.memory_type("i"), MemoryType::UnifiedMemory);
  EXPECT_EQ(p.memory_type("lower").error().code, ErrorCode::invalid_argument);  // exact case
  EXPECT_EQ(p.memory_type("bad").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(p.memory_type("badInt").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(**p.priority("p"), MemoryPriority::High);
  EXPECT_EQ(**p.priority("pi"), MemoryPriority::Low);
  EXPECT_EQ(**p.allocation_status("s"), MemoryAllocationStatus::Freed);
  EXPECT_FALSE(p.allocation_type("t"));
}

TEST(Params, AllocatableMemoryTypesLeaveOutUnknown) {
  const json object = {{"n", "Unknown"}, {"i", 0}, {"text", "2"}};
  Params p(object);
  EXPECT_EQ(**p.memory_type("n"), MemoryType::Unknown);
  EXPECT_FALSE(p.memory_type("n", true));
  EXPECT_FALSE(p.memory_type("i", true));
  EXPECT_EQ(**p.memory_type("text", true), MemoryType::VRAM);
}

TEST(Params, DeviceIdsAndTextHaveBounds) {
  const json object = {{"d1", "cuda:1023"}, {"d2", "cuda:1024"}, {"d3", "host:0007"}, {"d4", "cpu:0"},
                       {"emptyOwner", ""}, {"longTag", std::string(129, 't')},
                       {"tags", json::array({"a", ""})}, {"many", json(std::vector<std::string>(65, "t"))}};
  Params p(object);
  EXPECT_EQ((**p.device("d1")).index(), 1023);
  EXPECT_FALSE(p.device("d2"));
  EXPECT_EQ((**p.device("d3")).index(), 7);
  EXPECT_FALSE(p.device("d4"));
  EXPECT_FALSE(p.owner("emptyOwner"));
  EXPECT_FALSE(p.tag("longTag"));
  EXPECT_FALSE(p.strings("tags"));
  EXPECT_FALSE(p.strings("many"));
}

TEST(Params, WrongTypesNameTheKey) {
  const json object = {{"owner", 5}, {"pinned", "maybe"}, {"tags", {1, 2}}, {"deviceId", "gpu0"},
                       {"allocationId", "not-a-guid"}, {"limit", -3}};
  Params p(object);
  for (auto r : {p.string("owner").error(), p.boolean("pinned").error(), p.strings("tags").error(),
                 p.device("deviceId").error(), p.allocation_id("allocationId").error(),
                 p.count("limit", 10).error()}) {
    EXPECT_EQ(r.code, ErrorCode::invalid_argument);
  }
  EXPECT_NE(p.string("owner").error().message.find("'owner'"), std::string::npos);
  EXPECT_NE(p.device("deviceId").error().message.find("'deviceId'"), std::string::npos);
}

TEST(Params, QueryStringsConvert) {
  const json object = {{"limit", "10"}, {"pinned", "true"}, {"offset", "x"}, {"tag", "a"}, {"one", 1}};
  Params p(object);
  EXPECT_EQ(**p.count("limit", 100), 10u);
  EXPECT_FALSE(p.count("offset", 100));
  EXPECT_FALSE(p.count("limit", 5));  // over max
  // Booleans are JSON true/false only, and tags an array: decided once, refused.
  EXPECT_FALSE(p.boolean("pinned"));
  EXPECT_FALSE(p.boolean("one"));
  EXPECT_FALSE(p.strings("tag"));
}

TEST(Params, RequiredReportsMissingKey) {
  const json object = json::object();
  auto r = required(Params(object).size("sizeBytes"), "sizeBytes");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "missing required parameter 'sizeBytes'");
}

}  // namespace
}  // namespace memd
