// ExportTable: exports, imports by connection, deferred frees.
#include "service/export_table.hpp"

#include <algorithm>
#include <set>

#include "memd/owner_name.hpp"

namespace memd {
namespace {

bool older(const ExportRecord& a, const ExportRecord& b) {
  return a.created_at != b.created_at ? a.created_at < b.created_at : a.id < b.id;
}

}  // namespace

Error ExportTable::gone_locked(const ExportId& id) const {
  if (auto it = released_.find(id); it != released_.end())
    return {ErrorCode::not_found, fmt::format("export {} was released{}", id.to_string(), it->second)};
  return {ErrorCode::not_found,
          fmt::format("no export {}: never made here, or released long ago", id.to_string())};
}

Result<ExportRecord> ExportTable::add(AllocationId allocation, std::string owner_of_allocation,
                                      std::vector<std::string> for_owners,
                                      std::chrono::system_clock::time_point now) {
  if (auto ok = check_owner(owner_of_allocation); !ok)
    return fail(ErrorCode::invalid_argument, "the allocation's {}", ok.error().message);
  if (for_owners.empty())
    return fail(ErrorCode::invalid_argument, "an export must name at least one owner it is for");
  if (for_owners.size() > kMaxExportOwners)
    return fail(ErrorCode::invalid_argument, "an export may name at most {} owners, not {}", kMaxExportOwners,
                for_owners.size());
  for (std::size_t i = 0; i < for_owners.size(); ++i)
    if (auto ok = check_owner(for_owners[i]); !ok)
      return fail(ErrorCode::invalid_argument, "forOwners[{}]: {}", i, ok.error().message);
  std::sort(for_owners.begin(), for_owners.end());
  for_owners.erase(std::unique(for_owners.begin(), for_owners.end()), for_owners.end());

  std::lock_guard lock(mu_);
  auto state = allocations_.find(allocation);
  if (state != allocations_.end()) {
    if (state->second.owner != owner_of_allocation)
      return fail(ErrorCode::internal, "allocation {} is recorded as '{}'s, not '{}'s", allocation.to_string(),
                  state->second.owner, owner_of_allocation);
    if (state->second.freeing)
      return fail(ErrorCode::conflict, "allocation {} is being freed; it cannot be exported again",
                  allocation.to_string());
    if (state->second.live.size() >= limits_.per_allocation)
      return fail(ErrorCode::quota_exceeded,
                  "allocation {} has {} live exports, the most one allocation may have; release one, or name "
                  "several owners in one export",
                  allocation.to_string(), state->second.live.size());
  }
  if (exports_.size() >= limits_.total)
    return fail(ErrorCode::quota_exceeded, "memd holds {} live exports, the most it keeps; release some",
                exports_.size());

  ExportRecord record;
  record.id = ExportId::generate();
  record.allocation = allocation;
  record.owner = std::move(owner_of_allocation);
  record.for_owners = std::move(for_owners);
  record.created_at = now;
  if (state == allocations_.end()) {
    state = allocations_.emplace(allocation, AllocationState{}).first;
    state->second.owner = record.owner;
  }
  state->second.live.push_back(record.id);
  exports_.emplace(record.id, record);
  return record;
}

Result<ExportRecord> ExportTable::find(const ExportId& id) const {
  std::lock_guard lock(mu_);
  if (auto it = exports_.find(id); it != exports_.end()) return it->second;
  return fail(gone_locked(id));
}

Result<ExportRecord> ExportTable::release(const ExportId& id) {
  std::lock_guard lock(mu_);
  auto it = exports_.find(id);
  if (it == exports_.end()) {
    if (auto r = released_.find(id); r != released_.end())
      return fail(ErrorCode::not_found, "export {} was already released{}", id.to_string(), r->second);
    return fail(gone_locked(id));
  }
  const AllocationId allocation = it->second.allocation;
  auto record = release_locked(it, "");
  forget_if_unheld_locked(allocation);
  return record;
}

Result<ImportRecord> ExportTable::import(const ExportId& id, const std::string& importer_owner,
                                         bool importer_is_admin, std::uint64_t connection) {
  std::lock_guard lock(mu_);
  auto it = exports_.find(id);
  if (it == exports_.end()) {
    auto error = gone_locked(id);
    if (released_.contains(id)) error.message += "; it takes no new imports (earlier importers keep theirs)";
    return fail(std::move(error));
  }
  ExportRecord& record = it->second;
  // Listed or refused, admin or not (the header says why). The message does
  // not list who the export is for: that would tell an outsider which owners
  // share memory.
  if (!std::binary_search(record.for_owners.begin(), record.for_owners.end(), importer_owner))
    return fail(ErrorCode::permission_denied,
                "export {} was not made for '{}' (an export names the owners who may import it{})",
                id.to_string(), importer_owner,
                importer_is_admin ? "; the admin too must be named" : "");

  auto& state = allocations_.at(record.allocation);
  auto& mine = connections_[connection];
  auto [held, first] = mine.try_emplace(id, ConnectionImport{record.allocation, 0});
  if (first) ++record.importers;
  ++held->second.count;
  const std::uint64_t imports = ++state.connections[connection];
  ++imports_;

  ImportRecord out;
  out.export_id = id;
  out.allocation = record.allocation;
  out.owner = record.owner;
  out.importer = importer_owner;
  out.connection = connection;
  out.imports = imports;
  return out;
}

std::vector<AllocationId> ExportTable::connection_closed(std::uint64_t connection) {
  std::lock_guard lock(mu_);
  std::vector<AllocationId> freed;
  auto c = connections_.find(connection);
  if (c == connections_.end()) return freed;
  std::set<AllocationId> touched;
  for (const auto& [export_id, held] : c->second) {
    imports_ -= held.count;
    if (auto e = exports_.find(export_id); e != exports_.end()) --e->second.importers;
    touched.insert(held.allocation);
  }
  connections_.erase(c);
  for (const auto& allocation : touched) {
    auto state = allocations_.find(allocation);
    if (state == allocations_.end()) continue;
    state->second.connections.erase(connection);
    if (state->second.freeing && state->second.connections.empty()) freed.push_back(allocation);
    forget_if_unheld_locked(allocation);
  }
  return freed;  // sorted: `touched` is
}

std::vector<ExportRecord> ExportTable::release_allocation(const AllocationId& allocation) {
  std::lock_guard lock(mu_);
  std::vector<ExportRecord> out;
  auto state = allocations_.find(allocation);
  if (state == allocations_.end()) return out;
  const auto live = state->second.live;  // release_locked edits the list
  for (const auto& id : live)
    out.push_back(release_locked(exports_.find(id), " when its allocation was freed"));
  forget_if_unheld_locked(allocation);
  return out;
}

bool ExportTable::mark_freeing(const AllocationId& allocation) {
  std::lock_guard lock(mu_);
  auto state = allocations_.find(allocation);
  if (state == allocations_.end()) return false;
  // A freed allocation takes no new imports, whichever order the caller
  // released its exports in.
  const auto live = state->second.live;
  for (const auto& id : live) release_locked(exports_.find(id), " when its allocation was freed");
  if (state->second.connections.empty()) {
    allocations_.erase(state);
    return false;
  }
  state->second.freeing = true;
  return true;
}

bool ExportTable::held(const AllocationId& allocation) const {
  std::lock_guard lock(mu_);
  auto state = allocations_.find(allocation);
  return state != allocations_.end() && (!state->second.live.empty() || !state->second.connections.empty());
}

std::size_t ExportTable::importers(const AllocationId& allocation) const {
  std::lock_guard lock(mu_);
  auto state = allocations_.find(allocation);
  return state == allocations_.end() ? 0 : state->second.connections.size();
}

std::vector<ExportRecord> ExportTable::exports_of(const AllocationId& allocation) const {
  std::vector<ExportRecord> out;
  {
    std::lock_guard lock(mu_);
    auto state = allocations_.find(allocation);
    if (state == allocations_.end()) return out;
    for (const auto& id : state->second.live) out.push_back(exports_.at(id));
  }
  std::sort(out.begin(), out.end(), older);
  return out;
}

std::vector<ExportRecord> ExportTable::list(const std::optional<std::string>& owner) const {
  std::vector<ExportRecord> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, record] : exports_)
      if (!owner || record.owner == *owner) out.push_back(record);
  }
  std::sort(out.begin(), out.end(), older);
  return out;
}

