// hello params → CallerHeaders → the REST door's resolver.
#include "server/socket/socket_hello.hpp"

#include "memd/owner_name.hpp"

namespace memd {
namespace {

// Echoes a key only when it is a plain identifier; anything else could carry
// control characters into the peer's terminal or a log.
std::string key_for_message(const std::string& key) {
  if (key.empty() || key.size() > 32) return "an unknown key";
  for (char c : key)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
      return "an unknown key";
  return "'" + key + "'";
}

}  // namespace

Result<SocketHello> parse_socket_hello(const nlohmann::json& params) {
  if (!params.is_object()) return fail(ErrorCode::invalid_argument, "hello's params must be a JSON object");
  SocketHello hello;
  for (const auto& [key, value] : params.items()) {
    if (value.is_null()) {
      if (key == "token" || key == "owner" || key == "admin" || key == "session") continue;
    }
    if (key == "token") {
      if (!value.is_string()) return fail(ErrorCode::invalid_argument, "hello's token must be a string");
      const auto& token = value.get_ref<const std::string&>();
      if (token.empty() || token.size() > kMaxHelloToken)
        return fail(ErrorCode::invalid_argument, "hello's token must be 1..{} bytes", kMaxHelloToken);
      hello.token = token;
    } else if (key == "owner") {
      if (!value.is_string()) return fail(ErrorCode::invalid_argument, "hello's owner must be a string");
      hello.owner = value.get_ref<const std::string&>();
    } else if (key == "admin") {
      if (!value.is_boolean()) return fail(ErrorCode::invalid_argument, "hello's admin must be true or false");
      hello.admin = value.get<bool>();
    } else if (key == "session") {
      if (!value.is_string()) return fail(ErrorCode::invalid_argument, "hello's session must be a string");
      hello.session = value.get_ref<const std::string&>();
    } else {
      return fail(ErrorCode::invalid_argument, "hello takes token, owner, admin and session, not {}",
                  key_for_message(key));
    }
  }
  return hello;
}

Result<Caller> resolve_socket_hello(const CallerResolver& resolver, const SocketHello& hello) {
  CallerHeaders headers;
  std::string authorization;
  if (hello.token) {
    authorization = "Bearer " + *hello.token;
    headers.authorization = authorization;
  }
  // As over REST, a peer without a known token hears only that, whatever
  // else its hello says.
  if (resolver.requires_token())
    if (auto who = resolver.resolve(headers); !who && who.error().code == ErrorCode::unauthenticated)
      return who;
  if (hello.owner)
    if (auto ok = check_owner(*hello.owner); !ok)
      return fail(ErrorCode::invalid_argument, "hello's {}", ok.error().message);
  if (hello.session)
    if (auto id = SessionId::parse(*hello.session); !id)
      return fail(ErrorCode::invalid_argument, "hello's session: {}", id.error().message);
  if (hello.owner) headers.owner = *hello.owner;
  if (hello.admin) headers.admin = *hello.admin ? "true" : "false";
  if (hello.session) headers.session = *hello.session;
  return resolver.resolve(headers);
}

}  // namespace memd
