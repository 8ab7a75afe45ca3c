// service/memory_service.hpp — the Memory domain's one facade.
//
// MemoryService owns the device catalog (built from BackendOptions), the
// MemoryManager and the sessions, and answers every operation both
// transports expose: status, usage, allocation listing and details,
// allocate/deallocate, byte access, limits, clear, optimize, sessions,
// health and devices. Transports never reach past it to a manager, so the
// two doors cannot behave differently. Later managers (transfers, monitor,
// models) are owned and wired here too.
//
// Ownership is enforced here, not in the dispatcher: every operation that
// touches an owner's allocations, limits or sessions takes the Caller
// (service/caller.hpp) and applies the rule itself, so in-process users (the
// stdio host, a future socket door, tests) meet the same rule as REST
// clients, and no door can skip it by calling the service directly. Reads of
// aggregates (status, usage, limits, devices, health) stay open to everyone.
//
// Sessions: an allocation made by a Caller with a session joins it; closing
// the session, or its lease lapsing without a heartbeat, frees what is still
// attached (each release logged at info with owner, id and bytes). A
// LeaseReaper thread sweeps lapsed leases every session_sweep_interval; a
// request that names a lapsed session ends it at once too.
//
// Input has already been shaped by the protocol layer; the service still
// checks what only it can know (that a device exists and offers the memory
// type, that a size is in range, that an owner obeys the owner rule) so
// in-process callers get the same errors.
//
// Thread safety: every method is thread-safe; calls may run concurrently from
// any number of transport threads and the reaper.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/error.hpp"
#include "monitor/analytics.hpp"
#include "monitor/block_map.hpp"
#include "models/model_manager.hpp"
#include "monitor/event_bus.hpp"
#include "monitor/memory_history.hpp"
#include "monitor/monitor.hpp"
#include "monitor/recommendations.hpp"
#include "service/caller.hpp"
#include "service/export_table.hpp"
#include "service/lease_reaper.hpp"
#include "service/reports.hpp"
#include "service/session_table.hpp"
#include "service/state_store.hpp"
#include "transfer/defragmenter.hpp"
#include "transfer/defrag_schedule.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {

struct ServiceOptions {
  BackendOptions backends;
  ManagerOptions manager;
  // How often the reaper looks for lapsed leases; zero runs no reaper thread
  // (a request naming a lapsed session, or sweep_sessions(), still ends it).
  std::chrono::milliseconds session_sweep_interval{1000};
  // The clock leases run on; null: std::chrono::steady_clock (tests inject one).
  LeaseClock clock;
  SessionLimits session_limits;
  TransferOptions transfers;
  // Where peers import exports (memd serve --socket); told to exporters.
  std::string socket_path;
  // Sampling, pressure and its policy (monitor/monitor.hpp).
  MonitorOptions monitor;
  // Events kept for Last-Event-ID resumption (monitor/event_bus.hpp).
  std::size_t event_ring = kDefaultEventRing;
  // Defragment a device by itself once its fragmentation passes a threshold
  // and it has been idle (transfer/defrag_schedule.hpp); none: only on request.
  std::optional<DefragScheduleOptions> scheduled_defrag;
  // Series and failure counts (monitor/analytics.hpp); tests inject a clock.
  AnalyticsOptions analytics;
  // The allocation history rings and out-of-memory snapshots (monitor/memory_history.hpp).
  HistoryOptions history;
  // Model roots, the RAM tier's limit, loader threads (models/model_manager.hpp).
  ModelOptions models;
  // --state-dir: limits, models and the usage predictor's history kept
  // across restarts (service/state_store.hpp), and the models' content-hash
  // cache (models.state_dir, set to this when empty). The directory must
  // exist; a second service on it is refused (conflict). Empty: nothing kept.
  std::filesystem::path state_dir;
  // How often state that changed without a prompt write (model uses, the
  // predictor's history) is written; 0: only at close and on a prompt write.
  std::chrono::milliseconds state_flush_interval{2000};
};

