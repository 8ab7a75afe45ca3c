// The pure half of request decoding: percent-decoding, query pairs, route
// matching (placeholders, 405 Allow lists, escaped slashes), and the header
// checks, the last fed real bytes through Beast's parser so the error codes
// it produces are the ones mapped.
#include <gtest/gtest.h>

#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "protocol/action_table.hpp"
#include "server/http/request_target.hpp"

namespace memd {
namespace {

TEST(RequestTarget, PercentDecoding) {
  EXPECT_EQ(percent_decode("a%20b%2Fc", false), "a b/c");
  EXPECT_EQ(percent_decode("a+b", false), "a+b");
  EXPECT_EQ(percent_decode("a+b", true), "a b");
  // Malformed escapes stay as written, including at the very end.
  EXPECT_EQ(percent_decode("%", false), "%");
  EXPECT_EQ(percent_decode("%4", false), "%4");
  EXPECT_EQ(percent_decode("%zz%41", false), "%zzA");
  EXPECT_EQ(percent_decode("100%", false), "100%");
  EXPECT_EQ(percent_decode("%00", false), std::string(1, '\0'));
}

TEST(RequestTarget, QueryPairs) {
  EXPECT_TRUE(query_pairs("/x").empty());
  EXPECT_TRUE(query_pairs("/x?").empty());
  const auto pairs = query_pairs("/x?a=1&&b=%20two+3&flag&=v&c=x=y");
  ASSERT_EQ(pairs.size(), 5u);
  EXPECT_EQ(pairs[0], (std::pair<std::string, std::string>{"a", "1"}));
  EXPECT_EQ(pairs[1], (std::pair<std::string, std::string>{"b", " two 3"}));
  EXPECT_EQ(pairs[2], (std::pair<std::string, std::string>{"flag", ""}));
  EXPECT_EQ(pairs[3], (std::pair<std::string, std::string>{"", "v"}));
  EXPECT_EQ(pairs[4], (std::pair<std::string, std::string>{"c", "x=y"}));
  EXPECT_EQ(target_path("/a/b?c=d?e"), "/a/b");
}

TEST(RequestTarget, RoutesMatchSegmentBySegment) {
  RouteTable routes(action_table());
  routes.add(HttpMethod::Get, "/api/openapi.json");
  const std::string id = "a1b2c3d4-e5f6-4890-abcd-ef1234567890";

  auto read = routes.find(Verb::Get, "/api/memory/allocations/" + id + "/data");
  ASSERT_TRUE(read.match);
  EXPECT_EQ(read.match->action->name, "memory_read");
  ASSERT_EQ(read.match->path_params.size(), 1u);
  EXPECT_EQ(read.match->path_params[0], (std::pair<std::string, std::string>{"allocationId", id}));
  // HEAD is GET without the body.
  auto head = routes.find(Verb::Head, "/api/memory/allocations/" + id + "/data");
  ASSERT_TRUE(head.match);
  EXPECT_EQ(head.match->action->name, "memory_read");
  EXPECT_EQ(routes.find(Verb::Put, "/api/memory/allocations/" + id + "/data").match->action->name, "memory_write");

  // An escaped slash stays inside its segment instead of making a new one.
  auto escaped = routes.find(Verb::Get, "/api/memory/allocations/a%2Fb");
  ASSERT_TRUE(escaped.match);
  EXPECT_EQ(escaped.match->path_params[0].second, "a/b");
  // Literal segments compare decoded.
  EXPECT_TRUE(routes.find(Verb::Get, "/api/memory/%61llocations").match);
  // Empty placeholders, trailing slashes and extra segments do not match.
  EXPECT_FALSE(routes.find(Verb::Get, "/api/memory/allocations//data").match);
  EXPECT_FALSE(routes.find(Verb::Get, "/api/memory/allocations/").match);
  EXPECT_FALSE(routes.find(Verb::Get, "/api/memory/usage/extra").match);
  EXPECT_FALSE(routes.find(Verb::Get, "").match);
  EXPECT_FALSE(routes.find(Verb::Get, "/").match);

  // The transport's own route.
  auto openapi = routes.find(Verb::Get, "/api/openapi.json");
  ASSERT_TRUE(openapi.match);
  EXPECT_EQ(openapi.match->action, nullptr);
  EXPECT_EQ(openapi.match->path_template, "/api/openapi.json");
}

TEST(RequestTarget, AWrongMethodOnAKnownPathListsWhatItTakes) {
  RouteTable routes(action_table());
  routes.add(HttpMethod::Get, "/api/openapi.json");
  const auto allow = [&](Verb verb, std::string_view path) {
    auto found = routes.find(verb, path);
    EXPECT_FALSE(found.match) << path;
    return found.allow;
  };
  EXPECT_EQ(allow(Verb::Post, "/api/memory/allocations/x/data"), "GET, HEAD, PUT");
  EXPECT_EQ(allow(Verb::Delete, "/api/memory/allocations/x/data"), "GET, HEAD, PUT");
  EXPECT_EQ(allow(Verb::Post, "/api/memory/allocations/x"), "GET, HEAD, DELETE");
  EXPECT_EQ(allow(Verb::Other, "/api/memory/allocations"), "GET, HEAD, POST");
  EXPECT_EQ(allow(Verb::Post, "/api/memory/limits"), "GET, HEAD, PUT");
  EXPECT_EQ(allow(Verb::Head, "/api/memory/optimize"), "POST");
  EXPECT_EQ(allow(Verb::Delete, "/api/openapi.json"), "GET, HEAD");
  EXPECT_EQ(allow(Verb::Get, "/no/such/path"), "");
  EXPECT_EQ(parse_verb("GET"), Verb::Get);
  EXPECT_EQ(parse_verb("get"), Verb::Other);
  EXPECT_EQ(parse_verb("PATCH"), Verb::Other);
}

TEST(RequestTarget, TargetLengthAndJsonContentType) {
  EXPECT_TRUE(check_target(std::string(kMaxTargetBytes, 'a')));
  auto longer = check_target(std::string(kMaxTargetBytes + 1, 'a'));
  ASSERT_FALSE(longer);
  EXPECT_EQ(longer.error().code, ErrorCode::uri_too_long);

  EXPECT_TRUE(check_json_content_type("application/json", true));
  EXPECT_TRUE(check_json_content_type("APPLICATION/Json;charset=utf-8", true));
  EXPECT_TRUE(check_json_content_type(" application/json ; charset=\"utf-8\"", true));
  EXPECT_TRUE(check_json_content_type(std::nullopt, false));
  for (std::optional<std::string_view> bad :
       {std::optional<std::string_view>("text/plain"), std::optional<std::string_view>("application/jsonp"),
        std::optional<std::string_view>("application/json-seq"), std::optional<std::string_view>(""),
        std::optional<std::string_view>()}) {
    auto refused = check_json_content_type(bad, true);
    ASSERT_FALSE(refused) << bad.value_or("(none)");
    EXPECT_EQ(refused.error().code, ErrorCode::unsupported_media_type);
  }
  // Without a body there is nothing to misread, whatever the header says.
  EXPECT_TRUE(check_json_content_type("text/plain", false));
}

// Feeds `head` to Beast's parser 4 KiB at a time, as its reader does from a
// socket (what it consumed is gone, the rest offered again with the next
// bytes), and maps the refusal.
Error parse_refusal(const std::string& head) {
  boost::beast::http::request_parser<boost::beast::http::empty_body> parser;
  parser.header_limit(kMaxHeaderBytes);
  parser.body_limit(boost::none);
  std::string pending;
  boost::beast::error_code ec;
  for (std::size_t at = 0; at < head.size(); at += 4096) {
    pending += head.substr(at, 4096);
    for (;;) {
      const std::size_t used = parser.put(boost::asio::buffer(pending), ec);
      pending.erase(0, used);
      if (ec != boost::beast::http::error::need_more || used == 0) break;
    }
    if (ec != boost::beast::http::error::need_more) break;
  }
  EXPECT_TRUE(ec && ec != boost::beast::http::error::need_more) << "the parser accepted: " << head.substr(0, 100);
  return header_parse_error(ec, parser.get().target(), pending);
}

TEST(RequestTarget, ParserRefusalsMapToTheirCodes) {
  auto conflicting = parse_refusal("POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
  EXPECT_EQ(conflicting.code, ErrorCode::invalid_argument);
  EXPECT_NE(conflicting.message.find("conflicting Content-Length"), std::string::npos);
  auto both = parse_refusal("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n");
  EXPECT_EQ(both.code, ErrorCode::invalid_argument);
  // Over the header limit: a long target (its request line not yet ended,
  // or ended) is 414; long fields are 400.
  auto long_target = parse_refusal("GET /" + std::string(kMaxHeaderBytes + 10, 'a'));
  EXPECT_EQ(long_target.code, ErrorCode::uri_too_long);
  auto long_line = parse_refusal("GET /" + std::string(kMaxTargetBytes + 10, 'a') + " HTTP/1.1\r\nX: " +
                                 std::string(kMaxHeaderFieldBytes + 1000, 'b') + "\r\n");
  EXPECT_EQ(long_line.code, ErrorCode::uri_too_long);
  auto long_fields = parse_refusal("GET /x HTTP/1.1\r\nX: " + std::string(kMaxHeaderBytes, 'b') + "\r\n");
  EXPECT_EQ(long_fields.code, ErrorCode::invalid_argument);
  EXPECT_NE(long_fields.message.find("header fields"), std::string::npos);
  EXPECT_EQ(parse_refusal("GARBAGE\r\n\r\n").code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace memd
