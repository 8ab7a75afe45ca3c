// The safetensors header parser: what a valid header gives, and that every
// kind of malformed header — from a file or handed over as text — is refused
// with invalid_argument saying what is wrong and where, without reading (or
// allocating) past what the file holds.
#include "models/safetensors.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "models/dtype.hpp"
#include "models/strict_json.hpp"
#include "models/safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;

// The header text as the file's N bytes, with `data_bytes` after it.
Result<SafetensorsHeader> parse(const std::string& json, std::uint64_t data_bytes) {
  return parse_safetensors_header(json, 8 + json.size() + data_bytes);
}

void expect_refused(const Result<SafetensorsHeader>& r, std::string_view says) {
  ASSERT_FALSE(r) << "accepted; expected a refusal saying: " << says;
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << r.error().message;
  EXPECT_NE(r.error().message.find(says), std::string::npos) << "message: " << r.error().message;
}

TEST(Dtype, NamesRoundTripAndSizesAreTheFormats) {
  for (const Dtype d : kAllDtypes) {
    ASSERT_EQ(parse_dtype(to_string(d)), d) << to_string(d);
    EXPECT_GT(dtype_bits(d), 0u);
  }
  EXPECT_EQ(parse_dtype("F8_E4M3"), Dtype::F8_E4M3);
  EXPECT_EQ(parse_dtype("BF16"), Dtype::BF16);
  EXPECT_FALSE(parse_dtype("f16")) << "names are case-sensitive, as the format's are";
  EXPECT_FALSE(parse_dtype("F17"));
  EXPECT_FALSE(parse_dtype(""));
  EXPECT_EQ(dtype_bytes(Dtype::F16), 2u);
  EXPECT_EQ(dtype_bytes(Dtype::BF16), 2u);
  EXPECT_EQ(dtype_bytes(Dtype::F8_E5M2), 1u);
  EXPECT_EQ(dtype_bytes(Dtype::BOOL), 1u);
  EXPECT_EQ(dtype_bytes(Dtype::C64), 8u);
  EXPECT_EQ(dtype_bytes(Dtype::U64), 8u);
  EXPECT_EQ(dtype_bits(Dtype::F4), 4u);
  EXPECT_EQ(dtype_bytes(Dtype::F4), 0u) << "a sub-byte type has no per-element byte size";
  EXPECT_EQ(dtype_bits(Dtype::F6_E3M2), 6u);
}

TEST(SafetensorsHeader, ParsesAValidHeaderSortedByOffset) {
  const std::string json = R"({"b": {"dtype": "F32", "shape": [2, 3], "data_offsets": [8, 32]},
    "__metadata__": {"format": "pt", "note": "x"},
    "a": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}})";
  auto h = parse(json, 40);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->header_bytes, json.size());
  EXPECT_EQ(h->data_offset, 8 + json.size());
  EXPECT_EQ(h->data_bytes, 40u);
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].name, "a");
  EXPECT_EQ(h->tensors[0].dtype, Dtype::BF16);
  EXPECT_EQ(h->tensors[0].shape, (std::vector<std::uint64_t>{4}));
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].begin, 8u);
  EXPECT_EQ(h->tensors[1].end, 32u);
  EXPECT_EQ(h->used_bytes(), 32u);
  const std::vector<std::pair<std::string, std::string>> meta{{"format", "pt"}, {"note", "x"}};
  EXPECT_EQ(h->metadata, meta);
}

TEST(SafetensorsHeader, ScalarsZeroSizeTensorsGapsAndSubByteTypes) {
  // A scalar (shape []) is one element; a zero-size tensor may sit anywhere,
  // even inside another's bytes; a gap between tensors is allowed (see the
  // header for why); F4 [4] is 2 bytes.
  auto h = parse(R"({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]},
    "z": {"dtype": "F16", "shape": [0, 7], "data_offsets": [2, 2]},
    "g": {"dtype": "U8", "shape": [3], "data_offsets": [10, 13]},
    "q": {"dtype": "F4", "shape": [2, 2], "data_offsets": [13, 15]}})",
                 20);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->tensors.size(), 4u);
  expect_refused(parse(R"({"q": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}})", 2), "not whole bytes");
  auto empty = parse("{}", 0);
  ASSERT_TRUE(empty) << "a file of no tensors is valid safetensors";
  EXPECT_TRUE(empty->tensors.empty());
}

