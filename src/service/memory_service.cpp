// MemoryService: composes catalog, manager and health policy into the
// operations both transports expose.
#include "service/memory_service.hpp"

#include <algorithm>
#include <set>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "memd/owner_name.hpp"
#include "memd/size.hpp"
#include "transfer/transfer_json.hpp"
#include "monitor/health_policy.hpp"

namespace memd {
namespace {

Result<void> check_device_offers(const DeviceCatalog& catalog, DeviceId device, MemoryType type) {
  auto backend = catalog.backend_for(device, type);
  if (!backend) return fail(backend.error());
  return {};
}

}  // namespace

Result<std::unique_ptr<MemoryService>> MemoryService::create(const ServiceOptions& options) {
  auto catalog = DeviceCatalog::discover(options.backends);
  if (!catalog) return fail(catalog.error());
  auto service = std::unique_ptr<MemoryService>(new MemoryService());
  // The state directory first: its lock refuses a second daemon on it before
  // anything reads its files (the models' hash cache among them).
  ModelOptions model_options = options.models;
  StateLoad loaded;
  if (!options.state_dir.empty()) {
    auto store = StateStore::open(options.state_dir);
    if (!store) return fail(store.error());
    service->state_ = std::move(*store);
    loaded = service->state_->load();
    if (model_options.state_dir.empty()) model_options.state_dir = options.state_dir;
  }
  service->events_ = std::make_unique<EventBus>(options.event_ring);
  service->catalog_ = std::move(*catalog);
  for (const auto& [device, policy] : options.manager.pool_policies)
    if (!service->catalog_->info(device))
      return fail(ErrorCode::not_found, "a pool policy names {}, which this machine does not have",
                  device.to_string());
  service->manager_ = std::make_unique<MemoryManager>(*service->catalog_, options.manager);
  service->history_ = std::make_unique<MemoryHistory>(*service->manager_, options.history);
  Backend* host = nullptr;
  for (const auto& b : service->catalog_->backends())
    if (b->name() == "host") host = b.get();
  if (!host) return fail(ErrorCode::internal, "the device catalog has no host backend");
  service->transfers_ = std::make_unique<TransferEngine>(*service->manager_, *host, options.transfers);
  service->defragmenter_ = std::make_unique<Defragmenter>(*service->manager_, service->transfers_->stream_pool());
  auto monitor = Monitor::create(*service->catalog_, *service->manager_, *service->transfers_, *service->events_,
                                 options.monitor);
  if (!monitor) return fail(monitor.error());
  service->monitor_ = std::move(*monitor);
  service->models_ = std::make_unique<ModelManager>(*service->manager_, *service->transfers_, *service->monitor_,
                                                    *service->events_, model_options);
  service->models_->set_export_probe([table = service->exports_.get()](const AllocationId& id) {
    return ExportUse{table->exports_of(id).size(), table->importers(id)};
  });
  {
    std::vector<DeviceId> ids;
    for (const auto& d : service->catalog_->devices()) ids.push_back(d.id);
    service->analytics_ = std::make_unique<Analytics>(std::move(ids), options.analytics);
    Analytics* a = service->analytics_.get();
    a->on_sample(*service->monitor_->cached_status());  // the first sample came before the hook
    service->monitor_->add_sample_hook([a](const MemoryStatusReport& report) { a->on_sample(report); });
  }
  {
    MemoryService* self = service.get();
    service->transfers_->set_completion_hook([self](const TransferReport& report) { self->transfer_finished(report); });
    service->defragmenter_->set_event_hook([self](const DefragEvent& event) { self->defrag_event(event); });
    if (options.scheduled_defrag) {
      const DefragScheduleOptions schedule = *options.scheduled_defrag;
      service->monitor_->add_sample_hook(
          [self, schedule](const MemoryStatusReport& report) { self->scheduled_defrag(report, schedule); });
    }
  }
  if (service->state_) service->restore_state(std::move(loaded), options.state_flush_interval);
  service->socket_path_ = options.socket_path;
  service->clock_ = options.clock ? options.clock : LeaseClock([] { return std::chrono::steady_clock::now(); });
  service->sessions_ = std::make_unique<SessionTable>(options.session_limits);
  if (options.session_sweep_interval.count() > 0) {
    MemoryService* self = service.get();
    service->reaper_ = std::make_unique<LeaseReaper>([self](SteadyTime now) { self->sweep_at(now); },
                                                     options.session_sweep_interval, service->clock_);
  }
  return service;
}

// The reaper goes first (it calls into the rest); the manager must go before
// the catalog whose backends it holds memory of.
MemoryService::~MemoryService() {
  if (reaper_) reaper_->stop();
  reaper_.reset();
  if (monitor_) monitor_->stop();
  // The last writes, while everything they read is here; the models' own
  // teardown (cancelled jobs) is not state to keep.
  if (state_) {
    if (models_) models_->set_state_hook({});
    state_->close();
  }
  models_.reset();
  defragmenter_.reset();
  transfers_.reset();
  monitor_.reset();
  {
    std::lock_guard lock(imports_mutex_);
    import_holds_.clear();
  }
  manager_.reset();
  state_.reset();  // the directory's lock goes last
}

SteadyTime MemoryService::now() const { return clock_(); }

void MemoryService::restore_limits(const Limits& stored) {
  Limits limits = stored;
  for (auto it = limits.per_device.begin(); it != limits.per_device.end();) {
    auto info = catalog_->info(it->first);
    if (!info) {
      spdlog::warn("state: the limit of {} bytes on {} is not restored: this machine has no such device now",
                   it->second, it->first.to_string());
      it = limits.per_device.erase(it);
      continue;
    }
    // Kept as set (a limit only caps, as memory_limits accepts it), but said.
    if (it->second > info->total_bytes)
      spdlog::warn("state: the limit on {} ({}) is over the device's capacity ({}); it caps nothing there now",
                   it->first.to_string(), format_size(it->second), format_size(info->total_bytes));
    ++it;
  }
  if (auto ok = manager_->set_limits(limits); !ok) {
    spdlog::error("state: the limits are not restored: {}", ok.error().message);
    return;
  }
  spdlog::info("state: restored {} device, {} memory type and {} owner limit(s)", limits.per_device.size(),
               limits.per_memory_type.size(), limits.per_owner.size());
}

void MemoryService::restore_state(StateLoad loaded, std::chrono::milliseconds flush_interval) {
  if (loaded.limits) restore_limits(*loaded.limits);
  MemoryService* self = this;
  ModelManager* models = models_.get();
  limits_concern_ = state_->add(
      {std::string(kLimitsStateFile), [self] { return self->limits_generation_.load(std::memory_order_acquire); },
       [self] { return format_limits_state(self->manager_->limits(), std::chrono::system_clock::now()); }});
  const auto models_concern = state_->add(
      {std::string(kModelsStateFile), [models] { return models->state_generation(); },
       [models] { return format_models_state(models->records(), std::chrono::system_clock::now()); }});
  state_->add({std::string(kPredictorStateFile), [models] { return models->predictor().generation(); },
               [models] {
                 return format_predictor_state(
                     models->predictor().history(std::chrono::steady_clock::now(), std::chrono::system_clock::now()),
                     std::chrono::system_clock::now());
               }});
  // Before the restore starts jobs: a job that ends writes models.json at once.
  StateStore* store = state_.get();
  models_->set_state_hook([store, models_concern] { (void)store->flush(models_concern); });
  if (loaded.predictor) {
    models_->predictor().restore(*loaded.predictor, std::chrono::steady_clock::now(), std::chrono::system_clock::now());
    spdlog::info("state: restored the usage predictor's history of {} model(s)", loaded.predictor->models.size());
  }
  if (loaded.models) {
    std::size_t pinned = 0;
    for (const auto& r : *loaded.models) pinned += r.pinned ? 1 : 0;
    spdlog::info("state: restoring {} model(s): {} pinned, loaded back; {} registered at the Disk tier",
                 loaded.models->size(), pinned, loaded.models->size() - pinned);
    models_->restore(*loaded.models);
  }
  state_->start(flush_interval);
}

Result<void> MemoryService::save_state() {
  if (!state_) return {};
  return state_->flush_all();
}

Result<void> MemoryService::admit(const Caller& caller) {
  if (!caller.session) return {};
  const SessionId& id = *caller.session;
  auto session = sessions_->find(id);
  if (!session) return fail(session.error());
  if (session->owner != caller.owner)
    return fail(ErrorCode::permission_denied, "session {} belongs to '{}'; '{}' may not work in it",
                id.to_string(), session->owner, caller.owner);
  if (session->expires_at <= now()) {
    // Lapsed but not swept yet: end it now, so what the caller is told
    // (its allocations are gone) is already true.
    sweep_sessions();
    auto gone = sessions_->find(id);
    if (!gone) return fail(gone.error());
    return fail(ErrorCode::not_found, "session {} lapsed", id.to_string());
  }
  return {};
}

Result<MemoryStatusReport> MemoryService::status(std::optional<DeviceId> device) const {
  if (device)
    if (auto info = catalog_->info(*device); !info) return fail(info.error());
  const auto cached = monitor_->cached_status();
  MemoryStatusReport report;
  report.health = MemoryHealthStatus::Healthy;
  report.sampled_at = cached->sampled_at;
  report.sample = cached->sample;
  for (const DeviceStatus& d : cached->devices) {
    if (device && d.info.id != *device) continue;
    DeviceStatus s = d;
    // What moves with every request is read live (the pools' counters); the
    // driver's numbers and the free-space views are the sample's. The
    // device's used bytes are the sample's other processes plus memd's own
    // reservation now.
    auto live = manager_->device_counters(s.info.id);
    const std::uint64_t others = s.used_bytes - std::min(s.used_bytes, s.reserved_bytes);
    s.allocated_bytes = live.allocated_bytes;
    s.reserved_bytes = live.reserved_bytes;
    s.allocations = live.allocations;
    if (s.answered && s.info.id != DeviceId::cpu()) {
      s.used_bytes = std::min(s.total_bytes, others + s.reserved_bytes);
      s.free_bytes = s.total_bytes - s.used_bytes;
    }
    for (auto& [type, counters] : live.pools) {
      if (auto sampled = s.pools.find(type); sampled != s.pools.end()) {
        counters.free_bytes = sampled->second.free_bytes;
        counters.largest_free_block = sampled->second.largest_free_block;
        counters.fragmentation = sampled->second.fragmentation;
      }
      counters.footprint_ratio = counters.allocated_bytes == 0 ? 0.0
                                                               : static_cast<double>(counters.reserved_bytes) /
                                                                     static_cast<double>(counters.allocated_bytes);
    }
    s.pools = std::move(live.pools);
    if (auto p = monitor_->pressure(s.info.id)) s.pressure = *p;
    report.devices.push_back(std::move(s));
  }
  if (device) return report;
  report.pinned = cached->pinned;
  report.transfers = transfers_->stats();
  return report;
}

Result<std::vector<PressureReading>> MemoryService::pressure(std::optional<DeviceId> device) const {
  if (!device) return monitor_->pressure();
  auto one = monitor_->pressure(*device);
  if (!one) return fail(one.error());
  return std::vector<PressureReading>{*one};
}

UsageReport MemoryService::usage() const {
  UsageReport report;
  for (const auto& [key, stats] : manager_->pool_stats()) {
    for (UsageTotals* t : {&report.total, &report.by_device[key.device],
                           &report.by_memory_type[key.memory_type]}) {
      t->rounded_bytes = t->rounded_bytes.value_or(0) + stats.allocated_bytes;
      t->reserved_bytes = t->reserved_bytes.value_or(0) + stats.reserved_bytes;
      t->allocations += stats.live_allocations;
    }
  }
  // Requested bytes come from the quota counters (the sizes asked for), not
  // from the pools (which see only rounded blocks).
  for (const auto& [device, bytes] : manager_->requested_by_device()) {
    report.by_device[device].requested_bytes = bytes;
    report.total.requested_bytes += bytes;
  }
  for (const auto& [type, bytes] : manager_->requested_by_type()) report.by_memory_type[type].requested_bytes = bytes;
  for (const auto& [owner, use] : manager_->usage_by_owner()) {
    auto& t = report.by_owner[owner];
    t.requested_bytes = use.bytes;
    t.allocations = use.allocations;
  }
  return report;
}

Result<AllocationPage> MemoryService::allocations(const Caller& caller, const AllocationQuery& query) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  AllocationFilter filter = query.filter;
  if (!caller.admin) {
    if (filter.owner && *filter.owner != caller.owner)
      return fail(ErrorCode::permission_denied,
                  "'{}' may list only its own allocations; listing '{}''s needs the admin", caller.owner,
                  *filter.owner);
    filter.owner = caller.owner;
  }
  auto all = manager_->list(filter);
  AllocationPage page;
  page.total = all.size();
  page.offset = query.offset;
  page.limit = query.limit;
  if (query.offset < all.size()) {
    const auto first = all.begin() + static_cast<std::ptrdiff_t>(query.offset);
    const auto count = std::min<std::uint64_t>(query.limit, all.size() - query.offset);
    page.items.assign(std::make_move_iterator(first),
                      std::make_move_iterator(first + static_cast<std::ptrdiff_t>(count)));
  }
  return page;
}