// What an importer receives over the socket: the descriptor and where the
// allocation's bytes are in what it maps.
struct ImportGrant {
  ExportRecord export_record;
  AllocationRecord allocation;
  ShareableSegment segment;  // kind, and size: what the descriptor covers
  int fd = -1;               // the caller sends it, then closes it
  std::string gpu_uuid;      // VRAM of a GPU: which one (CUDA_VISIBLE_DEVICES may renumber)
};

// A lease (client mode; memory_lease over the socket): memory of its own,
// allocated for the caller and sent to its connection as a descriptor.
struct LeaseGrant {
  AllocationRecord allocation;
  ShareableSegment segment;  // kind, and size: what the descriptor covers
  int fd = -1;               // the caller sends it, then closes it
  std::string gpu_uuid;      // a GPU's UUID, "" for host devices
};

// Leases held now, for status and metrics.
struct LeaseCounts {
  std::uint64_t leases = 0;
  std::uint64_t bytes = 0;
  std::uint64_t connections = 0;
  std::map<std::string, std::uint64_t> bytes_by_owner;
  std::map<DeviceId, std::uint64_t> bytes_by_device;
};

// A model's export (memory_model_export): its components, each with the
// export made of its buffer, in the order of the view's components.
struct ModelExportReport {
  ModelExportView view;
  std::vector<ExportRecord> exports;
  std::vector<std::string> gpu_uuids;  // per component: its GPU's UUID ("" for host devices)
};

class MemoryService {
 public:
  static Result<std::unique_ptr<MemoryService>> create(const ServiceOptions& options);
  ~MemoryService();
  MemoryService(const MemoryService&) = delete;
  MemoryService& operator=(const MemoryService&) = delete;

  const DeviceCatalog& catalog() const noexcept { return *catalog_; }
  MemoryManager& manager() noexcept { return *manager_; }
  TransferEngine& transfers() noexcept { return *transfers_; }
  EventBus& events() noexcept { return *events_; }
  Monitor& monitor() noexcept { return *monitor_; }
  // Models are the daemon's: any caller may load, read, pin and unload them
  // (they are shared between the workers that use them).
  ModelManager& models() noexcept { return *models_; }
  MemoryHistory& history() noexcept { return *history_; }

  // Checks the caller's session, if it names one: not_found (saying how it
  // ended) when closed or lapsed — a lapsed one is released on the spot —
  // and permission_denied when it is another owner's (even for the admin: a
  // session is an identity to work in, not a permission). Every operation
  // below that takes a Caller runs it first; the dispatcher runs it for the
  // others too, so any request naming a dead session learns it.
  Result<void> admit(const Caller& caller);

  // All devices, or one (not_found for an unknown device). Open to all.
  // From the monitor's last sample (no driver call), with the allocator's
  // live counters laid over.
  Result<MemoryStatusReport> status(std::optional<DeviceId> device) const;
  // Pressure of every device, or one (not_found for an unknown device).
  Result<std::vector<PressureReading>> pressure(std::optional<DeviceId> device) const;
  UsageReport usage() const;
  // The caller's own allocations; the admin's query may name any owner or
  // none. A non-admin naming another owner: permission_denied.
  Result<AllocationPage> allocations(const Caller& caller, const AllocationQuery& query);
  // Details, free, write and read: the allocation's owner or the admin only.
  Result<AllocationRecord> allocation(const Caller& caller, const AllocationId& id);

  // Allocates as caller.owner (request.owner is ignored), in caller.session
  // when it names one.
  Result<AllocationRecord> allocate(const Caller& caller, const AllocationRequest& request);
  Result<AllocationRecord> deallocate(const Caller& caller, const AllocationId& id);
  Result<void> write(const Caller& caller, const AllocationId& id, std::uint64_t offset,
                     std::span<const std::byte> data);
  Result<std::vector<std::byte>> read(const Caller& caller, const AllocationId& id, std::uint64_t offset,
                                      std::uint64_t length);

