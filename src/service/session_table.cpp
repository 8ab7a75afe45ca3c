// SessionTable: sessions, the allocations attached to them, and how each ended.
#include "service/session_table.hpp"

#include <algorithm>

namespace memd {
namespace {

Error lapsed(const Session& s) {
  return {ErrorCode::not_found,
          fmt::format("session {} lapsed: no heartbeat within its {} s lease; its allocations are released",
                      s.id.to_string(), s.ttl.count())};
}

}  // namespace

Error SessionTable::gone_locked(const SessionId& id) const {
  if (auto it = ended_.find(id); it != ended_.end())
    return {ErrorCode::not_found, fmt::format("session {} {}", id.to_string(), it->second)};
  return {ErrorCode::not_found,
          fmt::format("no session {}: never opened here, or ended long ago", id.to_string())};
}

Result<Session> SessionTable::open(std::string owner, std::chrono::seconds ttl, SteadyTime now) {
  if (ttl < kMinSessionTtl || ttl > kMaxSessionTtl)
    return fail(ErrorCode::invalid_argument, "ttlSeconds must be {}..{}, not {}", kMinSessionTtl.count(),
                kMaxSessionTtl.count(), ttl.count());
  std::lock_guard lock(mu_);
  if (sessions_.size() >= limits_.total)
    return fail(ErrorCode::quota_exceeded, "memd holds {} open sessions, the most it keeps; close some",
                sessions_.size());
  if (auto it = per_owner_.find(owner); it != per_owner_.end() && it->second >= limits_.per_owner)
    return fail(ErrorCode::quota_exceeded,
                "'{}' has {} open sessions, the most one owner may hold; close some or let them lapse", owner,
                it->second);
  Entry entry;
  entry.session.id = SessionId::generate();
  entry.session.owner = std::move(owner);
  entry.session.ttl = ttl;
  entry.session.expires_at = now + ttl;
  ++per_owner_[entry.session.owner];
  Session out = entry.session;
  sessions_.emplace(out.id, std::move(entry));
  return out;
}

Result<Session> SessionTable::find(const SessionId& id) const {
  std::lock_guard lock(mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) return it->second.session;
  return fail(gone_locked(id));
}

Result<Session> SessionTable::renew(const SessionId& id, SteadyTime now) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return fail(gone_locked(id));
  // A lapsed lease is not revived: its allocations are already promised to
  // the reaper, and a worker must learn that they are gone.
  if (it->second.session.expires_at <= now) return fail(lapsed(it->second.session));
  it->second.session.expires_at = now + it->second.session.ttl;
  return it->second.session;
}

Result<EndedSession> SessionTable::close(const SessionId& id) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return fail(gone_locked(id));
  return take_locked(it, "was closed; its allocations were released");
}

Result<void> SessionTable::attach(const SessionId& id, const AllocationId& allocation, std::uint64_t bytes,
                                  SteadyTime now) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return fail(gone_locked(id));
  if (it->second.session.expires_at <= now) return fail(lapsed(it->second.session));
  if (!it->second.allocations.insert(allocation).second) return {};
  attached_[allocation] = {id, bytes};
  ++it->second.session.allocations;
  it->second.session.allocated_bytes += bytes;
  return {};
}

void SessionTable::detach(const AllocationId& allocation) {
  std::lock_guard lock(mu_);
  auto a = attached_.find(allocation);
  if (a == attached_.end()) return;
  if (auto it = sessions_.find(a->second.session); it != sessions_.end()) {
    it->second.allocations.erase(allocation);
    --it->second.session.allocations;
    it->second.session.allocated_bytes -= a->second.bytes;
  }
  attached_.erase(a);
}

std::vector<EndedSession> SessionTable::take_lapsed(SteadyTime now) {
  std::lock_guard lock(mu_);
  std::vector<EndedSession> out;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    auto next = std::next(it);
    if (it->second.session.expires_at <= now) {
      const auto ttl = it->second.session.ttl.count();
      out.push_back(take_locked(
          it, fmt::format("lapsed: no heartbeat within its {} s lease; its allocations were released", ttl)));
    }
    it = next;
  }
  return out;
}

std::vector<EndedSession> SessionTable::take_owner(std::string_view owner) {
  std::lock_guard lock(mu_);
  std::vector<EndedSession> out;
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    auto next = std::next(it);
    if (it->second.session.owner == owner)
      out.push_back(take_locked(it, "ended with its owner's host; its allocations were released"));
    it = next;
  }
  return out;
}

std::vector<Session> SessionTable::list(const std::optional<std::string>& owner) const {
  std::vector<Session> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, e] : sessions_)
      if (!owner || e.session.owner == *owner) out.push_back(e.session);
  }
  std::sort(out.begin(), out.end(), [](const Session& a, const Session& b) {
    return a.expires_at != b.expires_at ? a.expires_at < b.expires_at : a.id < b.id;
  });
  return out;
}

std::size_t SessionTable::size() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

EndedSession SessionTable::take_locked(std::unordered_map<SessionId, Entry>::iterator it, std::string why) {
  EndedSession ended;
  ended.session = std::move(it->second.session);
  ended.allocations.assign(it->second.allocations.begin(), it->second.allocations.end());
  std::sort(ended.allocations.begin(), ended.allocations.end());
  for (const auto& a : ended.allocations) attached_.erase(a);
  if (auto o = per_owner_.find(ended.session.owner); o != per_owner_.end() && --o->second == 0)
    per_owner_.erase(o);
  sessions_.erase(it);
  remember_locked(ended.session.id, std::move(why));
  return ended;
}

void SessionTable::remember_locked(const SessionId& id, std::string why) {
  if (limits_.remembered == 0) return;
  if (ended_order_.size() >= limits_.remembered) {
    ended_.erase(ended_order_.front());
    ended_order_.pop_front();
  }
  ended_.emplace(id, std::move(why));
  ended_order_.push_back(id);
}

Result<void> SessionTable::validate() const {
  std::lock_guard lock(mu_);
  std::size_t attached = 0;
  std::unordered_map<std::string, std::size_t> owners;
  for (const auto& [id, e] : sessions_) {
    if (e.session.id != id) return fail(ErrorCode::internal, "session {} is filed under another id", id.to_string());
    if (e.session.allocations != e.allocations.size())
      return fail(ErrorCode::internal, "session {} counts {} allocations but holds {}", id.to_string(),
                  e.session.allocations, e.allocations.size());
    std::uint64_t bytes = 0;
    for (const auto& a : e.allocations) {
      auto it = attached_.find(a);
      if (it == attached_.end() || it->second.session != id)
        return fail(ErrorCode::internal, "allocation {} of session {} is missing from the index", a.to_string(),
                    id.to_string());
      bytes += it->second.bytes;
    }
    if (bytes != e.session.allocated_bytes)
      return fail(ErrorCode::internal, "session {} counts {} bytes but holds {}", id.to_string(),
                  e.session.allocated_bytes, bytes);
    attached += e.allocations.size();
    ++owners[e.session.owner];
  }
  if (attached != attached_.size())
    return fail(ErrorCode::internal, "the index holds {} allocations, the sessions {}", attached_.size(), attached);
  if (owners != per_owner_) return fail(ErrorCode::internal, "per-owner session counts disagree");
  if (ended_.size() != ended_order_.size()) return fail(ErrorCode::internal, "ended-session memory disagrees");
  return {};
}

}  // namespace memd