Result<AllocationRecord> MemoryService::owned(const Caller& caller, const AllocationId& id,
                                              std::string_view verb) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto record = manager_->get(id);
  if (!record) return record;
  // Ids are never reused, so the owner read here is the owner of whatever
  // the caller then touches under this id.
  if (auto ok = require_owner(caller, record->owner, fmt::format("{} allocation {}", verb, id.to_string())); !ok)
    return fail(ok.error());
  return record;
}

Result<AllocationRecord> MemoryService::allocation(const Caller& caller, const AllocationId& id) {
  return owned(caller, id, "see");
}

Result<AllocationRecord> MemoryService::allocate(const Caller& caller, const AllocationRequest& request_in) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  AllocationRequest request = request_in;
  request.owner = caller.owner;
  if (auto ok = check_owner(request.owner); !ok) return fail(ok.error());
  if (request.size_bytes == 0) return fail(ErrorCode::invalid_argument, "sizeBytes must be positive");
  if (request.size_bytes > kMaxRequestBytes)
    return fail(ErrorCode::out_of_memory, "sizeBytes {} exceeds the maximum request of {} bytes",
                request.size_bytes, kMaxRequestBytes);
  if (request.memory_type == MemoryType::Unknown)
    return fail(ErrorCode::invalid_argument, "memoryType Unknown cannot be allocated");
  if (request.device) {
    if (auto ok = check_device_offers(*catalog_, *request.device, request.memory_type); !ok)
      return fail(ok.error());
  }
  const DeviceId device = request.device.value_or(manager_->default_device_for(request.memory_type));
  if (auto ok = monitor_->admit(device, request.priority); !ok) {
    events_->publish(EventKind::pressure_action, device,
                     {{"deviceId", device.to_string()},
                      {"level", "Critical"},
                      {"action", "refuse_low_priority"},
                      {"bytes", 0},
                      {"requestedBytes", request.size_bytes},
                      {"owner", request.owner}});
    return fail(allocation_refused(request, device, ok.error(), RefusedBy::pressure));
  }
  auto record = manager_->allocate(request);
  if (!record) {
    auto error = allocation_refused(request, device, record.error(), RefusedBy::pool);
    monitor_->note_usage(device);
    return fail(std::move(error));
  }
  monitor_->note_usage(record->device, history_->allocated(*record));
  if (!caller.session) return record;
  // The session may have ended while the memory was found: then the
  // allocation must not outlive it either.
  if (auto joined = sessions_->attach(*caller.session, record->id, record->size_bytes, now()); !joined) {
    if (auto freed = manager_->deallocate(record->id)) history_->freed(*freed);
    return fail(joined.error());
  }
  return record;
}

