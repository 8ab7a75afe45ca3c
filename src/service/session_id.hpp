// service/session_id.hpp — the identity of a session (a lease on allocations).
//
// A random (version 4) GUID, like an allocation id but a type of its own, so
// the two can never be passed for each other. parse() accepts only the
// 8-4-4-4-12 form and never echoes what it was given.
//
// Thread safety: values; generate() is thread-safe.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "memd/allocation_id.hpp"
#include "memd/error.hpp"

namespace memd {

class SessionId {
 public:
  SessionId() = default;  // nil, never handed out

  static SessionId generate() { return SessionId(AllocationId::generate()); }
  static Result<SessionId> parse(std::string_view text) {
    auto guid = AllocationId::parse(text);
    if (!guid)
      return fail(ErrorCode::invalid_argument,
                  "invalid session id: expected the GUID memory_session_open answered (8-4-4-4-12 hex digits)");
    return SessionId(*guid);
  }

  std::string to_string() const { return guid_.to_string(); }
  const AllocationId& guid() const noexcept { return guid_; }

  friend bool operator==(const SessionId&, const SessionId&) = default;
  friend auto operator<=>(const SessionId&, const SessionId&) = default;

 private:
  explicit SessionId(AllocationId guid) : guid_(guid) {}
  AllocationId guid_;
};

}  // namespace memd

template <>
struct std::hash<memd::SessionId> {
  std::size_t operator()(const memd::SessionId& id) const noexcept {
    return std::hash<memd::AllocationId>{}(id.guid());
  }
};
