// The socket door's pure halves: a request line → id, action, params
// (server/socket/socket_request.hpp), and hello's params → a Caller through
// the REST door's resolver (server/socket/socket_hello.hpp), hostile input
// included.
#include <gtest/gtest.h>

#include "server/socket/socket_hello.hpp"
#include "server/socket/socket_options.hpp"
#include "server/socket/socket_request.hpp"

namespace memd {
namespace {

using nlohmann::json;

template <typename T>
ErrorCode code_of(const Result<T>& r) {
  return r ? ErrorCode::internal : r.error().code;
}

TEST(SocketRequest, TheStdioShape) {
  auto r = parse_socket_request(R"({"id": "1", "action": "hello", "params": {"token": "t"}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->id, "1");
  EXPECT_EQ(r->action, "hello");
  EXPECT_EQ(r->params, json({{"token", "t"}}));

  // id is the peer's: any value comes back as sent; absent is null.
  auto numeric = parse_socket_request(R"({"id": 7, "action": "memory_import"})");
  ASSERT_TRUE(numeric);
  EXPECT_EQ(numeric->id, 7);
  EXPECT_EQ(numeric->params, json::object());
  auto no_id = parse_socket_request(R"({"action": "x", "params": null, "other": [1]})");
  ASSERT_TRUE(no_id);
  EXPECT_TRUE(no_id->id.is_null());
  EXPECT_EQ(no_id->params, json::object());
}

TEST(SocketRequest, ShapesThatAreNotRequests) {
  for (std::string_view bad :
       {"", "not json", "[1, 2]", "\"hello\"", "{\"id\": \"1\"}", "{\"action\": null}", "{\"action\": 5}",
        "{\"action\": \"\"}", "{\"action\": \"Hello\"}", "{\"action\": \"a b\"}", "{\"action\": \"a\\nb\"}",
        "{\"action\": \"x\", \"params\": [1]}", "{\"action\": \"x\", \"params\": \"p\"}", "{\"action\": \"x\"} {}",
        "{\"action\": \"x\"", "\xff\xfe", "{\"action\": \"\xff\"}"}) {
    auto r = parse_socket_request(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << bad;
  }
  EXPECT_EQ(code_of(parse_socket_request(R"({"action": ")" + std::string(129, 'a') + "\"}")),
            ErrorCode::invalid_argument);
  EXPECT_TRUE(parse_socket_request(R"({"action": ")" + std::string(128, 'a') + "\"}"));
}

TEST(SocketRequest, TheIdIsKeptForTheRefusal) {
  json id;
  EXPECT_FALSE(parse_socket_request(R"({"id": "9", "action": 5})", &id));
  EXPECT_EQ(id, "9");
  EXPECT_FALSE(parse_socket_request(R"({"id": {"k": [1]}, "action": "x", "params": 3})", &id));
  EXPECT_EQ(id, json({{"k", {1}}}));
  id = "stale";
  EXPECT_FALSE(parse_socket_request("not json", &id));
  EXPECT_EQ(id, "stale");  // not an object: nothing read
}

TEST(SocketRequest, DepthAndLengthAreBounded) {
  const std::string deep = R"({"action": "x", "params": {"a": )" + std::string(10'000, '[') + "}}";
  auto r = parse_socket_request(deep);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  const std::string pad(kMaxSocketLine, ' ');
  EXPECT_EQ(code_of(parse_socket_request(R"({"action": "x"})" + pad)), ErrorCode::payload_too_large);
}

TEST(SocketHello, ParamsAreTokenOwnerAdminSession) {
  auto full = parse_socket_hello(
      {{"token", "t0k"}, {"owner", "alice"}, {"admin", false}, {"session", "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}});
  ASSERT_TRUE(full) << full.error().message;
  EXPECT_EQ(full->token, "t0k");
  EXPECT_EQ(full->owner, "alice");
  EXPECT_EQ(full->admin, false);
  EXPECT_EQ(full->session, "a1b2c3d4-e5f6-4890-abcd-ef1234567890");
  auto empty = parse_socket_hello(json::object());
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->token || empty->owner || empty->admin || empty->session);
  EXPECT_FALSE(parse_socket_hello({{"token", nullptr}, {"owner", nullptr}})->owner);

  for (const json& bad : {json::array(), json({{"token", 5}}), json({{"token", ""}}),
                          json({{"token", std::string(kMaxHelloToken + 1, 't')}}), json({{"owner", true}}),
                          json({{"admin", "true"}}), json({{"admin", 1}}), json({{"session", 5}}),
                          json({{"sesion", "x"}}), json({{"a\nb", 1}})}) {
    auto r = parse_socket_hello(bad);
    ASSERT_FALSE(r) << bad.dump();
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << bad.dump();
  }
  auto typo = parse_socket_hello({{"sesion", "x"}});
  EXPECT_NE(typo.error().message.find("'sesion'"), std::string::npos) << typo.error().message;
  auto hostile = parse_socket_hello({{"a\nb", 1}});
  EXPECT_EQ(hostile.error().message.find('\n'), std::string::npos) << hostile.error().message;
}

TEST(SocketHello, ResolvedExactlyAsRestHeadersAre) {
  const TokenTable tokens = {{"alice-token", "alice", false, 1}, {"root-token", "ops", true, 2}};
  CallerResolver with_tokens("", tokens);
  auto resolve = [&](const CallerResolver& r, const json& params) {
    auto hello = parse_socket_hello(params);
    EXPECT_TRUE(hello) << params.dump();
    return resolve_socket_hello(r, *hello);
  };
  auto alice = resolve(with_tokens, {{"token", "alice-token"}});
  ASSERT_TRUE(alice) << alice.error().message;
  EXPECT_EQ(alice->owner, "alice");
  EXPECT_FALSE(alice->admin);
  auto root = resolve(with_tokens, {{"token", "root-token"}, {"session", "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}});
  EXPECT_TRUE(root->admin);
  EXPECT_EQ(root->session->to_string(), "a1b2c3d4-e5f6-4890-abcd-ef1234567890");
  EXPECT_FALSE(resolve(with_tokens, {{"token", "root-token"}, {"admin", false}})->admin);

  EXPECT_EQ(code_of(resolve(with_tokens, json::object())), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of(resolve(with_tokens, {{"token", "wrong"}})), ErrorCode::unauthenticated);
  // Without a known token, nothing else is even looked at.
  EXPECT_EQ(code_of(resolve(with_tokens, {{"token", "wrong"}, {"owner", "a\nb"}})), ErrorCode::unauthenticated);
  EXPECT_EQ(code_of(resolve(with_tokens, {{"token", "alice-token"}, {"owner", "mallory"}})),
            ErrorCode::permission_denied);
  EXPECT_EQ(code_of(resolve(with_tokens, {{"token", "alice-token"}, {"admin", true}})),
            ErrorCode::permission_denied);

  auto bad_owner = resolve(with_tokens, {{"token", "alice-token"}, {"owner", "a\nb"}});
  ASSERT_EQ(code_of(bad_owner), ErrorCode::invalid_argument);
  EXPECT_EQ(bad_owner.error().message.rfind("hello's owner", 0), 0u) << bad_owner.error().message;
  auto bad_session = resolve(with_tokens, {{"token", "alice-token"}, {"session", "../etc"}});
  ASSERT_EQ(code_of(bad_session), ErrorCode::invalid_argument);
  EXPECT_EQ(bad_session.error().message.rfind("hello's session", 0), 0u) << bad_session.error().message;

  // --token: the admin's, owner by label; no tokens: labels.
  CallerResolver single("s3cret", {});
  auto admin = resolve(single, {{"token", "s3cret"}, {"owner", "worker-1"}});
  EXPECT_TRUE(admin->admin);
  EXPECT_EQ(admin->owner, "worker-1");
  CallerResolver open("", {});
  auto labelled = resolve(open, {{"owner", "bob"}});
  EXPECT_EQ(labelled->owner, "bob");
  EXPECT_FALSE(labelled->admin);
  EXPECT_EQ(resolve(open, json::object())->owner, "anonymous");
  EXPECT_TRUE(resolve(open, {{"owner", "bob"}, {"admin", true}})->admin);
}

}  // namespace
}  // namespace memd