Result<AllocationRecord> MemoryService::deallocate(const Caller& caller, const AllocationId& id) {
  if (auto ok = owned(caller, id, "free"); !ok) return ok;
  auto record = manager_->deallocate(id);
  if (record) {
    const auto counters = history_->freed(*record);
    sessions_->detach(id);
    freed(id);
    monitor_->note_usage(record->device, counters);
  }
  return record;
}

Result<void> MemoryService::write(const Caller& caller, const AllocationId& id, std::uint64_t offset,
                                  std::span<const std::byte> data) {
  if (auto ok = owned(caller, id, "write to"); !ok) return fail(ok.error());
  return transfers_->write(id, offset, data);
}

Result<std::vector<std::byte>> MemoryService::read(const Caller& caller, const AllocationId& id,
                                                   std::uint64_t offset, std::uint64_t length) {
  if (auto ok = owned(caller, id, "read"); !ok) return fail(ok.error());
  return transfers_->read(id, offset, length);
}

Result<void> MemoryService::check_transfer(const Caller& caller, const TransferSpec& spec) {
  // Yours, or exported to you: an importer may copy in and out of what it maps.
  auto usable = [&](const AllocationId& id, std::string_view verb) -> Result<void> {
    auto ok = owned(caller, id, verb);
    if (ok || ok.error().code != ErrorCode::permission_denied) return ok ? Result<void>{} : fail(ok.error());
    for (const auto& e : exports_->exports_of(id))
      if (std::find(e.for_owners.begin(), e.for_owners.end(), caller.owner) != e.for_owners.end()) return {};
    return fail(ok.error());
  };
  if (spec.is_move()) {
    if (auto ok = owned(caller, spec.source, "move"); !ok) return fail(ok.error());
  } else if (auto ok = usable(spec.source, "copy from"); !ok) {
    return ok;
  }
  if (spec.destination) return usable(*spec.destination, "copy into");
  auto record = manager_->get(spec.source);
  if (!record) return fail(record.error());
  const DeviceId device = spec.to_device.value_or(record->device);
  const MemoryType type = spec.to_type.value_or(record->memory_type);
  if (type == MemoryType::Unknown) return fail(ErrorCode::invalid_argument, "memoryType Unknown cannot hold a move");
  return check_device_offers(*catalog_, device, type);
}

