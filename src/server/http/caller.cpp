// Bearer token, owner label, admin and session headers → a Caller.
#include "server/http/caller.hpp"

#include <boost/beast/core/string.hpp>

#include "memd/owner_name.hpp"

namespace memd {
namespace {

// Compares without an early exit so response time does not leak how much of
// a guessed token was right.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// "Bearer T" (the scheme in any case, RFC 7235) → T; nullopt otherwise.
std::optional<std::string_view> bearer(std::optional<std::string_view> authorization) {
  if (!authorization || authorization->size() < 7) return std::nullopt;
  if (!boost::beast::iequals(authorization->substr(0, 7), "Bearer ")) return std::nullopt;
  auto token = authorization->substr(7);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  if (token.empty()) return std::nullopt;
  return token;
}

}  // namespace

CallerResolver::CallerResolver(std::string admin_token, TokenTable tokens)
    : admin_token_(std::move(admin_token)), tokens_(std::move(tokens)) {}

Result<Caller> CallerResolver::resolve(const CallerHeaders& h) const {
  // Who the token says first: an unauthenticated request learns nothing
  // about its other headers.
  const TokenEntry* entry = nullptr;
  bool is_admin_token = false;
  if (requires_token()) {
    const auto presented = bearer(h.authorization);
    if (!presented) return fail(ErrorCode::unauthenticated, "missing or wrong bearer token");
    // Every entry is compared, whichever matches: the time taken depends on
    // the table's size only.
    for (const auto& e : tokens_)
      if (same_secret(*presented, e.token)) entry = &e;
    is_admin_token = !admin_token_.empty() && same_secret(*presented, admin_token_);
    if (entry == nullptr && !is_admin_token)
      return fail(ErrorCode::unauthenticated, "missing or wrong bearer token");
  }

  Caller caller;
  std::optional<std::string> label;
  if (h.owner) {
    if (auto ok = check_owner(*h.owner); !ok)
      return fail(ErrorCode::invalid_argument, "header X-Memd-Owner: {}", ok.error().message);
    label = std::string(*h.owner);
  }
  std::optional<bool> asks_admin;
  if (h.admin) {
    if (*h.admin != "true" && *h.admin != "false")
      return fail(ErrorCode::invalid_argument, "header X-Memd-Admin must be true or false");
    asks_admin = *h.admin == "true";
  }
  if (h.session) {
    auto id = SessionId::parse(*h.session);
    if (!id) return fail(ErrorCode::invalid_argument, "header X-Memd-Session: {}", id.error().message);
    caller.session = *id;
  }

  if (entry != nullptr) {
    if (label && *label != entry->owner)
      return fail(ErrorCode::permission_denied,
                  "this bearer token acts as '{}'; X-Memd-Owner '{}' contradicts it (with --tokens the token "
                  "names the owner: drop the header)",
                  entry->owner, *label);
    if (asks_admin.value_or(false) && !entry->admin)
      return fail(ErrorCode::permission_denied,
                  "X-Memd-Admin: true, but the token of '{}' is not an admin token", entry->owner);
    caller.owner = entry->owner;
    caller.admin = entry->admin && asks_admin.value_or(true);
  } else if (is_admin_token) {
    caller.owner = label.value_or("anonymous");
    caller.admin = asks_admin.value_or(true);
  } else {
    caller.owner = label.value_or("anonymous");
    caller.admin = asks_admin.value_or(false);
  }
  return caller;
}

Result<Caller> CallerResolver::resolve(const boost::beast::http::fields& fields) const {
  CallerHeaders h;
  auto one = [&](std::string_view name, std::optional<std::string_view>& out) -> Result<void> {
    const auto range = fields.equal_range(name);
    if (range.first == range.second) return {};
    if (std::next(range.first) != range.second)
      return fail(ErrorCode::invalid_argument, "header {} given more than once", name);
    out = range.first->value();
    return {};
  };
  for (auto [name, out] : {std::pair{std::string_view("Authorization"), &h.authorization},
                           std::pair{std::string_view("X-Memd-Owner"), &h.owner},
                           std::pair{std::string_view("X-Memd-Admin"), &h.admin},
                           std::pair{std::string_view("X-Memd-Session"), &h.session}})
    if (auto ok = one(name, *out); !ok) return fail(ok.error());
  return resolve(h);
}

}  // namespace memd
