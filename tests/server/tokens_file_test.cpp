// The --tokens file: what it accepts, what it refuses (with the line), and
// that a file others may read is refused before a byte of it is trusted.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "server/http/tokens_file.hpp"

namespace memd {
namespace {

std::string error_of(std::string_view text) {
  auto r = parse_tokens(text, "tokens");
  return r ? "" : r.error().message;
}

TEST(TokensFile, ParsesEntriesCommentsBlankLinesAndCrlf) {
  const std::string text =
      "# who may call memd\n"
      "\n"
      "alice-token-1 alice\n"
      "  \t \n"
      "bob+token/2== bob\r\n"
      "   # indented comment\n"
      "root.Token_3~\tops\tadmin\n"
      "alice-token-2 alice";  // no final newline
  auto table = parse_tokens(text, "tokens");
  ASSERT_TRUE(table) << table.error().message;
  ASSERT_EQ(table->size(), 4u);
  EXPECT_EQ((*table)[0], (TokenEntry{"alice-token-1", "alice", false, 3}));
  EXPECT_EQ((*table)[1], (TokenEntry{"bob+token/2==", "bob", false, 5}));
  EXPECT_EQ((*table)[2], (TokenEntry{"root.Token_3~", "ops", true, 7}));
  EXPECT_EQ((*table)[3].owner, "alice") << "an owner may have several tokens";
  // What format_tokens writes reads back the same (the fuzz target's check).
  auto again = parse_tokens(format_tokens(*table), "again");
  ASSERT_TRUE(again);
  for (std::size_t i = 0; i < table->size(); ++i) {
    EXPECT_EQ((*again)[i].token, (*table)[i].token);
    EXPECT_EQ((*again)[i].owner, (*table)[i].owner);
    EXPECT_EQ((*again)[i].admin, (*table)[i].admin);
  }
}

TEST(TokensFile, MalformedLinesAreRefusedWithTheirLineNumber) {
  struct Case {
    std::string text;
    std::string expect;  // in the message
  };
  const Case cases[] = {
      {"ok-token alice\nlonely\n", "tokens:2: expected TOKEN OWNER [admin]"},
      {"t alice admin extra\n", "tokens:1: expected TOKEN OWNER [admin] separated by spaces, found 4"},
      {"# c\nt alice root\n", "tokens:2: the third field may only be 'admin'"},
      {"t alice ADMIN\n", "third field may only be 'admin'"},
      {"to\"ken alice\n", "tokens:1: the token is not a bearer token"},
      {"=abc alice\n", "not a bearer token"},
      {"ab=c alice\n", "not a bearer token"},
      {std::string("tok\0en alice\n", 13), "not a bearer token"},
      {"t al\xe2\x80\xaeice\n", "tokens:1: owner contains U+202E"},
      {"t " + std::string(129, 'o') + "\n", "tokens:1: owner is 129 bytes"},
      {"t ali\xff" "ce\n", "not valid UTF-8"},
      {"a alice\nb bob\n\na carol\n", "tokens:4: the token of line 1 again"},
      {"", "no tokens"},
      {"# only comments\n\n", "no tokens"},
  };
  for (const auto& c : cases) {
    const auto message = error_of(c.text);
    EXPECT_NE(message.find(c.expect), std::string::npos) << "got: " << message;
    auto r = parse_tokens(c.text, "tokens");
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    }
  }
  // Messages never print a token.
  EXPECT_EQ(error_of("s3cret-value alice\ns3cret-value bob\n").find("s3cret"), std::string::npos);
  EXPECT_EQ(error_of("s3cret\"x alice\n").find("s3cret"), std::string::npos);
}

class TokensFileOnDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/memd-tokens-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/tokens";
    std::ofstream(path_) << "alice-token alice\nroot-token ops admin\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST_F(TokensFileOnDisk, OnlyAPrivateFileIsRead) {
  for (mode_t ok : {0600, 0400, 0700}) {
    ASSERT_EQ(::chmod(path_.c_str(), ok), 0);
    auto table = load_tokens_file(path_);
    EXPECT_TRUE(table) << std::oct << ok << ": " << table.error().message;
  }
  for (mode_t bad : {0644, 0640, 0604, 0660, 0620, 0602, 0666}) {
    ASSERT_EQ(::chmod(path_.c_str(), bad), 0);
    auto table = load_tokens_file(path_);
    ASSERT_FALSE(table) << std::oct << bad;
    EXPECT_EQ(table.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(table.error().message.find("chmod 600"), std::string::npos) << table.error().message;
    EXPECT_NE(table.error().message.find(path_), std::string::npos) << table.error().message;
  }
}

TEST_F(TokensFileOnDisk, MissingDirectoriesAndHugeFilesAreRefused) {
  EXPECT_EQ(load_tokens_file(dir_ + "/nope").error().code, ErrorCode::not_found);
  ASSERT_EQ(::chmod(dir_.c_str(), 0700), 0);
  EXPECT_NE(load_tokens_file(dir_).error().message.find("not a regular file"), std::string::npos);
  {
    std::ofstream big(path_);
    const std::string line = "token-abcdefghijklmnop alice\n";
    for (std::uint64_t n = 0; n <= kMaxTokensFileBytes / line.size(); ++n) big << line;
  }
  ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
  auto big = load_tokens_file(path_);
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message.find("over the"), std::string::npos) << big.error().message;
}

TEST_F(TokensFileOnDisk, ParseErrorsNameTheFile) {
  std::ofstream(path_) << "alice-token alice\nbroken\n";
  ASSERT_EQ(::chmod(path_.c_str(), 0600), 0);
  auto r = load_tokens_file(path_);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find(path_ + ":2:"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace memd