  // Transfers and copies (transfer/transfer_engine.hpp). The caller must be
  // allowed to touch every allocation named: its owner, or the admin.
  // Reports of transfers and batches: whoever submitted them, or the admin.
  Result<TransferReport> transfer(const Caller& caller, const TransferSpec& spec);
  Result<BatchReport> transfer_batch(const Caller& caller, const std::vector<TransferSpec>& specs);
  Result<TransferReport> transfer_status(const Caller& caller, const TransferId& id);
  Result<BatchReport> batch_status(const Caller& caller, const BatchId& id);
  Result<TransferReport> cancel_transfer(const Caller& caller, const TransferId& id);
  Result<BatchReport> cancel_batch(const Caller& caller, const BatchId& id);
  Result<CopyResult> copy(const Caller& caller, const TransferSpec& spec);

  // Exports (DESIGN.md, "Memory other processes use"). export: the
  // allocation's owner (or the admin) grants `for_owners` the right to map
  // it; it must be exportable (conflict otherwise). release: no new imports;
  // a second release is not_found. import: over the socket, by one of the
  // export's owners on `connection`; the allocation is held (its memory and
  // its bytes counted, even if its owner frees it) until importer_closed()
  // for that connection.
  Result<ExportRecord> export_allocation(const Caller& caller, const AllocationId& id,
                                         std::vector<std::string> for_owners);
  Result<ExportRecord> release_export(const Caller& caller, const AllocationId& id, const ExportId& export_id);
  Result<ImportGrant> import_export(const Caller& caller, const ExportId& export_id, std::uint64_t connection);
  // Ends everything `connection` held: its imports and its leases.
  void importer_closed(std::uint64_t connection);
  // Leases (client mode, DESIGN.md "One budget across processes";
  // memory_service_leases.cpp). lease: `bytes` of exportable VRAM on the
  // device (named, or found by its GPU UUID) allocated as the caller, with
  // every limit, quota and pressure check an allocation gets, held for
  // `connection` and its descriptor made; the allocation is tagged "lease".
  // release_lease: a lease of this connection only (not_found otherwise),
  // freed. The connection's close frees the rest. `pid` names the lease.
  Result<LeaseGrant> lease(const Caller& caller, std::optional<DeviceId> device,
                           const std::optional<std::string>& gpu_uuid, std::uint64_t bytes,
                           std::uint64_t connection, std::int64_t pid);
  Result<AllocationRecord> release_lease(const Caller& caller, const AllocationId& id, std::uint64_t connection);
  LeaseCounts lease_counts() const;
  // A model's weights for other processes (memory_service_models.cpp;
  // models/model_export.hpp): every component's buffer exported for
  // `for_owners`, all or none. Models are the daemon's, so any admitted
  // caller may export one, as any may load or unload it; only the named
  // owners may import. Release ends the model's exports (all, or the one
  // named: not_found when it is not an export of this model's components).
  Result<ModelExportReport> export_model(const Caller& caller, std::string_view name,
                                         std::vector<std::string> for_owners);
  Result<std::vector<ExportRecord>> release_model_exports(const Caller& caller, std::string_view name,
                                                          const std::optional<ExportId>& export_id);
  ExportCounts export_counts() const { return exports_->counts(); }
  const std::string& socket_path() const noexcept { return socket_path_; }
  // Set once, before requests are served (the path is known after bind).
  void set_socket_path(std::string path) { socket_path_ = std::move(path); }

  Limits limits() const;
  // Applies one change and returns the limits now in force. Admin only:
  // an owner that could raise its own quota would have none.
  Result<Limits> update_limits(const Caller& caller, const LimitUpdate& update);