TEST(SafetensorsHeader, NamesTheTensorAndTheMismatchInItsMessage) {
  auto r = parse(R"({"unet.conv.weight": {"dtype": "F16", "shape": [3, 2], "data_offsets": [10, 20]}})", 20);
  expect_refused(r, "tensor 'unet.conv.weight': data_offsets [10, 20] hold 10 bytes, shape [3, 2] × F16 needs 12");
}

struct Malformed {
  const char* what;
  std::string json;
  std::uint64_t data_bytes;
  const char* says;
};

class SafetensorsMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(SafetensorsMalformed, IsRefusedSayingWhat) {
  const Malformed& m = GetParam();
  SCOPED_TRACE(m.what);
  expect_refused(parse(m.json, m.data_bytes), m.says);
}

std::string entry(const std::string& name, const std::string& body) { return "{\"" + name + "\": " + body + "}"; }

INSTANTIATE_TEST_SUITE_P(
    Headers, SafetensorsMalformed,
    ::testing::Values(
        Malformed{"empty", "", 0, "not valid JSON"},
        Malformed{"not JSON", "{\"a\": ", 0, "not valid JSON"},
        Malformed{"garbage after the object", "{} x", 0, "not valid JSON"},
        Malformed{"not an object", "[1, 2]", 0, "not a JSON object"},
        Malformed{"a string", "\"x\"", 0, "not a JSON object"},
        Malformed{"entry not an object", R"({"a": 3})", 0, "tensor 'a': entry is number"},
        Malformed{"no dtype", entry("a", R"({"shape": [1], "data_offsets": [0, 1]})"), 1, "tensor 'a': no \"dtype\""},
        Malformed{"no shape", entry("a", R"({"dtype": "U8", "data_offsets": [0, 1]})"), 1, "no \"shape\""},
        Malformed{"no offsets", entry("a", R"({"dtype": "U8", "shape": [1]})"), 1, "no \"data_offsets\""},
        Malformed{"extra key", entry("a", R"({"dtype": "U8", "shape": [1], "data_offsets": [0, 1], "x": 1})"), 1,
                  "unexpected key 'x'"},
        Malformed{"dtype a number", entry("a", R"({"dtype": 16, "shape": [1], "data_offsets": [0, 1]})"), 1,
                  "dtype is number"},
        Malformed{"unknown dtype", entry("a", R"({"dtype": "F17", "shape": [1], "data_offsets": [0, 2]})"), 2,
                  "tensor 'a': unknown dtype 'F17'"},
        Malformed{"shape not an array", entry("a", R"({"dtype": "U8", "shape": 1, "data_offsets": [0, 1]})"), 1,
                  "shape is number"},
        Malformed{"negative dim", entry("a", R"({"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]})"), 1,
                  "shape dimension 0 is a negative integer"},
        Malformed{"float dim", entry("a", R"({"dtype": "U8", "shape": [2, 1.5], "data_offsets": [0, 3]})"), 3,
                  "shape dimension 1 is a non-integer number"},
        Malformed{"dim past 2^64", entry("a", R"({"dtype": "U8", "shape": [18446744073709551616], "data_offsets": [0, 1]})"),
                  1, "shape dimension 0 is a non-integer number"},
        Malformed{"dim a string", entry("a", R"({"dtype": "U8", "shape": ["3"], "data_offsets": [0, 3]})"), 3,
                  "shape dimension 0 is string"},
        Malformed{"shape product overflows",
                  entry("a", R"({"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 0]})"), 0,
                  "overflows 64 bits"},
        Malformed{"product wraps to the offsets",  // 2^62 × 4 bytes wraps to 0 without the check
                  entry("a", R"({"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 0]})"), 0,
                  "overflows 64 bits"},
        Malformed{"shape mismatch", entry("a", R"({"dtype": "F16", "shape": [3], "data_offsets": [0, 4]})"), 4,
                  "hold 4 bytes, shape [3] × F16 needs 6"},
        Malformed{"begin after end", entry("a", R"({"dtype": "U8", "shape": [2], "data_offsets": [4, 2]})"), 4,
                  "data_offsets [4, 2] begin after they end"},
        Malformed{"offsets past the data", entry("a", R"({"dtype": "U8", "shape": [4], "data_offsets": [4, 8]})"), 7,
                  "end past the data section (7 bytes)"},
        Malformed{"offsets huge", entry("a", R"({"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]})"),
                  7, "end past the data section"},
        Malformed{"one offset", entry("a", R"({"dtype": "U8", "shape": [1], "data_offsets": [0]})"), 1,
                  "not an array of two integers"},
        Malformed{"three offsets", entry("a", R"({"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]})"), 2,
                  "not an array of two integers"},
        Malformed{"negative offset", entry("a", R"({"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]})"), 2,
                  "are not non-negative integers"},
        Malformed{"overlap",
                  R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                      "b": {"dtype": "U8", "shape": [4], "data_offsets": [3, 7]}})",
                  8, "tensors 'a' [0, 4] and 'b' [3, 7] overlap"},
        Malformed{"overlap inside a big one",
                  R"({"big": {"dtype": "U8", "shape": [10], "data_offsets": [0, 10]},
                      "mid": {"dtype": "U8", "shape": [1], "data_offsets": [8, 9]},
                      "small": {"dtype": "U8", "shape": [1], "data_offsets": [4, 5]}})",
                  10, "tensors 'big' [0, 10] and 'small' [4, 5] overlap"},
        Malformed{"same range twice",
                  R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                      "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}})",
                  4, "overlap"},
        Malformed{"metadata not an object", R"({"__metadata__": ["x"]})", 0, "__metadata__ is array, not an object"},
        Malformed{"metadata value a number", R"({"__metadata__": {"epoch": 3}})", 0,
                  "__metadata__ 'epoch' is number, not a string"},
        Malformed{"metadata nested", R"({"__metadata__": {"a": {"b": "c"}}})", 0, "__metadata__ 'a' is object"},
        Malformed{"nesting past the bound", R"({"__metadata__": {"a": [[[[[[[[["x"]]]]]]]]]}})", 0,
                  "nesting deeper than 8 levels"},
        Malformed{"duplicate tensor",
                  R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                      "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
                  2, "key 'a' appears twice"},
        Malformed{"duplicate key in an entry",
                  entry("a", R"({"dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1]})"), 1,
                  "key 'dtype' appears twice"},
        Malformed{"empty name", entry("", R"({"dtype": "U8", "shape": [1], "data_offsets": [0, 1]})"), 1,
                  "empty name"},
        Malformed{"invalid UTF-8 in a name", "{\"a\xff\": {}}", 0, "not valid JSON"},
        Malformed{"hostile name is escaped", entry("\\u001b[31mred", "3"), 0, "tensor '\\x1b[31mred'"}));

