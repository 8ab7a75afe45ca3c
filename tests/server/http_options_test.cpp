// Listen-address parsing and the loopback-or-token rule.
#include <gtest/gtest.h>

#include "server/http/http_options.hpp"

namespace memd {
namespace {

TEST(HttpOptions, ParsesListen) {
  HttpOptions o;
  ASSERT_TRUE(parse_listen("127.0.0.1:7870", o));
  EXPECT_EQ(o.host, "127.0.0.1");
  EXPECT_EQ(o.port, 7870);
  ASSERT_TRUE(parse_listen("[::1]:0", o));
  EXPECT_EQ(o.host, "::1");
  EXPECT_EQ(o.port, 0);
  for (auto bad : {"7870", "host:", ":80", "127.0.0.1:99999", "127.0.0.1:-1", "[::1]80", "a:b"})
    EXPECT_FALSE(parse_listen(bad, o)) << bad;
}

TEST(HttpOptions, Loopback) {
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("127.0.0.2"));
  EXPECT_TRUE(is_loopback_host("localhost"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
  EXPECT_FALSE(is_loopback_host("10.1.2.3"));
  EXPECT_FALSE(is_loopback_host("::"));
  EXPECT_FALSE(is_loopback_host("example.com"));
}

TEST(HttpOptions, NonLoopbackNeedsAToken) {
  HttpOptions o;
  o.host = "0.0.0.0";
  auto refused = validate_http_options(o);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(refused.error().message.find("--token"), std::string::npos);
  o.token = "secret";
  EXPECT_TRUE(validate_http_options(o));
  o.threads = 0;
  EXPECT_FALSE(validate_http_options(o));
}

TEST(HttpOptions, TokensCountOffLoopbackAndMayNotRepeatTheAdminToken) {
  HttpOptions o;
  o.host = "10.1.2.3";
  o.tokens = {{"alice-token", "alice", false, 1}};
  EXPECT_TRUE(validate_http_options(o)) << "--tokens alone must be enough off loopback";
  o.token = "alice-token";
  auto clash = validate_http_options(o);
  ASSERT_FALSE(clash);
  EXPECT_NE(clash.error().message.find("line 1"), std::string::npos) << clash.error().message;
  o.token = "other";
  EXPECT_TRUE(validate_http_options(o));
}

}  // namespace
}  // namespace memd