  // Trims cached memory (open to all: it frees nothing anyone holds); with
  // any filter set also frees the matching allocations (never everything by
  // accident: no filter, no frees). Freeing needs the admin unless the
  // filter names the caller's own owner.
  Result<ClearReport> clear(const Caller& caller, const ClearRequest& request);
  // Open to all, like a trim: it gives back only memory no one holds.
  OptimizeReport optimize();
  // Defragmentation (memory_service_defrag.cpp; transfer/defragmenter.hpp).
  // Open to all callers, like optimize: it moves other owners' allocations,
  // but keeps every id, byte, owner and quota, and never moves what anyone
  // pinned, exported or is using (held), so nobody can tell but by timing;
  // the cost is bounded by the options' limits. not_found: unknown device.
  Result<DefragReport> defragment(const Caller& caller, const DefragOptions& options);
  // For the event bus's owner: set_event_hook before serving.
  Defragmenter& defragmenter() noexcept { return *defragmenter_; }
  HealthReport health() const;
  std::vector<DeviceInfo> devices() const;

  // Memory over a window, failures and top owners (monitor/analytics.hpp);
  // the recommendations for the state now, ranked
  // (monitor/recommendations.hpp). Open to all, like status; not_found for an
  // unknown device. In memory_service_analytics.cpp.
  Result<AnalyticsReport> analytics(const AnalyticsQuery& query) const;
  Result<std::vector<Recommendation>> optimization(const RecommendationOptions& options) const;
  const Analytics& analytics_state() const noexcept { return *analytics_; }

  // Sessions (service/session_table.hpp). open: a session of caller.owner
  // (ttl default kDefaultSessionTtl). heartbeat, close: the session's owner
  // or the admin. sessions: the caller's own; the admin sees all.
  Result<SessionReport> open_session(const Caller& caller, std::optional<std::chrono::seconds> ttl);
  Result<SessionReport> heartbeat_session(const Caller& caller, const SessionId& id);
  Result<SessionCloseReport> close_session(const Caller& caller, const SessionId& id);
  Result<std::vector<SessionReport>> sessions(const Caller& caller);
  // Ends every lapsed lease and frees its allocations; what the reaper runs.
  // Returns the sessions ended.
  std::size_t sweep_sessions();

  // Allocation history (monitor/allocation_history.hpp): the newest entries
  // of one device or all. The admin sees every owner's and may name one;
  // anyone else sees only its own (naming another: permission_denied).
  Result<std::vector<HistoryEntry>> history(const Caller& caller, const HistoryQuery& query);
  // An out-of-memory snapshot: the failing request's owner or the admin
  // (permission_denied otherwise). The owner sees other owners' allocations,
  // blocks and entries by size only (redact()). Unknown or no longer kept:
  // not_found.
  Result<OomSnapshot> history_snapshot(const Caller& caller, const SnapshotId& id);
  // The live block map of one device (monitor/block_map.hpp, the walker an
  // out-of-memory snapshot uses), at most max_blocks blocks. Anyone admitted
  // may look, as at memory_status; a non-admin sees other owners' blocks by
  // address, size and state only (hidden). An unknown device: not_found.
  Result<DeviceBlockMap> block_map(const Caller& caller, DeviceId device, std::size_t max_blocks);

  // Writes every state file whose state changed (--state-dir; nothing
  // without one): what a stop does before it releases memory. The first
  // write error, if any (each is logged).
  Result<void> save_state();
  // The state directory's store; null without --state-dir.
  const StateStore* state() const noexcept { return state_.get(); }

  // Frees everything `owner` holds (pinned included) and ends its sessions:
  // a stdio host's exit.
  std::vector<AllocationRecord> release_owner(std::string_view owner);

  // The manager's invariants, then the session table's.
  Result<void> validate() const;