TEST(SafetensorsHeader, DeepNestingIsRefusedWithoutWalkingIt) {
  // A million '[' would take a recursive parser down; this one stops at the
  // ninth level.
  const std::string deep = "{\"__metadata__\": " + std::string(1'000'000, '[') + std::string(1'000'000, ']') + "}";
  const auto start = std::chrono::steady_clock::now();
  expect_refused(parse(deep, 0), "nesting deeper than 8 levels");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
}

TEST(SafetensorsHeader, AHeaderLongerThanTheFileIsRefused) {
  expect_refused(parse_safetensors_header("{}", 9), "header of 2 bytes runs past the end of the file (9 bytes)");
  EXPECT_TRUE(parse_safetensors_header("{}", 10));
}

TEST(SafetensorsFile, ReadsWhatTheWriterWrote) {
  TempDir dir;
  const auto path = dir.path / "model.safetensors";
  write_safetensors(path, {{"w", {2, 3}}, {"b", {3}, "F32"}}, {{"format", "pt"}});
  auto f = ModelFile::open(path);
  ASSERT_TRUE(f);
  auto h = read_safetensors_header(*f);
  ASSERT_TRUE(h) << h.error().message;
  EXPECT_EQ(h->header_bytes % 8, 0u) << "the writer pads to 8, spaces are allowed after the JSON";
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[0].name, "w");
  EXPECT_EQ(h->tensors[1].name, "b");
  EXPECT_EQ(h->tensors[1].begin, 12u);
  EXPECT_EQ(h->data_offset + h->data_bytes, f->size());
}