Result<TransferReport> MemoryService::transfer(const Caller& caller, const TransferSpec& spec) {
  if (auto ok = check_transfer(caller, spec); !ok) return fail(ok.error());
  return transfers_->submit(caller.owner, spec);
}

Result<BatchReport> MemoryService::transfer_batch(const Caller& caller, const std::vector<TransferSpec>& specs) {
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (auto ok = check_transfer(caller, specs[i]); !ok)
      return fail(ok.error().code, "transfers[{}]: {}", i, ok.error().message);
  return transfers_->submit_batch(caller.owner, specs);
}

Result<TransferReport> MemoryService::transfer_status(const Caller& caller, const TransferId& id) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto report = transfers_->status(id);
  if (!report) return report;
  if (auto ok = require_owner(caller, report->owner, fmt::format("see transfer {}", id.to_string())); !ok)
    return fail(ok.error());
  return report;
}

Result<BatchReport> MemoryService::batch_status(const Caller& caller, const BatchId& id) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto report = transfers_->batch(id);
  if (!report) return report;
  if (auto ok = require_owner(caller, report->owner, fmt::format("see batch {}", id.to_string())); !ok)
    return fail(ok.error());
  return report;
}

Result<TransferReport> MemoryService::cancel_transfer(const Caller& caller, const TransferId& id) {
  if (auto ok = transfer_status(caller, id); !ok) return ok;
  return transfers_->cancel(id);
}

