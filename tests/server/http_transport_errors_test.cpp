// Transport refusals, each with its own code from the closed list (issue 12):
// a known path with another method is 405 with Allow (an unknown path stays
// 404); an over-long request target is 414, long header fields 400; a JSON
// route sent another content type is 415; conflicting Content-Length headers
// are 400 with a message that says so. A refusal without a body keeps the
// connection; one whose body was not read closes it.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "server/http/request_target.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

std::string error_code_of(const std::string& response) {
  auto body = nlohmann::json::parse(body_of(response), nullptr, false);
  if (body.is_discarded() || !body.contains("error")) return "(no error body)";
  return body["error"]["code"];
}

std::string header_value(const std::string& response, std::string_view name) {
  const std::string lower = Socket::lowercase(response.substr(0, response.find("\r\n\r\n")));
  const auto at = lower.find("\r\n" + Socket::lowercase(std::string(name)) + ":");
  if (at == std::string::npos) return "";
  const auto start = at + 3 + name.size();
  std::string value = response.substr(start, response.find("\r\n", start) - start);
  while (!value.empty() && value.front() == ' ') value.erase(0, 1);
  return value;
}

TEST(HttpTransportErrors, AKnownPathWithAnotherMethodIs405WithAllow) {
  Server server;
  ASSERT_NE(server.port(), 0);
  Socket client(server.port());
  const std::string data = "/api/memory/allocations/00000000-0000-4000-8000-000000000000/data";
  const struct {
    std::string request;
    std::string allow;
  } cases[] = {
      {"POST " + data + " HTTP/1.1\r\nHost: memd\r\n\r\n", "GET, HEAD, PUT"},
      {"DELETE /healthz HTTP/1.1\r\nHost: memd\r\n\r\n", "GET, HEAD"},
      {"PATCH /api/memory/allocations HTTP/1.1\r\nHost: memd\r\n\r\n", "GET, HEAD, POST"},
      {"GET /api/memory/optimize HTTP/1.1\r\nHost: memd\r\n\r\n", "POST"},
      {"PUT /api/openapi.json HTTP/1.1\r\nHost: memd\r\nContent-Length: 0\r\n\r\n", "GET, HEAD"},
  };
  for (const auto& c : cases) {
    // Each on the same connection: a refusal without a body keeps it open.
    ASSERT_TRUE(client.send(c.request)) << c.request;
    const auto answer = client.response();
    ASSERT_TRUE(answer) << c.request;
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 405")) << *answer;
    EXPECT_EQ(header_value(*answer, "Allow"), c.allow) << c.request;
    EXPECT_EQ(error_code_of(*answer), "method_not_allowed") << *answer;
  }
  ASSERT_TRUE(client.send("GET /api/memory/nothing-here HTTP/1.1\r\nHost: memd\r\n\r\n"));
  const auto unknown = client.response();
  ASSERT_TRUE(unknown);
  EXPECT_TRUE(unknown->starts_with("HTTP/1.1 404")) << *unknown;
  EXPECT_EQ(header_value(*unknown, "Allow"), "");
}

TEST(HttpTransportErrors, AnOverLongTargetIs414AndLongHeaderFields400) {
  Server server;
  ASSERT_NE(server.port(), 0);
  // Just over the limit: parsed, then refused; the connection stays.
  {
    Socket client(server.port());
    const std::string target = "/healthz?pad=" + std::string(kMaxTargetBytes, 'x');
    ASSERT_TRUE(client.send("GET " + target + " HTTP/1.1\r\nHost: memd\r\n\r\n"));
    const auto answer = client.response();
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 414")) << answer->substr(0, 200);
    EXPECT_EQ(error_code_of(*answer), "uri_too_long");
    ASSERT_TRUE(client.send(kHealthz));
    EXPECT_TRUE(answered_ok(client.response()));
  }
  // Far over it, past the parser's whole header limit: still 414, not 400.
  {
    Socket client(server.port());
    ASSERT_TRUE(client.send("GET /healthz?pad=" + std::string(40 * 1024, 'x') + " HTTP/1.1\r\nHost: memd\r\n\r\n"));
    const auto answer = client.response();
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 414")) << answer->substr(0, 200);
    EXPECT_EQ(error_code_of(*answer), "uri_too_long");
  }
  // A short target with a header block over its own limit: 400.
  {
    Socket client(server.port());
    ASSERT_TRUE(client.send("GET /healthz HTTP/1.1\r\nHost: memd\r\nX-Pad: " + std::string(30 * 1024, 'y') +
                            "\r\n\r\n"));
    const auto answer = client.response();
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 400")) << answer->substr(0, 200);
    EXPECT_NE(answer->find("header fields"), std::string::npos) << *answer;
  }
  // A target at the limit with long (allowed) header fields is served.
  {
    Socket client(server.port());
    const std::string target = "/healthz?pad=" + std::string(kMaxTargetBytes - 13, 'x');
    ASSERT_TRUE(client.send("GET " + target + " HTTP/1.1\r\nHost: memd\r\nX-Pad: " + std::string(12 * 1024, 'y') +
                            "\r\n\r\n"));
    EXPECT_TRUE(answered_ok(client.response()));
  }
}