Result<SafetensorsHeader> read_file(const fs::path& path) {
  auto f = ModelFile::open(path);
  if (!f) return fail(f.error());
  return read_safetensors_header(*f);
}

TEST(SafetensorsFile, BadLengthsAreRefusedBeforeAnythingIsAllocated) {
  TempDir dir;
  const auto p = dir.path / "bad.safetensors";

  write_bytes(p, "abc");
  expect_refused(read_file(p), "3 bytes, too short for a safetensors file");

  write_raw_safetensors(p, "{}", "", 100);
  expect_refused(read_file(p), "declares a header of 100 bytes, but only 2 follow the length");

  // 2^40 bytes declared: refused from the 8 bytes alone, no 1 TiB buffer.
  write_raw_safetensors(p, "{}", "", std::uint64_t{1} << 40);
  expect_refused(read_file(p), "declares a header of 1099511627776 bytes, more than the format's 104857600");

  write_raw_safetensors(p, "{}", "", ~std::uint64_t{0});
  expect_refused(read_file(p), "more than the format's");

  write_raw_safetensors(p, "{}", "", kMaxSafetensorsHeaderBytes + 1);
  expect_refused(read_file(p), "more than the format's");

  write_raw_safetensors(p, "{}", "", 0);
  expect_refused(read_file(p), "not valid JSON");
}

TEST(SafetensorsFile, MessagesNameTheFile) {
  TempDir dir;
  const auto p = dir.path / "model.safetensors";
  write_raw_safetensors(p, R"({"unet.conv.weight": {"dtype": "F16", "shape": [3, 2], "data_offsets": [10, 20]}})",
                        std::string(20, '\0'));
  auto r = read_file(p);
  expect_refused(r, p.string() + ": tensor 'unet.conv.weight': data_offsets [10, 20] hold 10 bytes");
}

TEST(SafetensorsFile, AFileTruncatedBeforeItsHeaderIsReadIsAnError) {
  TempDir dir;
  const auto p = dir.path / "t.safetensors";
  write_safetensors(p, {{"w", {64}}});
  auto f = ModelFile::open(p);
  ASSERT_TRUE(f);
  ASSERT_EQ(::truncate(p.c_str(), 20), 0);  // the length survives, the header does not
  auto r = read_safetensors_header(*f);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_file) << "it changed since it was opened";
  EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;
}

TEST(StrictJson, QuotesHostileTextSafely) {
  EXPECT_EQ(quote_for_message("plain.name"), "'plain.name'");
  EXPECT_EQ(quote_for_message("a'b\\c\n"), "'a\\x27b\\x5cc\\x0a'");
  EXPECT_EQ(quote_for_message("\xc3\xa9"), "'\\xc3\\xa9'") << "non-ASCII as bytes: a cut never splits UTF-8";
  EXPECT_EQ(quote_for_message(std::string(500, 'x'), 4), "'xxxx...'");
  auto dup = parse_strict_json(R"({"a": {"k": 1, "k": 2}})");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message.find("key 'k' appears twice"), std::string::npos);
  auto ok = parse_strict_json(R"({"a": [1, {"b": null}], "c": "d"} )");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ((*ok)["a"][1]["b"], nullptr);
  EXPECT_EQ((*ok)["c"], "d");
}

}  // namespace
}  // namespace memd
