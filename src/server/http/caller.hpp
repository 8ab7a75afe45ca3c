// server/http/caller.hpp — who a REST request comes from.
//
// The one place REST turns headers into a Caller (service/caller.hpp):
//   Authorization: Bearer T, X-Memd-Owner, X-Memd-Admin, X-Memd-Session.
// The server calls resolve() once per request, after the header and before
// the body is read, for every route but GET /healthz.
//
//   * --tokens FILE: a bearer from the file names the owner and whether it
//     is the admin. X-Memd-Owner must then agree with it and X-Memd-Admin:
//     true needs an admin token; a contradiction is refused
//     (permission_denied), never silently ignored, so a client never
//     believes it acted as someone it is not. X-Memd-Admin: false is
//     honoured (an admin token may act as a plain owner).
//   * --token T: a bearer equal to it is the admin; the owner is the
//     X-Memd-Owner label.
//   * With either configured, a request without a known bearer token is
//     unauthenticated (401).
//   * Neither (loopback only): the owner is the X-Memd-Owner label (default
//     "anonymous") and admin is asked for with X-Memd-Admin: true. A guard
//     against mistakes, not security: anyone may send any label.
// Header values are checked here: X-Memd-Owner by the owner rule,
// X-Memd-Admin is exactly true or false, X-Memd-Session a GUID, each at most
// once (invalid_argument otherwise). Tokens are compared in constant time,
// and against every entry, so timing tells nothing about which was close.
//
// Thread safety: immutable after construction; resolve() is thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <boost/beast/http/fields.hpp>

#include "memd/error.hpp"
#include "server/http/tokens_file.hpp"
#include "service/caller.hpp"

namespace memd {

// The headers resolve() reads; nullopt for an absent header.
struct CallerHeaders {
  std::optional<std::string_view> authorization;
  std::optional<std::string_view> owner;    // X-Memd-Owner
  std::optional<std::string_view> admin;    // X-Memd-Admin
  std::optional<std::string_view> session;  // X-Memd-Session
};

class CallerResolver {
 public:
  CallerResolver(std::string admin_token, TokenTable tokens);

  // Whether every request (but /healthz) must carry a bearer token.
  bool requires_token() const noexcept { return !admin_token_.empty() || !tokens_.empty(); }

  Result<Caller> resolve(const CallerHeaders& headers) const;
  // The same from a Beast header; a header given twice is invalid_argument.
  Result<Caller> resolve(const boost::beast::http::fields& fields) const;

 private:
  std::string admin_token_;
  TokenTable tokens_;
};

}  // namespace memd
