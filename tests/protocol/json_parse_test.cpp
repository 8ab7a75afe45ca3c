// Untrusted JSON: malformed text and deep nesting are errors, never crashes.
#include <gtest/gtest.h>

#include "protocol/json_parse.hpp"

namespace memd {
namespace {

TEST(JsonParse, ParsesObjects) {
  auto j = parse_request_json(R"({"a": [1, {"b": "]]]"}]})");
  ASSERT_TRUE(j);
  EXPECT_EQ((*j)["a"][1]["b"], "]]]");
}

TEST(JsonParse, MalformedIsInvalidArgument) {
  for (std::string_view text : {"", "{", "{\"a\":}", "nul", "{\"a\":1}}", "\xff\xfe"}) {
    auto j = parse_request_json(text);
    ASSERT_FALSE(j) << text;
    EXPECT_EQ(j.error().code, ErrorCode::invalid_argument);
  }
}

TEST(JsonParse, DepthLimitRejectsBeforeParsing) {
  const std::string deep(100000, '[');
  auto j = parse_request_json(deep);
  ASSERT_FALSE(j);
  EXPECT_EQ(j.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(j.error().message.find("deeper"), std::string::npos);

  std::string ok_depth = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(parse_request_json(ok_depth));
  std::string too_deep = "[" + ok_depth + "]";
  EXPECT_FALSE(parse_request_json(too_deep));
}

TEST(JsonParse, BracketsInsideStringsDoNotCount) {
  std::string text = "{\"a\": \"" + std::string(1000, '[') + "\\\"[\"}";
  EXPECT_EQ(json_nesting_depth(text, 64), 1u);
  EXPECT_TRUE(parse_request_json(text));
}

TEST(JsonParse, WireTextReplacesInvalidUtf8) {
  nlohmann::json j = {{"owner", std::string("bad\xff")}};
  EXPECT_NO_THROW(to_wire_text(j));
}

}  // namespace
}  // namespace memd
