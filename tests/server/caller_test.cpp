// Headers → Caller (server/http/caller.hpp), every mode: no tokens (labels
// and X-Memd-Admin), --token (the admin's), --tokens (the token names the
// owner; contradicting headers refused), and hostile header values.
#include <gtest/gtest.h>

#include <boost/beast/http/fields.hpp>

#include "server/http/caller.hpp"

namespace memd {
namespace {

const TokenTable kTokens = {{"alice-token", "alice", false, 1},
                            {"mallory-token", "mallory", false, 2},
                            {"root-token", "ops", true, 3}};

CallerHeaders bearer(std::string_view auth) { return CallerHeaders{.authorization = auth}; }

ErrorCode code_of(const Result<Caller>& r) { return r ? ErrorCode::internal : r.error().code; }

TEST(CallerResolver, WithoutTokensTheOwnerIsALabelAndAdminIsAsked) {
  CallerResolver open("", {});
  EXPECT_FALSE(open.requires_token());
  auto anonymous = open.resolve(CallerHeaders{});
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->owner, "anonymous");
  EXPECT_FALSE(anonymous->admin);
  auto alice = open.resolve({.owner = "alice"});
  EXPECT_EQ(alice->owner, "alice");
  EXPECT_FALSE(alice->admin);
  auto admin = open.resolve({.owner = "ops", .admin = "true"});
  EXPECT_TRUE(admin->admin);
  EXPECT_FALSE(open.resolve({.admin = "false"})->admin);
  // A bearer token means nothing here (there is none to check it against).
  EXPECT_TRUE(open.resolve({.authorization = "Bearer whatever", .owner = "bob"}));
}

TEST(CallerResolver, TheSingleTokenIsTheAdminsAndTheOwnerIsTheLabel) {
  CallerResolver single("s3cret", {});
  EXPECT_TRUE(single.requires_token());
  EXPECT_EQ(code_of(single.resolve(CallerHeaders{})), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of(single.resolve(bearer("Bearer wrong"))), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of(single.resolve(bearer("Bearer s3cre"))), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of(single.resolve(bearer("Basic s3cret"))), ErrorCode::unauthenticated);
  auto admin = single.resolve({.authorization = "bearer s3cret", .owner = "worker-1"});
  ASSERT_TRUE(admin) << admin.error().message;
  EXPECT_TRUE(admin->admin);
  EXPECT_EQ(admin->owner, "worker-1");
  // X-Memd-Admin: false is honoured: act as a plain owner.
  EXPECT_FALSE(single.resolve({.authorization = "Bearer s3cret", .admin = "false"})->admin);
}

TEST(CallerResolver, WithTokensTheTokenNamesTheOwner) {
  CallerResolver tokens("", kTokens);
  auto alice = tokens.resolve(bearer("Bearer alice-token"));
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->owner, "alice");
  EXPECT_FALSE(alice->admin);
  auto root = tokens.resolve(bearer("Bearer root-token"));
  EXPECT_EQ(root->owner, "ops");
  EXPECT_TRUE(root->admin);
  // Agreeing headers are fine; contradicting ones are refused, not ignored.
  EXPECT_TRUE(tokens.resolve({.authorization = "Bearer alice-token", .owner = "alice"}));
  auto spoof = tokens.resolve({.authorization = "Bearer mallory-token", .owner = "alice"});
  ASSERT_FALSE(spoof);
  EXPECT_EQ(spoof.error().code, ErrorCode::permission_denied);
  EXPECT_NE(spoof.error().message.find("'mallory'"), std::string::npos) << spoof.error().message;
  EXPECT_EQ(code_of(tokens.resolve({.authorization = "Bearer mallory-token", .admin = "true"})),
            ErrorCode::permission_denied);
  EXPECT_TRUE(tokens.resolve({.authorization = "Bearer root-token", .admin = "true"})->admin);
  EXPECT_FALSE(tokens.resolve({.authorization = "Bearer root-token", .admin = "false"})->admin);
  EXPECT_EQ(code_of(tokens.resolve(bearer("Bearer alice-token2"))), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of(tokens.resolve({.owner = "alice"})), ErrorCode::unauthenticated);
  // --token beside --tokens is still the admin's, owner by label.
  CallerResolver both("s3cret", kTokens);
  auto admin = both.resolve({.authorization = "Bearer s3cret", .owner = "ops2"});
  EXPECT_TRUE(admin->admin);
  EXPECT_EQ(admin->owner, "ops2");
  EXPECT_EQ(both.resolve(bearer("Bearer alice-token"))->owner, "alice");
}

TEST(CallerResolver, HostileHeaderValuesAreRefused) {
  CallerResolver open("", {});
  const std::string nul("ali\0ce", 6);
  for (std::string_view bad : {std::string_view(nul), std::string_view("alice\xe2\x80\xae"),
                               std::string_view("ali\xff"), std::string_view(""), std::string_view("a\r\nb")}) {
    auto r = open.resolve({.owner = bad});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_EQ(r.error().message.rfind("header X-Memd-Owner: ", 0), 0u) << r.error().message;
  }
  const std::string long_owner(129, 'o');
  EXPECT_EQ(code_of(open.resolve({.owner = long_owner})), ErrorCode::invalid_argument);
  EXPECT_TRUE(open.resolve({.owner = std::string_view(long_owner).substr(1)}));
  for (std::string_view bad : {"yes", "TRUE", "1", "", "true "})
    EXPECT_EQ(code_of(open.resolve({.admin = bad})), ErrorCode::invalid_argument) << bad;
  for (std::string_view bad : {"", "s-1", "a1b2c3d4-e5f6-4890-abcd-ef123456789", "../etc/passwd"}) {
    auto r = open.resolve({.session = bad});
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    EXPECT_NE(r.error().message.find("X-Memd-Session"), std::string::npos) << r.error().message;
  }
  auto in_session = open.resolve({.session = "a1b2c3d4-e5f6-4890-abcd-ef1234567890"});
  ASSERT_TRUE(in_session);
  EXPECT_EQ(in_session->session->to_string(), "a1b2c3d4-e5f6-4890-abcd-ef1234567890");
  // An unauthenticated request hears only that.
  CallerResolver tokens("", kTokens);
  EXPECT_EQ(code_of(tokens.resolve({.owner = "ali\xff"})), ErrorCode::unauthenticated);
}

TEST(CallerResolver, HeadersGivenTwiceAreRefused) {
  CallerResolver open("", {});
  boost::beast::http::fields fields;
  fields.insert("X-Memd-Owner", "alice");
  EXPECT_EQ(open.resolve(fields)->owner, "alice");
  fields.insert("x-memd-owner", "mallory");
  auto twice = open.resolve(fields);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(twice.error().message.find("more than once"), std::string::npos);
  boost::beast::http::fields auth;
  auth.insert("Authorization", "Bearer alice-token");
  auth.insert("Authorization", "Bearer root-token");
  EXPECT_EQ(code_of(CallerResolver("", kTokens).resolve(auth)), ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace memd