Result<BatchReport> MemoryService::cancel_batch(const Caller& caller, const BatchId& id) {
  if (auto ok = batch_status(caller, id); !ok) return ok;
  return transfers_->cancel_batch(id);
}

Result<CopyResult> MemoryService::copy(const Caller& caller, const TransferSpec& spec) {
  if (spec.is_move()) return fail(ErrorCode::invalid_argument, "memory_copy needs a destinationAllocationId");
  if (auto ok = check_transfer(caller, spec); !ok) return fail(ok.error());
  return transfers_->copy(spec);
}

Limits MemoryService::limits() const { return manager_->limits(); }

Result<Limits> MemoryService::update_limits(const Caller& caller, const LimitUpdate& update) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  if (auto ok = require_admin(caller, "change limits"); !ok) return fail(ok.error());
  const int scopes = int{update.device.has_value()} + int{update.memory_type.has_value()} +
                     int{update.owner.has_value()};
  if (scopes != 1)
    return fail(ErrorCode::invalid_argument,
                "a limit update names exactly one of deviceId, memoryType or owner");
  if (update.bytes && *update.bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "bytes {} exceeds the maximum of {}", *update.bytes,
                kMaxRequestBytes);
  if (update.device) {
    if (auto info = catalog_->info(*update.device); !info) return fail(info.error());
  }
  if (update.memory_type && *update.memory_type == MemoryType::Unknown)
    return fail(ErrorCode::invalid_argument, "memoryType Unknown cannot carry a limit");
  if (update.owner) {
    if (auto ok = check_owner(*update.owner); !ok) return fail(ok.error());
  }

  std::lock_guard lock(limits_mutex_);
  Limits limits = manager_->limits();
  auto apply = [&](auto& map, const auto& key) {
    if (update.bytes) map[key] = *update.bytes;
    else map.erase(key);
  };
  if (update.device) apply(limits.per_device, *update.device);
  if (update.memory_type) apply(limits.per_memory_type, *update.memory_type);
  if (update.owner) apply(limits.per_owner, *update.owner);
  if (auto ok = manager_->set_limits(limits); !ok) return fail(ok.error());
  // Kept before the answer: a limit the caller saw set survives a SIGKILL.
  // A write that fails is logged; the limit is in force all the same.
  limits_generation_.fetch_add(1, std::memory_order_acq_rel);
  if (state_) (void)state_->flush(limits_concern_);
  // A device limit changes the capacity pressure is measured against.
  if (update.device) monitor_->sample_now();
  return manager_->limits();
}

Result<ClearReport> MemoryService::clear(const Caller& caller, const ClearRequest& request) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  ClearReport report;
  const bool any_filter = request.owner || request.memory_type || request.device ||
                          request.below_priority;
  // Freeing your own allocations (narrowed by any other filter) is yours to
  // do; a filter without an owner reaches every owner's.
  if (any_filter && !caller.admin && request.owner != caller.owner)
    return fail(ErrorCode::permission_denied, "{}",
                request.owner ? fmt::format("'{}' may not clear the allocations of '{}': only the admin may",
                                            caller.owner, *request.owner)
                              : fmt::format("a clear without an owner frees every owner's allocations: only the "
                                            "admin may; '{}' may clear its own with owner '{}'",
                                            caller.owner, caller.owner));
  if (any_filter) {
    AllocationFilter filter;
    filter.owner = request.owner;
    filter.memory_type = request.memory_type;
    filter.device = request.device;
    filter.below_priority = request.below_priority;
    report.freed = manager_->free_matching(filter, request.include_pinned);
    history_->freed(report.freed);
    for (const auto& r : report.freed) {
      report.freed_bytes += r.size_bytes;
      sessions_->detach(r.id);
      freed(r.id);
    }
  }
  // Trim after freeing so the memory just freed goes back to the device too.
  transfers_->trim();
  report.released_bytes = manager_->trim();
  std::set<DeviceId> devices;
  for (const auto& r : report.freed) devices.insert(r.device);
  for (DeviceId d : devices) monitor_->note_usage(d);
  return report;
}

