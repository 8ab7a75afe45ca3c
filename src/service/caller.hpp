// service/caller.hpp — who is asking, and the rule for what they may touch.
//
// Every operation that reads, changes or frees allocations, limits or
// sessions is asked by a Caller: an owner (from a --tokens bearer, the
// X-Memd-Owner label, or the stdio host), whether it is the admin, and the
// session it works in, if any. The rule (DESIGN.md, "Memory other processes
// use"): a caller acts on its own owner's allocations and sessions only;
// the admin acts on anyone's and alone sets limits or frees across owners.
// MemoryService applies it; these helpers are the one wording of it.
//
// Thread safety: values and pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "memd/error.hpp"
#include "service/session_id.hpp"

namespace memd {

struct Caller {
  std::string owner = "anonymous";
  bool admin = false;
  // Allocations this caller makes join the session and end with it.
  std::optional<SessionId> session;

  // A host that owns the engine in its own process (`memd stdio`, tests,
  // in-process users): the admin, acting as `owner`.
  static Caller host(std::string owner) { return Caller{std::move(owner), true, std::nullopt}; }
  // An ordinary caller: `owner` and nothing more.
  static Caller as(std::string owner) { return Caller{std::move(owner), false, std::nullopt}; }
};

// permission_denied unless the caller is `owner` or the admin. `what` reads
// as "free allocation 1234…", and names the thing being refused.
Result<void> require_owner(const Caller& caller, std::string_view owner, std::string_view what);
// permission_denied unless the caller is the admin.
Result<void> require_admin(const Caller& caller, std::string_view what);

}  // namespace memd
