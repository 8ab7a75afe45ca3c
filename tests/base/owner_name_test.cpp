// The one owner rule: bytes, not characters; valid UTF-8 only; no Cc or Cf
// code point (checked against code points picked by hand from the Unicode
// tables, not against the table the rule reads).
#include <gtest/gtest.h>

#include <string>

#include "memd/owner_name.hpp"

namespace memd {
namespace {

std::string why(std::string_view owner) {
  auto r = check_owner(owner);
  return r ? "" : r.error().message;
}

TEST(OwnerName, AcceptsOrdinaryNamesUpTo128Bytes) {
  for (const char* ok : {"alice", "worker-1", "stdio-4242", "a b", "ops@example", "é", "日本語", "🙂", "x"})
    EXPECT_TRUE(check_owner(ok)) << ok << ": " << why(ok);
  EXPECT_TRUE(check_owner(std::string(128, 'o')));
  // 42 three-byte characters are 126 bytes; 43 are 129: the bound is bytes.
  std::string kanji;
  for (int i = 0; i < 42; ++i) kanji += "日";
  EXPECT_TRUE(check_owner(kanji));
  kanji += "日";
  EXPECT_EQ(kanji.size(), 129u);
  EXPECT_NE(why(kanji).find("129 bytes"), std::string::npos) << why(kanji);
}

TEST(OwnerName, RefusesEmptyLongAndMalformed) {
  EXPECT_NE(why("").find("empty"), std::string::npos);
  EXPECT_NE(why(std::string(129, 'o')).find("at most 128 bytes"), std::string::npos);
  for (std::string bad : {std::string("\xff"), std::string("ali\xc3"), std::string("\xc0\xaf"),  // overlong '/'
                          std::string("\xe0\x80\xaf"), std::string("\xed\xa0\x80"),               // surrogate
                          std::string("\xf4\x90\x80\x80"), std::string("\x80" "abc"),             // > U+10FFFF, stray
                          std::string("a\xe2\x80")}) {
    auto r = check_owner(bad);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("not valid UTF-8"), std::string::npos) << r.error().message;
  }
}

TEST(OwnerName, RefusesControlAndFormatCharacters) {
  struct Case {
    std::string text;
    const char* code_point;
  };
  const Case cases[] = {
      {std::string("al\0ice", 6), "U+0000"},
      {"alice\n", "U+000A"},
      {"\t", "U+0009"},
      {"a\x7f", "U+007F"},
      {"a\xc2\x85", "U+0085"},                      // NEL (C1 control)
      {"soft\xc2\xad" "hyphen", "U+00AD"},          // soft hyphen
      {"alice\xe2\x80\xae" "ecila", "U+202E"},      // RIGHT-TO-LEFT OVERRIDE
      {"zero\xe2\x80\x8bwidth", "U+200B"},          // ZERO WIDTH SPACE
      {"\xe2\x81\xa6x", "U+2066"},                  // LEFT-TO-RIGHT ISOLATE
      {"\xef\xbb\xbf" "bom", "U+FEFF"},             // BOM
      {"\xd8\x80", "U+0600"},                       // ARABIC NUMBER SIGN
      {"\xf3\xa0\x80\x81", "U+E0001"},              // LANGUAGE TAG
      {"\xf3\xa0\x81\xbf", "U+E007F"},              // CANCEL TAG
      {"\xf0\x9d\x85\xb3", "U+1D173"},              // MUSICAL SYMBOL BEGIN BEAM
  };
  for (const auto& c : cases) {
    auto r = check_owner(c.text);
    ASSERT_FALSE(r) << c.code_point;
    EXPECT_NE(r.error().message.find(c.code_point), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.find(c.text), std::string::npos) << "the message echoes the raw bytes";
  }
  // Neighbours of forbidden ranges are fine.
  for (const char* ok : {" ", "~", "\xc2\xa0" /* U+00A0 */, "\xc2\xae" /* U+00AE */, "\xe2\x80\x90" /* U+2010 */,
                         "\xe2\x80\xaf" /* U+202F */, "\xf3\xa0\x82\x80" /* U+E0080 */})
    EXPECT_TRUE(check_owner(ok)) << why(ok);
}

TEST(OwnerName, ForbiddenTableIsSortedAndDisjoint) {
  const auto table = owner_forbidden_code_points();
  ASSERT_FALSE(table.empty());
  for (std::size_t i = 0; i < table.size(); ++i) {
    EXPECT_LE(table[i].first, table[i].last);
    if (i > 0) {
      EXPECT_LT(table[i - 1].last + 1, table[i].first) << "ranges " << i - 1 << " and " << i;
    }
  }
}

}  // namespace
}  // namespace memd