TEST(HttpTransportErrors, AJsonRouteSentAnotherContentTypeIs415) {
  Server server;
  ASSERT_NE(server.port(), 0);
  const std::string body = R"({"sizeBytes": 4096, "deviceId": "host:0"})";
  const auto post = [&](std::string_view type_header, std::string_view payload) {
    Socket client(server.port());
    std::string text = "POST /api/memory/allocations HTTP/1.1\r\nHost: memd\r\n" + std::string(type_header) +
                       "Content-Length: " + std::to_string(payload.size()) + "\r\n\r\n" + std::string(payload);
    EXPECT_TRUE(client.send(text));
    return client.response().value_or("(no answer)");
  };
  for (const char* refused : {"Content-Type: text/plain\r\n", "Content-Type: application/x-www-form-urlencoded\r\n",
                              "Content-Type: application/jsonx\r\n", ""}) {
    const auto answer = post(refused, body);
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 415")) << refused << ": " << answer;
    EXPECT_EQ(error_code_of(answer), "unsupported_media_type") << refused;
  }
  for (const char* accepted : {"Content-Type: application/json\r\n", "Content-Type: application/json; charset=utf-8\r\n",
                               "Content-Type: Application/JSON\r\n", "Content-Type:  application/json ;charset=UTF-8\r\n"}) {
    const auto answer = post(accepted, body);
    EXPECT_TRUE(answer.starts_with("HTTP/1.1 201")) << accepted << ": " << answer;
  }
  // No body needs no type (POST /api/memory/optimize takes none).
  Socket client(server.port());
  ASSERT_TRUE(client.send("POST /api/memory/optimize HTTP/1.1\r\nHost: memd\r\nContent-Length: 0\r\n\r\n"));
  EXPECT_TRUE(answered_ok(client.response()));
  // The binary upload route takes any type: it is not a JSON route.
}

TEST(HttpTransportErrors, ConflictingContentLengthsAre400) {
  Server server;
  ASSERT_NE(server.port(), 0);
  {
    Socket client(server.port());
    ASSERT_TRUE(client.send("POST /api/memory/optimize HTTP/1.1\r\nHost: memd\r\nContent-Type: application/json\r\n"
                            "Content-Length: 2\r\nContent-Length: 12\r\n\r\n{}"));
    const auto answer = client.response();
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 400")) << *answer;
    EXPECT_EQ(error_code_of(*answer), "invalid_argument");
    EXPECT_NE(answer->find("conflicting Content-Length"), std::string::npos) << *answer;
    EXPECT_TRUE(client.closed_within(milliseconds(5000)));
  }
  {  // One list header disagreeing with itself.
    Socket client(server.port());
    ASSERT_TRUE(client.send("POST /api/memory/optimize HTTP/1.1\r\nHost: memd\r\nContent-Length: 2, 3\r\n\r\n{}"));
    const auto answer = client.response();
    ASSERT_TRUE(answer);
    EXPECT_NE(answer->find("conflicting Content-Length"), std::string::npos) << *answer;
  }
  {  // Content-Length with chunked: refused, not guessed.
    Socket client(server.port());
    ASSERT_TRUE(client.send("POST /api/memory/optimize HTTP/1.1\r\nHost: memd\r\nTransfer-Encoding: chunked\r\n"
                            "Content-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n"));
    const auto answer = client.response();
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 400")) << *answer;
  }
  {  // The same length twice is one length (RFC 9110 §8.6).
    Socket client(server.port());
    ASSERT_TRUE(client.send("POST /api/memory/optimize HTTP/1.1\r\nHost: memd\r\nContent-Type: application/json\r\n"
                            "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"));
    EXPECT_TRUE(answered_ok(client.response()));
  }
}

}  // namespace
}  // namespace memd::testing
