// The ownership rule's two checks and their messages.
#include "service/caller.hpp"

namespace memd {

Result<void> require_owner(const Caller& caller, std::string_view owner, std::string_view what) {
  if (caller.admin || caller.owner == owner) return {};
  return fail(ErrorCode::permission_denied,
              "'{}' may not {}: it belongs to '{}' (only its owner or the admin may)", caller.owner, what,
              owner);
}

Result<void> require_admin(const Caller& caller, std::string_view what) {
  if (caller.admin) return {};
  return fail(ErrorCode::permission_denied,
              "only the admin may {} ('{}' is not the admin: a --tokens admin token, the --token token, "
              "or X-Memd-Admin: true on a daemon without tokens)",
              what, caller.owner);
}

}  // namespace memd
