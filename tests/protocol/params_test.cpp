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
  EXPECT_EQ(**size_of(json::number_unsigned_t{kMaxRequestBytes}), kMaxRequestBytes);
}

TEST(Params, SizesRefuseNegativeFractionalAbsurdAndWrongTypes) {
  for (const json& bad : {json(-1), json(1.5), json("-5"), json("5 parsecs"), json(true),
                          json::array(), json::object(), json(kMaxRequestBytes + 1),
                          json(std::uint64_t{1} << 63), json("8EiB"), json(1e30)}) {
    auto r = size_of(bad);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("sizeBytes"), std::string::npos) << r.error().message;
  }
}

TEST(Params, AbsentAndNullAreNullopt) {
  const json object = {{"a", nullptr}};
  Params p(object);
  EXPECT_FALSE(p.size("a")->has_value());
  EXPECT_FALSE(p.size("missing")->has_value());
  EXPECT_TRUE(p.contains("a"));
  EXPECT_FALSE(p.has_value("a"));
}

TEST(Params, EnumsTakeNamesAndSeedIntegers) {
  const json object = {{"t", "VRAM"}, {"i", 4}, {"lower", "ram"}, {"bad", "HBM"}, {"badInt", 9},
                       {"p", "High"}, {"pi", 0}, {"s", "Freed"}};
  Params p(object);
  EXPECT_EQ(**p.memory_type("t"), MemoryType::VRAM);
  EXPECT_EQ(**p.memory_type("i"), MemoryType::UnifiedMemory);
  EXPECT_EQ(**p.memory_type("lower"), MemoryType::RAM);
  EXPECT_EQ(p.memory_type("bad").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(p.memory_type("badInt").error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(**p.priority("p"), MemoryPriority::High);
  EXPECT_EQ(**p.priority("pi"), MemoryPriority::Low);
  EXPECT_EQ(**p.allocation_status("s"), MemoryAllocationStatus::Freed);
  EXPECT_FALSE(p.allocation_type("t"));
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
  const json object = {{"limit", "10"}, {"pinned", "true"}, {"offset", "x"}, {"tag", "a"}};
  Params p(object);
  EXPECT_EQ(**p.count("limit", 100), 10u);
  EXPECT_EQ(**p.boolean("pinned"), true);
  EXPECT_FALSE(p.count("offset", 100));
  EXPECT_FALSE(p.count("limit", 5));  // over max
  EXPECT_EQ((**p.strings("tag")), std::vector<std::string>{"a"});
}

TEST(Params, RequiredReportsMissingKey) {
  const json object = json::object();
  auto r = required(Params(object).size("sizeBytes"), "sizeBytes");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "missing required parameter 'sizeBytes'");
}

}  // namespace
}  // namespace memd
