// service/export_table.hpp — who may map which allocation in another
// process, and who does.
//
// DESIGN.md, "Memory other processes use": an owner exports an exportable
// allocation *for* named owners; a peer of one of those owners imports it
// over the Unix socket (server/socket) and receives a descriptor it maps;
// the memory stays counted and pinned while anyone maps it, even after its
// owner freed it, until every export is released and every importer's
// connection has closed. This table is that bookkeeping and nothing else: no
// memory, no descriptors, no sockets. MemoryService asks it and acts.
//
// The rules it keeps:
//   * An export names 1..kMaxExportOwners owners (each valid by the owner
//     rule, memd/owner_name.hpp; duplicates dropped). Only they may import
//     it — the admin included: an export is a grant to map memory into a
//     named process, and "the admin may act on anyone's allocations" is about
//     the daemon's own operations (read, free, limits), not about placing
//     another owner's bytes in an arbitrary process. The admin, who may
//     export any allocation, can always make an export that names itself, so
//     nothing is lost and the rule has no exception.
//   * Bounded: at most ExportLimits::per_allocation live exports per
//     allocation and ExportLimits::total in all (quota_exceeded), because a
//     label is free to make without --tokens and every record costs memory.
//   * release() ends an export: no new imports from it. Imports already made
//     stay (their mappings cannot be taken back) until their connections
//     close. A bounded memory of released ids lets a second release, or an
//     import of a released export, say "released" rather than "unknown".
//   * import() records that a connection holds the allocation; each call is
//     one import (one descriptor sent); a connection holds all of its imports
//     until connection_closed(). There is no per-import release: an importer
//     keeps its connection open exactly as long as it maps the memory.
//   * An allocation is held while it has a live export or an importer. When
//     its owner frees it, the service calls release_allocation() and then
//     mark_freeing(): true means importers remain, so the real free waits
//     until connection_closed() names the allocation.
//
// Time is a parameter (created_at is for reports only), so tests control it.
//
// Thread safety: every method is thread-safe (one mutex); each call is one
// step under the lock, so an import racing a release or a close is either
// recorded before it (and dropped by the close) or refused.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/error.hpp"
#include "service/export_id.hpp"

namespace memd {

// The most owners one export may name.
inline constexpr std::size_t kMaxExportOwners = 64;

struct ExportLimits {
  std::size_t per_allocation = 16;  // live exports of one allocation
  std::size_t total = 65'536;       // live exports in all
  std::size_t remembered = 4'096;   // released ids remembered for their message
};

struct ExportRecord {
  ExportId id;
  AllocationId allocation;
  std::string owner;                    // the allocation's owner, who exported it
  std::vector<std::string> for_owners;  // who may import it: sorted, no duplicates
  std::chrono::system_clock::time_point created_at{};
  bool released = false;
  std::uint64_t importers = 0;  // connections holding an import made through it (live exports only)
};

struct ImportRecord {
  ExportId export_id;
  AllocationId allocation;
  std::string owner;     // the allocation's owner
  std::string importer;  // who imported it
  std::uint64_t connection = 0;
  std::uint64_t imports = 0;  // this connection's imports of the allocation, this one included
};

// For status reports and metrics.
struct ExportCounts {
  std::size_t exports = 0;           // live exports
  std::size_t imports = 0;           // imports held by open connections
  std::size_t connections = 0;       // connections holding at least one import
  std::size_t held_allocations = 0;  // allocations with a live export or an importer
  std::size_t freeing = 0;           // freed by their owners, waiting for importers to close
  friend bool operator==(const ExportCounts&, const ExportCounts&) = default;
};

class ExportTable {
 public:
  explicit ExportTable(ExportLimits limits = {}) : limits_(limits) {}
  ExportTable(const ExportTable&) = delete;
  ExportTable& operator=(const ExportTable&) = delete;

  // A new export of `allocation` (owned by `owner_of_allocation`) for
  // `for_owners`. invalid_argument: no owner, more than kMaxExportOwners, or
  // one breaking the owner rule; quota_exceeded past the limits; conflict
  // when the allocation is being freed.
  Result<ExportRecord> add(AllocationId allocation, std::string owner_of_allocation,
                           std::vector<std::string> for_owners,
                           std::chrono::system_clock::time_point now = std::chrono::system_clock::now());
  // The live export; not_found (saying whether it was released) otherwise.
  Result<ExportRecord> find(const ExportId& id) const;
  // Ends the export (no new imports); its record, released. not_found when
  // it never existed or was already released (the message says which).
  Result<ExportRecord> release(const ExportId& id);
  // Records that `connection` (a socket connection of `importer_owner`) holds
  // an import of the export's allocation. not_found for an unknown or
  // released export; permission_denied unless the importer is among the
  // export's owners (importer_is_admin changes nothing: see above).
  Result<ImportRecord> import(const ExportId& id, const std::string& importer_owner, bool importer_is_admin,
                              std::uint64_t connection);
  // The connection closed: all its imports are dropped. Returns the
  // allocations now held by no one that were marked freeing — the caller
  // frees them for real — sorted.
  std::vector<AllocationId> connection_closed(std::uint64_t connection);
  // Releases every live export of the allocation (it is being freed);
  // returns their records, released, oldest first.
  std::vector<ExportRecord> release_allocation(const AllocationId& allocation);
  // The owner freed the allocation. Releases any live export left, then
  // returns true when importers still hold it: the caller must keep the
  // memory until connection_closed() returns the allocation. False: nothing
  // holds it, free it now (the table forgets it).
  bool mark_freeing(const AllocationId& allocation);

  // A live export or an importer connection.
  bool held(const AllocationId& allocation) const;
  // Connections holding an import of the allocation.
  std::size_t importers(const AllocationId& allocation) const;
  // Live exports of the allocation, oldest first.
  std::vector<ExportRecord> exports_of(const AllocationId& allocation) const;
  // Live exports, oldest first; only those `owner` made when given.
  std::vector<ExportRecord> list(const std::optional<std::string>& owner) const;
  ExportCounts counts() const;

  // Every index agrees with every other and with the limits.
  Result<void> validate() const;

 private:
  struct AllocationState {
    std::string owner;
    std::vector<ExportId> live;                                     // its live exports, oldest first
    std::unordered_map<std::uint64_t, std::uint64_t> connections;  // connection → imports held
    bool freeing = false;
  };
  struct ConnectionImport {
    AllocationId allocation;
    std::uint64_t count = 0;
  };

  Error gone_locked(const ExportId& id) const;
  ExportRecord release_locked(std::unordered_map<ExportId, ExportRecord>::iterator it, std::string why);
  void forget_if_unheld_locked(const AllocationId& allocation);
  void remember_locked(const ExportId& id, std::string why);

  const ExportLimits limits_;
  mutable std::mutex mu_;
  std::unordered_map<ExportId, ExportRecord> exports_;  // live only
  std::unordered_map<AllocationId, AllocationState> allocations_;  // held or freeing only
  std::unordered_map<std::uint64_t, std::unordered_map<ExportId, ConnectionImport>> connections_;
  std::size_t imports_ = 0;
  std::unordered_map<ExportId, std::string> released_;  // id → how ("" or " when its allocation was freed")
  std::deque<ExportId> released_order_;                 // oldest first, for forgetting
};

}  // namespace memd
