// service/session_table.hpp — open sessions, their leases and allocations.
//
// A session is a lease an owner takes on the allocations it makes in it: it
// lives for its TTL from its opening or last renewal, and when it is closed or
// lapses, everything allocated in it is to be released (MemoryService does
// the releasing; this table only says what). So a worker that crashes leaks
// nothing: its lease runs out.
//
// The table holds each live session (owner, TTL, expiry, the allocations
// attached to it and their bytes) plus a reverse index allocation → session,
// so an allocation freed on its own leaves its session at once. It keeps a
// bounded memory of ended sessions, so a request naming one learns whether
// it was closed or lapsed instead of a bare "unknown".
//
// Time is a parameter (a steady clock's time_point), never read here: tests
// drive leases with a fake clock.
//
// Thread safety: every method is thread-safe (one mutex). attach() refuses
// a session that ended or lapsed, so an allocation racing its session's end
// is either in the ended session's list or refused here, never lost.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/error.hpp"
#include "service/session_id.hpp"

namespace memd {

using SteadyTime = std::chrono::steady_clock::time_point;

inline constexpr std::chrono::seconds kMinSessionTtl{1};
inline constexpr std::chrono::seconds kDefaultSessionTtl{60};
inline constexpr std::chrono::seconds kMaxSessionTtl{86'400};

struct SessionLimits {
  // Sessions cost memory whoever opens them (owners are free labels without
  // --tokens), so their number is bounded per owner and in all.
  std::size_t per_owner = 256;
  std::size_t total = 16'384;
  // Ended sessions remembered for their error message.
  std::size_t remembered = 4'096;
};

struct Session {
  SessionId id;
  std::string owner;
  std::chrono::seconds ttl{0};
  SteadyTime expires_at{};
  std::uint64_t allocations = 0;      // attached now
  std::uint64_t allocated_bytes = 0;  // their sizes, summed
};

// A session taken out of the table, with what must be released.
struct EndedSession {
  Session session;
  std::vector<AllocationId> allocations;
};

class SessionTable {
 public:
  explicit SessionTable(SessionLimits limits = {}) : limits_(limits) {}
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // A new session of `owner` expiring at now + ttl (ttl within
  // kMinSessionTtl..kMaxSessionTtl, else invalid_argument; quota_exceeded
  // past the limits).
  Result<Session> open(std::string owner, std::chrono::seconds ttl, SteadyTime now);
  // The session as it stands, lapsed or not (the caller compares expires_at
  // with its clock); not_found, saying how it ended, once it is gone.
  Result<Session> find(const SessionId& id) const;
  // Extends a live session to now + ttl; not_found if gone or lapsed.
  Result<Session> renew(const SessionId& id, SteadyTime now);
  // Takes the session out (lapsed or not); not_found if already gone.
  Result<EndedSession> close(const SessionId& id);
  // Records that `allocation` (of `bytes`) was made in the session;
  // not_found if the session is gone or lapsed at `now`.
  Result<void> attach(const SessionId& id, const AllocationId& allocation, std::uint64_t bytes,
                      SteadyTime now);
  // The allocation was freed: it leaves its session, if it had one.
  void detach(const AllocationId& allocation);
  // Takes out every session whose lease ended at or before now.
  std::vector<EndedSession> take_lapsed(SteadyTime now);
  // Takes out every session of `owner` (its host went away).
  std::vector<EndedSession> take_owner(std::string_view owner);
  // Live sessions, oldest expiry first; only `owner`'s when given.
  std::vector<Session> list(const std::optional<std::string>& owner) const;
  std::size_t size() const;

  // The reverse index and the per-session counts agree.
  Result<void> validate() const;

 private:
  struct Entry {
    Session session;
    std::unordered_set<AllocationId> allocations;
  };
  struct Attached {
    SessionId session;
    std::uint64_t bytes = 0;
  };

  Error gone_locked(const SessionId& id) const;
  EndedSession take_locked(std::unordered_map<SessionId, Entry>::iterator it, std::string why);
  void remember_locked(const SessionId& id, std::string why);

  const SessionLimits limits_;
  mutable std::mutex mu_;
  std::unordered_map<SessionId, Entry> sessions_;
  std::unordered_map<AllocationId, Attached> attached_;
  std::unordered_map<std::string, std::size_t> per_owner_;
  std::unordered_map<SessionId, std::string> ended_;  // id → how it ended
  std::deque<SessionId> ended_order_;                 // oldest first, for forgetting
};

}  // namespace memd