OptimizeReport MemoryService::optimize() {
  OptimizeReport report;
  report.reserved_before = reserved_total();
  transfers_->trim();  // idle staging buffers first, so the pinned pool can give them back
  report.released_bytes = manager_->trim();
  report.reserved_after = reserved_total();
  return report;
}

HealthReport MemoryService::health() const {
  HealthReport report;
  auto status_report = status(std::nullopt);
  if (status_report) {
    report.status = status_report->health;
    for (const auto& d : status_report->devices)
      report.devices.push_back({d.info.id, d.health, d.health_reasons, d.pressure.level, d.hardware});
  } else {
    report.status = MemoryHealthStatus::Failed;
  }
  report.uptime = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::steady_clock::now() - started_at_);
  return report;
}

std::vector<DeviceInfo> MemoryService::devices() const { return catalog_->devices(); }

Result<std::vector<HistoryEntry>> MemoryService::history(const Caller& caller, const HistoryQuery& query_in) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  HistoryQuery query = query_in;
  if (query.device)
    if (auto info = catalog_->info(*query.device); !info) return fail(info.error());
  // memory_allocations' rule: your own, unless you are the admin.
  if (!caller.admin) {
    if (query.owner && *query.owner != caller.owner)
      return fail(ErrorCode::permission_denied,
                  "'{}' may see only its own history; the history of '{}' needs the admin", caller.owner,
                  *query.owner);
    query.owner = caller.owner;
  }
  return history_->history().recent(query);
}

Result<OomSnapshot> MemoryService::history_snapshot(const Caller& caller, const SnapshotId& id) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto snapshot = history_->snapshots().find(id);
  if (!snapshot) return snapshot;
  if (auto ok = require_owner(caller, snapshot->request.owner, fmt::format("see snapshot {}", id.to_string())); !ok)
    return fail(ok.error());
  if (caller.admin) return snapshot;
  return redact(std::move(*snapshot), caller.owner);
}

Result<DeviceBlockMap> MemoryService::block_map(const Caller& caller, DeviceId device, std::size_t max_blocks) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  if (auto info = catalog_->info(device); !info) return fail(info.error());
  AllocationFilter filter;
  filter.device = device;
  DeviceBlockMap map = walk_block_map(*manager_, device, manager_->list(filter), max_blocks);
  if (caller.admin) return map;
  return redact(std::move(map), caller.owner);
}

std::vector<AllocationRecord> MemoryService::release_owner(std::string_view owner) {
  // Sessions first: an allocation racing in one of them is then refused by
  // attach() and freed by its own request, or is already listed below.
  const auto ended = sessions_->take_owner(owner);
  AllocationFilter filter;
  filter.owner = std::string(owner);
  auto freed = manager_->free_matching(filter, /*include_pinned=*/true);
  history_->freed(freed);
  for (const auto& r : freed) {
    sessions_->detach(r.id);
    this->freed(r.id);
    spdlog::info("released allocation {} of '{}' ({} bytes): its host went away", r.id.to_string(), r.owner,
                 r.size_bytes);
  }
  for (const auto& e : ended)
    spdlog::info("session {} of '{}' ended with its host", e.session.id.to_string(), e.session.owner);
  manager_->trim();
  return freed;
}

SessionReport MemoryService::report(const Session& session) const {
  SessionReport r;
  r.id = session.id;
  r.owner = session.owner;
  r.ttl = session.ttl;
  // Leases run on the steady clock; clients read wall-clock time.
  r.expires_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(session.expires_at - now());
  r.allocations = session.allocations;
  r.allocated_bytes = session.allocated_bytes;
  return r;
}

Result<SessionReport> MemoryService::open_session(const Caller& caller, std::optional<std::chrono::seconds> ttl) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  if (auto ok = check_owner(caller.owner); !ok) return fail(ok.error());
  auto session = sessions_->open(caller.owner, ttl.value_or(kDefaultSessionTtl), now());
  if (!session) return fail(session.error());
  spdlog::info("session {} opened for '{}' ({} s lease)", session->id.to_string(), session->owner,
               session->ttl.count());
  return report(*session);
}

