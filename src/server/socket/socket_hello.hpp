// server/socket/socket_hello.hpp — a socket peer's hello → the Caller it is.
//
// The first request on a connection is `hello`, and its params are what the
// REST door's headers are to a request:
//   token   (string)  — the bearer token: "Authorization: Bearer <token>"
//   owner   (string)  — X-Memd-Owner
//   admin   (bool)    — X-Memd-Admin
//   session (string)  — X-Memd-Session (a GUID)
// each optional, null meaning absent, no other key (a misspelt "sesion" would
// otherwise silently drop the session). They are resolved by the REST door's
// own CallerResolver (server/http/caller.hpp), so a peer proves who it is
// exactly as over REST: with --tokens the token names the owner, with --token
// it is the admin's, without either the owner is a label. As over REST, a
// peer without a known token is told only that (unauthenticated), whatever
// else it sent; then owner and session are checked here, so their refusals
// speak of hello rather than of headers; a contradiction the resolver finds
// (a token of 'bob' with owner 'alice') still names the header it stands for.
//
// Thread safety: pure functions.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"
#include "server/http/caller.hpp"
#include "service/caller.hpp"

namespace memd {

// Longer than any token a tokens file can sensibly hold; bounds what is
// compared in constant time.
inline constexpr std::size_t kMaxHelloToken = 4096;

struct SocketHello {
  std::optional<std::string> token;
  std::optional<std::string> owner;
  std::optional<bool> admin;
  std::optional<std::string> session;
};

// The shape only: invalid_argument for a key of the wrong type, an unknown
// key, a token that is empty or over kMaxHelloToken bytes.
Result<SocketHello> parse_socket_hello(const nlohmann::json& params);

// The caller, as the resolver would resolve the same headers: unauthenticated
// without a known token where tokens are required; then invalid_argument for
// an owner breaking the owner rule or a session that is not a GUID;
// permission_denied for a contradiction.
Result<Caller> resolve_socket_hello(const CallerResolver& resolver, const SocketHello& hello);

}  // namespace memd