 private:
  MemoryService() = default;
  std::uint64_t reserved_total() const;
  // The limits a state file held, applied at start (what the machine lacks
  // now is skipped with a warning).
  void restore_limits(const Limits& limits);
  // Registers the state files' concerns and applies what load() found.
  void restore_state(StateLoad loaded, std::chrono::milliseconds flush_interval);
  SteadyTime now() const;
  std::size_t sweep_at(SteadyTime now);
  SessionReport report(const Session& session) const;
  // The allocation, if the caller may `verb` it.
  Result<AllocationRecord> owned(const Caller& caller, const AllocationId& id, std::string_view verb);
  // The checks of one transfer spec: both allocations the caller's (or the
  // admin's), a move's device and memory type offered.
  Result<void> check_transfer(const Caller& caller, const TransferSpec& spec);
  // An allocation was freed (or its free deferred): its exports end.
  void freed(const AllocationId& id);
  // A refused allocation: its history entry (an out_of_memory snapshot,
  // whose id the returned error carries), allocation_failed, and
  // limit_reached for a quota.
  Error allocation_refused(const AllocationRequest& request, DeviceId device, const Error& error, RefusedBy by);
  // Counts it for analytics, with the limit that refused it.
  void record_refusal(const AllocationRequest& request, DeviceId device, const Error& error);
  // The transfer engine's completion hook: transfer_completed / _failed.
  void transfer_finished(const TransferReport& report);
  // The defragmenter's hook: defragment_started / _finished.
  void defrag_event(const DefragEvent& event);
  // A sample hook: defragments each device the schedule says to.
  void scheduled_defrag(const MemoryStatusReport& report, const DefragScheduleOptions& schedule);
  // Frees an ended session's allocations, logging each; returns what it freed.
  std::vector<AllocationRecord> release(const EndedSession& ended, std::string_view why);

  // First: every part below may publish, until it is gone.
  std::unique_ptr<EventBus> events_;
  std::unique_ptr<DeviceCatalog> catalog_;
  std::unique_ptr<MemoryManager> manager_;
  // After the manager: transfers hold its allocations, and go first.
  std::unique_ptr<TransferEngine> transfers_;
  // Borrows the engine's streams: after it, so it goes first.
  std::unique_ptr<Defragmenter> defragmenter_;
  // Fed by the monitor: goes after it.
  std::unique_ptr<Analytics> analytics_;
  // After transfers (it samples them); stopped before anything it reads.
  std::unique_ptr<Monitor> monitor_;
  // Uses the manager, the transfers, the monitor and the bus: goes first.
  std::unique_ptr<ModelManager> models_;
  std::unique_ptr<MemoryHistory> history_;
  std::unique_ptr<ExportTable> exports_ = std::make_unique<ExportTable>();
  std::string socket_path_;
  // One hold per import, by connection: an importer's mapping keeps the
  // memory until its connection closes.
  mutable std::mutex imports_mutex_;
  std::multimap<std::uint64_t, AllocationHold> import_holds_;
  struct HeldLease {
    AllocationId id;
    AllocationHold hold;
    DeviceId device;
    std::string owner;
    std::uint64_t bytes = 0;
  };
  std::multimap<std::uint64_t, HeldLease> leases_;  // by connection; imports_mutex_
  // Frees a lease's allocation (its hold is dropped by the caller after).
  void end_lease(const HeldLease& lease, std::string_view why);
  std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  // Limit updates are read-modify-write of the manager's whole Limits value.
  std::mutex limits_mutex_;
  // --state-dir (service/state_store.hpp): made first (it holds the
  // directory's lock), closed before the models go, destroyed last.
  std::unique_ptr<StateStore> state_;
  std::atomic<std::uint64_t> limits_generation_{0};
  StateStore::ConcernId limits_concern_ = 0;
  // One sweep at a time: a sweep takes lapsed sessions out of the table and
  // then frees their allocations, so without this a caller's sweep could
  // return (nothing left to take) while the reaper's was still freeing —
  // sessions gone, memory not yet (SessionsTest, one asan run in CI).
  std::mutex sweep_mutex_;
  LeaseClock clock_;
  std::unique_ptr<SessionTable> sessions_;
  // Last: it calls back into everything above, and is stopped first.
  std::unique_ptr<LeaseReaper> reaper_;
};

}  // namespace memd