Result<SessionReport> MemoryService::heartbeat_session(const Caller& caller, const SessionId& id) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto session = sessions_->find(id);
  if (!session) return fail(session.error());
  if (auto ok = require_owner(caller, session->owner, "renew session " + id.to_string()); !ok)
    return fail(ok.error());
  auto renewed = sessions_->renew(id, now());
  if (!renewed) {
    sweep_sessions();  // it lapsed: release its allocations before saying so
    return fail(renewed.error());
  }
  return report(*renewed);
}

Result<SessionCloseReport> MemoryService::close_session(const Caller& caller, const SessionId& id) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto session = sessions_->find(id);
  if (!session) return fail(session.error());
  if (auto ok = require_owner(caller, session->owner, "close session " + id.to_string()); !ok)
    return fail(ok.error());
  if (session->expires_at <= now()) {
    // Too late to close: the lease lapsed, and lapsing releases the same way.
    sweep_sessions();
    auto gone = sessions_->find(id);
    if (!gone) return fail(gone.error());
    return fail(ErrorCode::not_found, "session {} lapsed", id.to_string());
  }
  auto ended = sessions_->close(id);
  if (!ended) return fail(ended.error());
  SessionCloseReport out;
  out.session = report(ended->session);
  out.released = release(*ended, "closed");
  for (const auto& r : out.released) out.released_bytes += r.size_bytes;
  out.session.allocations = 0;
  out.session.allocated_bytes = 0;
  if (!out.released.empty()) manager_->trim();
  return out;
}

Result<std::vector<SessionReport>> MemoryService::sessions(const Caller& caller) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  std::vector<SessionReport> out;
  for (const auto& s : sessions_->list(caller.admin ? std::nullopt : std::optional(caller.owner)))
    out.push_back(report(s));
  return out;
}

std::size_t MemoryService::sweep_sessions() { return sweep_at(now()); }

std::size_t MemoryService::sweep_at(SteadyTime now) {
  std::lock_guard sweep(sweep_mutex_);
  const auto lapsed = sessions_->take_lapsed(now);
  bool freed_any = false;
  for (const auto& e : lapsed) {
    spdlog::info("session {} of '{}' lapsed (no heartbeat within {} s)", e.session.id.to_string(),
                 e.session.owner, e.session.ttl.count());
    freed_any |= !release(e, "lapsed").empty();
  }
  if (freed_any) manager_->trim();
  return lapsed.size();
}

std::vector<AllocationRecord> MemoryService::release(const EndedSession& ended, std::string_view why) {
  std::vector<AllocationRecord> freed;
  for (const auto& id : ended.allocations) {
    auto record = manager_->deallocate(id);
    if (record) {
      history_->freed(*record);
      this->freed(id);
      spdlog::info("released allocation {} of '{}' ({} bytes): session {} {}", id.to_string(), record->owner,
                   record->size_bytes, ended.session.id.to_string(), why);
      freed.push_back(std::move(*record));
    } else if (record.error().code != ErrorCode::not_found) {  // not_found: freed meanwhile by its owner
      spdlog::warn("session {}: releasing allocation {} failed: {}", ended.session.id.to_string(), id.to_string(),
                   record.error().message);
    }
  }
  return freed;
}

Error MemoryService::allocation_refused(const AllocationRequest& request, DeviceId device, const Error& error,
                                        RefusedBy by) {
  if (error.code != ErrorCode::out_of_memory && error.code != ErrorCode::quota_exceeded) return error;
  if (error.code == ErrorCode::out_of_memory) monitor_->note_failure(device);
  record_refusal(request, device, error);
  Error out = error;
  if (auto id = history_->refused(request, device, error, by)) {
    out.snapshot_id = id->to_string();
    out.message += fmt::format(" (snapshot {}; memd history {})", *out.snapshot_id, *out.snapshot_id);
  }
  nlohmann::json data = {{"deviceId", device.to_string()},
                         {"memoryType", std::string(to_string(request.memory_type))},
                         {"owner", request.owner},
                         {"name", request.name},
                         {"priority", std::string(to_string(request.priority))},
                         {"sizeBytes", request.size_bytes},
                         {"code", std::string(to_string(error.code))},
                         {"message", out.message}};
  if (out.snapshot_id) data["snapshotId"] = *out.snapshot_id;
  if (error.code == ErrorCode::quota_exceeded) events_->publish(EventKind::limit_reached, device, data);
  events_->publish(EventKind::allocation_failed, device, std::move(data));
  return out;
}