ExportCounts ExportTable::counts() const {
  std::lock_guard lock(mu_);
  ExportCounts c;
  c.exports = exports_.size();
  c.imports = imports_;
  c.connections = connections_.size();
  for (const auto& [id, state] : allocations_) {
    if (!state.live.empty() || !state.connections.empty()) ++c.held_allocations;
    if (state.freeing) ++c.freeing;
  }
  return c;
}

ExportRecord ExportTable::release_locked(std::unordered_map<ExportId, ExportRecord>::iterator it,
                                         std::string why) {
  ExportRecord record = std::move(it->second);
  exports_.erase(it);
  record.released = true;
  auto& live = allocations_.at(record.allocation).live;
  live.erase(std::find(live.begin(), live.end(), record.id));
  remember_locked(record.id, std::move(why));
  return record;
}

void ExportTable::forget_if_unheld_locked(const AllocationId& allocation) {
  auto state = allocations_.find(allocation);
  if (state != allocations_.end() && state->second.live.empty() && state->second.connections.empty())
    allocations_.erase(state);
}

void ExportTable::remember_locked(const ExportId& id, std::string why) {
  if (limits_.remembered == 0) return;
  if (released_order_.size() >= limits_.remembered) {
    released_.erase(released_order_.front());
    released_order_.pop_front();
  }
  released_.emplace(id, std::move(why));
  released_order_.push_back(id);
}

