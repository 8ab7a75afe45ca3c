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

// The owner rule at the protocol edge (the header's twin is in
// tests/server/caller_test.cpp): hostile names are refused naming the key,
// and the published pattern refuses the same characters.
TEST(Params, HostileOwnersAreRefused) {
  std::string kanji_129;
  for (int i = 0; i < 43; ++i) kanji_129 += "日";
  const json object = {{"nul", std::string("ali\0ce", 6)},
                       {"rlo", "alice\u202e"},
                       {"bad", std::string("ali\xff")},
                       {"long", std::string(129, 'o')},
                       {"kanji", kanji_129},
                       {"empty", ""},
                       {"newline", "alice\nINFO forged"},
                       {"ok", std::string(128, 'o')},
                       {"utf8", "мария"}};
  Params p(object);
  for (const char* key : {"nul", "rlo", "bad", "long", "kanji", "empty", "newline"}) {
    auto r = p.owner(key);
    ASSERT_FALSE(r) << key;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << key;
    EXPECT_NE(r.error().message.find(std::string("'") + key + "'"), std::string::npos) << r.error().message;
  }
  EXPECT_NE(p.owner("kanji").error().message.find("129 bytes"), std::string::npos);
  EXPECT_NE(p.owner("rlo").error().message.find("U+202E"), std::string::npos);
  EXPECT_EQ(**p.owner("ok"), std::string(128, 'o'));
  EXPECT_EQ(**p.owner("utf8"), "мария");
}

TEST(Params, CountsHaveAMinimumAndSessionIdsAreGuids) {
  const json object = {{"zero", 0}, {"one", "1"}, {"sid", "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}, {"bad", "s-1"}};
  Params p(object);
  EXPECT_FALSE(p.count("zero", 10, 1));
  EXPECT_EQ(**p.count("one", 10, 1), 1u);
  EXPECT_EQ((**p.session_id("sid")).to_string(), "a1b2c3d4-e5f6-4890-abcd-ef1234567890");
  auto bad = p.session_id("bad");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("'bad'"), std::string::npos);
}

TEST(Params, OwnerPatternExcludesControlAndFormatCodeUnits) {
  const std::string& pattern = owner_pattern();
  // Spot checks of the generated text: the BMP class, the surrogate pairs of
  // U+E0001 (DB40 DC01) and U+1D173..1D17A (D834 DD73-DD7A).
  for (const char* piece : {"\\u0000-\\u001f", "\\u202a-\\u202e", "\\ufeff", "\\udb40[\\udc01]",
                            "\\ud834[\\udd73-\\udd7a]"})
    EXPECT_NE(pattern.find(piece), std::string::npos) << piece << " in " << pattern;
  EXPECT_TRUE(pattern.starts_with("^(?:") && pattern.ends_with(")+$")) << pattern;
}

TEST(Params, RequiredReportsMissingKey) {
  const json object = json::object();
  auto r = required(Params(object).size("sizeBytes"), "sizeBytes");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "missing required parameter 'sizeBytes'");
}

}  // namespace
}  // namespace memd