void MemoryService::transfer_finished(const TransferReport& report) {
  history_->transfer_finished(report);
  const bool ok = report.status == MemoryTransferStatus::Completed;
  // A copy between two devices concerns both; the event names the
  // destination's (where the bytes landed), and carries both in its data.
  events_->publish(ok ? EventKind::transfer_completed : EventKind::transfer_failed, report.destination_device,
                   to_json(report));
  if (report.kind == TransferKind::Move && ok) {
    monitor_->note_usage(report.source_device);
    monitor_->note_usage(report.destination_device);
  }
}

void MemoryService::freed(const AllocationId& id) {
  // Its exports end: no new imports. Importers' holds keep the memory (the
  // manager deferred the free) until their connections close.
  (void)exports_->mark_freeing(id);
}

Result<ExportRecord> MemoryService::export_allocation(const Caller& caller, const AllocationId& id,
                                                      std::vector<std::string> for_owners) {
  auto record = owned(caller, id, "export");
  if (!record) return fail(record.error());
  if (!record->exportable)
    return fail(ErrorCode::conflict,
                "allocation {} is not exportable: only allocations made with \"exportable\": true have memory of "
                "their own to share",
                id.to_string());
  auto made = exports_->add(id, record->owner, std::move(for_owners));
  if (!made) return made;
  (void)manager_->set_exported(id, true);  // freed meanwhile: its exports went with it
  spdlog::info("allocation {} of '{}' exported as {} for {}", id.to_string(), record->owner, made->id.to_string(),
               fmt::join(made->for_owners, ", "));
  return made;
}

Result<ExportRecord> MemoryService::release_export(const Caller& caller, const AllocationId& id,
                                                   const ExportId& export_id) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto found = exports_->find(export_id);
  if (!found) return found;
  if (found->allocation != id)
    return fail(ErrorCode::not_found, "export {} is not an export of allocation {}", export_id.to_string(),
                id.to_string());
  if (auto ok = require_owner(caller, found->owner, fmt::format("release export {}", export_id.to_string())); !ok)
    return fail(ok.error());
  auto released = exports_->release(export_id);
  if (released && exports_->exports_of(id).empty()) (void)manager_->set_exported(id, false);
  return released;
}

Result<ImportGrant> MemoryService::import_export(const Caller& caller, const ExportId& export_id,
                                                 std::uint64_t connection) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  auto found = exports_->find(export_id);
  if (!found) return fail(found.error());
  // The hold first: once it is taken a free of the allocation waits for this
  // connection, so the descriptor sent below never outlives the books.
  auto hold = manager_->hold(found->allocation);
  if (!hold) return fail(ErrorCode::not_found, "export {}: its allocation is gone ({})", export_id.to_string(),
                         hold.error().message);
  auto imported = exports_->import(export_id, caller.owner, caller.admin, connection);
  if (!imported) return fail(imported.error());
  auto fd = manager_->export_fd(*hold);
  if (!fd) return fail(fd.error());
  ImportGrant grant;
  grant.export_record = *found;
  grant.allocation = *manager_->get(found->allocation);
  grant.segment = fd->second;
  grant.fd = fd->first;
  if (auto info = catalog_->info(grant.allocation.device)) grant.gpu_uuid = info->uuid;
  spdlog::info("export {} of allocation {} imported by '{}' (connection {})", export_id.to_string(),
               found->allocation.to_string(), caller.owner, connection);
  std::lock_guard lock(imports_mutex_);
  import_holds_.emplace(connection, std::move(*hold));
  return grant;
}

void MemoryService::importer_closed(std::uint64_t connection) {
  (void)exports_->connection_closed(connection);
  std::vector<AllocationHold> dropped;
  std::vector<HeldLease> leases;
  {
    std::lock_guard lock(imports_mutex_);
    auto [first, last] = import_holds_.equal_range(connection);
    for (auto it = first; it != last; ++it) dropped.push_back(std::move(it->second));
    import_holds_.erase(first, last);
    auto [lfirst, llast] = leases_.equal_range(connection);
    for (auto it = lfirst; it != llast; ++it) leases.push_back(std::move(it->second));
    leases_.erase(lfirst, llast);
  }
  for (const auto& l : leases) end_lease(l, "its connection closed");
  // The holds go here, unlocked: a deferred free lands now.
}

Result<void> MemoryService::validate() const {
  if (auto ok = manager_->validate(); !ok) return ok;
  if (auto ok = history_->validate(); !ok) return ok;
  return sessions_->validate();
}

std::uint64_t MemoryService::reserved_total() const {
  std::uint64_t total = 0;
  for (const auto& [key, stats] : manager_->pool_stats()) total += stats.reserved_bytes;
  return total;
}

}  // namespace memd