Result<void> ExportTable::validate() const {
  std::lock_guard lock(mu_);
  if (exports_.size() > limits_.total)
    return fail(ErrorCode::internal, "{} live exports, over the limit of {}", exports_.size(), limits_.total);
  // Importer connections per export, recounted from the connection index.
  std::unordered_map<ExportId, std::uint64_t> importers;
  std::unordered_map<AllocationId, std::unordered_map<std::uint64_t, std::uint64_t>> held;
  std::size_t imports = 0;
  for (const auto& [connection, mine] : connections_) {
    if (mine.empty()) return fail(ErrorCode::internal, "connection {} is listed with no import", connection);
    for (const auto& [id, imp] : mine) {
      if (imp.count == 0)
        return fail(ErrorCode::internal, "connection {} holds zero imports of export {}", connection,
                    id.to_string());
      if (auto e = exports_.find(id); e != exports_.end() && e->second.allocation != imp.allocation)
        return fail(ErrorCode::internal, "connection {}'s import of export {} names another allocation",
                    connection, id.to_string());
      ++importers[id];
      held[imp.allocation][connection] += imp.count;
      imports += imp.count;
    }
  }
  if (imports != imports_)
    return fail(ErrorCode::internal, "{} imports counted, {} held", imports_, imports);

  std::size_t live = 0;
  for (const auto& [allocation, state] : allocations_) {
    if (state.live.empty() && state.connections.empty())
      return fail(ErrorCode::internal, "allocation {} is kept but nothing holds it", allocation.to_string());
    if (state.freeing && !state.live.empty())
      return fail(ErrorCode::internal, "allocation {} is being freed but still has live exports",
                  allocation.to_string());
    if (state.live.size() > limits_.per_allocation)
      return fail(ErrorCode::internal, "allocation {} has {} live exports, over the limit",
                  allocation.to_string(), state.live.size());
    for (const auto& id : state.live) {
      auto e = exports_.find(id);
      if (e == exports_.end() || e->second.allocation != allocation)
        return fail(ErrorCode::internal, "allocation {} lists export {} that is not its live export",
                    allocation.to_string(), id.to_string());
    }
    live += state.live.size();
    auto h = held.find(allocation);
    const std::unordered_map<std::uint64_t, std::uint64_t> none;
    if ((h == held.end() ? none : h->second) != state.connections)
      return fail(ErrorCode::internal, "allocation {}'s importer connections disagree with the connection index",
                  allocation.to_string());
  }
  for (const auto& [allocation, conns] : held)
    if (!allocations_.contains(allocation))
      return fail(ErrorCode::internal, "allocation {} is imported but not recorded", allocation.to_string());
  if (live != exports_.size())
    return fail(ErrorCode::internal, "allocations list {} live exports, the table holds {}", live,
                exports_.size());

  for (const auto& [id, record] : exports_) {
    if (record.id != id) return fail(ErrorCode::internal, "export {} is filed under another id", id.to_string());
    if (record.released) return fail(ErrorCode::internal, "released export {} is still live", id.to_string());
    if (record.for_owners.empty() || record.for_owners.size() > kMaxExportOwners ||
        !std::is_sorted(record.for_owners.begin(), record.for_owners.end()) ||
        std::adjacent_find(record.for_owners.begin(), record.for_owners.end()) != record.for_owners.end())
      return fail(ErrorCode::internal, "export {}'s owners are not 1..{} sorted distinct names", id.to_string(),
                  kMaxExportOwners);
    auto i = importers.find(id);
    if (record.importers != (i == importers.end() ? 0 : i->second))
      return fail(ErrorCode::internal, "export {} counts {} importers, the connections say {}", id.to_string(),
                  record.importers, i == importers.end() ? 0 : i->second);
    if (auto state = allocations_.find(record.allocation);
        state == allocations_.end() || state->second.owner != record.owner)
      return fail(ErrorCode::internal, "export {}'s allocation is missing or has another owner", id.to_string());
  }
  if (released_.size() != released_order_.size())
    return fail(ErrorCode::internal, "released-export memory disagrees");
  return {};
}

}  // namespace memd
