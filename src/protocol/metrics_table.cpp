// The metrics table: every statistic GET /metrics serves, once.
#include "protocol/metrics_table.hpp"

#include <chrono>
#include <set>
#include <string_view>
#include <utility>

#include "alloc/pool_stats.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using Samples = std::vector<MetricSample>;
using DeviceRead = double (*)(const DeviceStatus&);

// A gauge or counter with one sample per device.
MetricSpec per_device(std::string name, MetricType type, std::string help, DeviceRead read) {
  return {std::move(name), type, std::move(help), "device", [read](const MetricsSnapshot& s, Samples& out) {
            for (const auto& d : s.status.devices) out.push_back({{{"device", d.info.id.to_string()}}, read(d)});
          }};
}

// A metric of no labels, one sample.
MetricSpec single(std::string name, MetricType type, std::string help, double (*read)(const MetricsSnapshot&)) {
  return {std::move(name), type, std::move(help), "", [read](const MetricsSnapshot& s, Samples& out) {
            out.push_back({{}, read(s)});
          }};
}

double as_double(std::uint64_t v) { return static_cast<double>(v); }

// How a pool statistic of MEMD_POOL_STAT_FIELDS becomes a metric: the list
// gives each field a unit (bytes, count, ratio); a count is a counter when it
// only grows (allocations and frees since start, backend calls, mapping
// units, mapping time), else a gauge (live and peak counts, segments).
// Mapping time is kept in nanoseconds and served in seconds.
struct PoolMetricShape {
  std::string name;
  MetricType type = MetricType::Gauge;
  double scale = 1;
};

PoolMetricShape pool_metric_shape(std::string_view field, std::string_view unit) {
  std::string base(field);
  if (unit == "bytes") return {"memd_pool_" + base + (base.ends_with("_bytes") ? "" : "_bytes")};
  if (unit == "ratio") return {"memd_pool_" + base + (base.ends_with("_ratio") ? "" : "_ratio")};
  if (base.ends_with("_ns")) {
    base.resize(base.size() - 3);
    return {"memd_pool_" + base + "_seconds_total", MetricType::Counter, 1e-9};
  }
  const bool grows = base.starts_with("total_") || base.starts_with("failed_") || base.ends_with("_calls") ||
                     base.ends_with("_units");
  if (!grows) return {"memd_pool_" + base};
  if (base.starts_with("total_")) base.erase(0, 6);  // total_allocations → allocations_total
  return {"memd_pool_" + base + "_total", MetricType::Counter};
}

template <typename Read>
MetricSpec pool_metric(std::string_view field, std::string_view unit, std::string_view help, Read read) {
  auto shape = pool_metric_shape(field, unit);
  const double scale = shape.scale;
  // The help text follows the value: a time kept in nanoseconds is served in seconds.
  std::string text(help);
  if (scale != 1 && text.starts_with("Nanoseconds")) text = "Seconds" + text.substr(11);
  return {std::move(shape.name), shape.type, text + " (per pool: one device and memory type)", "device, memory_type",
          [read, scale](const MetricsSnapshot& s, Samples& out) {
            for (const auto& d : s.status.devices)
              for (const auto& [type, stats] : d.pools)
                out.push_back({{{"device", d.info.id.to_string()}, {"memory_type", std::string(to_string(type))}},
                               static_cast<double>(read(stats)) * scale});
          }};
}

std::vector<MetricSpec> build_table() {
  std::vector<MetricSpec> t;
  // ---- devices: the monitor's last sample, live allocator counters laid over
  t.push_back(per_device("memd_device_total_bytes", MetricType::Gauge,
                         "Memory of the device in all, as its backend reports it (the monitor's last sample)",
                         [](const DeviceStatus& d) { return as_double(d.total_bytes); }));
  t.push_back(per_device("memd_device_used_bytes", MetricType::Gauge,
                         "Memory of the device in use by every process where the backend sees them "
                         "(the monitor's last sample)",
                         [](const DeviceStatus& d) { return as_double(d.used_bytes); }));
  t.push_back(per_device("memd_device_free_bytes", MetricType::Gauge,
                         "Memory of the device free, as its backend reports it (the monitor's last sample)",
                         [](const DeviceStatus& d) { return as_double(d.free_bytes); }));
  t.push_back(per_device("memd_device_reserved_bytes", MetricType::Gauge,
                         "Bytes memd holds from the device, all pools (its footprint)",
                         [](const DeviceStatus& d) { return as_double(d.reserved_bytes); }));
  t.push_back(per_device("memd_device_allocated_bytes", MetricType::Gauge,
                         "Bytes memd's users hold on the device, all pools (requests rounded to blocks)",
                         [](const DeviceStatus& d) { return as_double(d.allocated_bytes); }));
  t.push_back(per_device("memd_device_allocations", MetricType::Gauge, "Live allocations on the device, all pools",
                         [](const DeviceStatus& d) { return as_double(d.allocations); }));
  t.push_back(per_device("memd_device_fragmentation_ratio", MetricType::Gauge,
                         "1 - largest free block / free bytes, over the device's pools",
                         [](const DeviceStatus& d) { return d.fragmentation; }));
  t.push_back({"memd_device_limit_bytes", MetricType::Gauge,
               "The device's memory limit (memory_limits); only devices that have one", "device",
               [](const MetricsSnapshot& s, Samples& out) {
                 for (const auto& d : s.status.devices)
                   if (d.limit_bytes) out.push_back({{{"device", d.info.id.to_string()}}, as_double(*d.limit_bytes)});
               }});
  t.push_back(per_device("memd_device_pressure_level", MetricType::Gauge,
                         "The device's pressure level: 0 Low, 1 Moderate, 2 High, 3 Critical",
                         [](const DeviceStatus& d) { return static_cast<double>(d.pressure.level); }));
  t.push_back({"memd_device_pressure_state", MetricType::Gauge,
               "1 for the device's pressure level now, 0 for the others (a state set)", "device, level",
               [](const MetricsSnapshot& s, Samples& out) {
                 for (const auto& d : s.status.devices)
                   for (auto level : {PressureLevel::Low, PressureLevel::Moderate, PressureLevel::High,
                                      PressureLevel::Critical})
                     out.push_back({{{"device", d.info.id.to_string()}, {"level", std::string(to_string(level))}},
                                    d.pressure.level == level ? 1.0 : 0.0});
               }});
  t.push_back(per_device("memd_device_pressure_ratio", MetricType::Gauge,
                         "Bytes in use / capacity as the pressure policy reads them (0..1)",
                         [](const DeviceStatus& d) { return d.pressure.percent / 100.0; }));
  t.push_back({"memd_allocation_failures_total", MetricType::Counter,
               "Allocations refused since start, by the error that refused them", "device, code",
               [](const MetricsSnapshot& s, Samples& out) {
                 for (const auto& [device, f] : s.failures) {
                   out.push_back({{{"device", device.to_string()}, {"code", "out_of_memory"}}, as_double(f.out_of_memory)});
                   out.push_back(
                       {{{"device", device.to_string()}, {"code", "quota_exceeded"}}, as_double(f.quota_exceeded)});
                 }
               }});

  // ---- pools: the allocator's one statistics list, every field
#define MEMD_POOL_METRIC(field, unit, help) \
  t.push_back(pool_metric(#field, #unit, help, [](const PoolStats& p) { return p.field; }));
  MEMD_POOL_STAT_FIELDS(MEMD_POOL_METRIC)
#undef MEMD_POOL_METRIC

  // ---- the pinned pool (cpu SharedMemory, staging buffers included)
  auto pinned = [](std::string name, std::string help, std::uint64_t PinnedPoolReport::*field) {
    return MetricSpec{std::move(name), MetricType::Gauge, std::move(help), "",
                      [field](const MetricsSnapshot& s, Samples& out) {
                        if (s.status.pinned) out.push_back({{}, as_double((*s.status.pinned).*field)});
                      }};
  };
  t.push_back(pinned("memd_pinned_limit_bytes", "The pinned host memory pool's limit", &PinnedPoolReport::limit_bytes));
  t.push_back(pinned("memd_pinned_reserved_bytes", "Pinned host memory held from the OS and driver",
                     &PinnedPoolReport::reserved_bytes));
  t.push_back(pinned("memd_pinned_allocated_bytes",
                     "Pinned host memory in use: SharedMemory allocations and transfer staging buffers",
                     &PinnedPoolReport::allocated_bytes));

  // ---- transfers (machine-wide: a transfer's bytes belong to two devices)
  auto transfers = [](std::string name, MetricType type, std::string help, std::uint64_t TransferStats::*field) {
    return MetricSpec{std::move(name), type, std::move(help), "", [field](const MetricsSnapshot& s, Samples& out) {
                        if (s.status.transfers) out.push_back({{}, as_double((*s.status.transfers).*field)});
                      }};
  };
  t.push_back(transfers("memd_transfers_submitted_total", MetricType::Counter, "Transfers submitted since start",
                        &TransferStats::submitted));
  t.push_back({"memd_transfers_finished_total", MetricType::Counter,
               "Transfers finished since start, by how they ended", "status",
               [](const MetricsSnapshot& s, Samples& out) {
                 if (!s.status.transfers) return;
                 const auto& x = *s.status.transfers;
                 out.push_back({{{"status", "Completed"}}, as_double(x.completed)});
                 out.push_back({{{"status", "Failed"}}, as_double(x.failed)});
                 out.push_back({{{"status", "Cancelled"}}, as_double(x.cancelled)});
               }});
  t.push_back(transfers("memd_transfers_pending", MetricType::Gauge, "Transfers waiting for a worker",
                        &TransferStats::pending));
  t.push_back(transfers("memd_transfers_in_progress", MetricType::Gauge, "Transfers being copied now",
                        &TransferStats::in_progress));
  t.push_back(transfers("memd_transfer_bytes_total", MetricType::Counter,
                        "Bytes copied by transfers (finished and running) and memory_copy calls since start",
                        &TransferStats::bytes_copied));
  t.push_back(transfers("memd_copies_total", MetricType::Counter, "memory_copy calls since start",
                        &TransferStats::copies));
  t.push_back({"memd_transfer_duration_seconds", MetricType::Histogram,
               "Time from start to finish of finished transfers and memory_copy calls (count and sum only)", "",
               [](const MetricsSnapshot& s, Samples& out) {
                 if (!s.status.transfers) return;
                 out.push_back({{}, static_cast<double>(s.status.transfers->duration_ns) * 1e-9,
                                s.status.transfers->timed});
               }});

  // ---- models
  t.push_back({"memd_models", MetricType::Gauge, "Models known, by state", "state",
               [](const MetricsSnapshot& s, Samples& out) {
                 std::map<ModelState, std::uint64_t> n;
                 for (const auto& m : s.models) ++n[m.state];
                 for (auto state : {ModelState::Loading, ModelState::Loaded, ModelState::Failed})
                   out.push_back({{{"state", std::string(to_string(state))}}, as_double(n[state])});
               }});
  t.push_back({"memd_model_bytes", MetricType::Gauge,
               "Bytes of model components by the tier each lives in (a component shared by several models is "
               "counted under each; memd_model_shared_savings_bytes says how much that is)",
               "tier", [](const MetricsSnapshot& s, Samples& out) {
                 std::map<ModelTier, std::uint64_t> bytes;
                 for (const auto& m : s.models)
                   for (const auto& c : m.components) bytes[c.tier] += c.bytes;
                 for (auto tier : {ModelTier::VRAM, ModelTier::RAM, ModelTier::Disk})
                   out.push_back({{{"tier", std::string(to_string(tier))}}, as_double(bytes[tier])});
               }});
  t.push_back({"memd_model_shared_savings_bytes", MetricType::Gauge,
               "Bytes not stored because identical components are held once per device and shared", "",
               [](const MetricsSnapshot& s, Samples& out) {
                 // A shared component is one buffer: count it once, by the
                 // allocation that holds it, saving (holders - 1) copies.
                 std::set<AllocationId> seen;
                 std::uint64_t saved = 0;
                 for (const auto& m : s.models)
                   for (const auto& c : m.components)
                     if (c.allocation && c.holders > 1 && seen.insert(*c.allocation).second)
                       saved += c.bytes * (c.holders - 1);
                 out.push_back({{}, as_double(saved)});
               }});
  t.push_back(single("memd_model_ram_tier_bytes", MetricType::Gauge, "The model RAM tier's bytes in use",
                     [](const MetricsSnapshot& s) { return as_double(s.model_ram_bytes); }));
  t.push_back({"memd_model_loads_total", MetricType::Counter,
               "Model load jobs (a first load or a restore to VRAM) ended since start, by result", "result",
               [](const MetricsSnapshot& s, Samples& out) {
                 out.push_back({{{"result", "completed"}}, as_double(s.model_counters.loads_completed)});
                 out.push_back({{{"result", "failed"}}, as_double(s.model_counters.loads_failed)});
               }});
  t.push_back(single("memd_model_evictions_total", MetricType::Counter,
                     "Models moved down a tier (eviction, keep-alive, optimize) since start; unloads not counted",
                     [](const MetricsSnapshot& s) { return as_double(s.model_counters.evictions); }));
  t.push_back(single("memd_model_preloads_total", MetricType::Counter, "Models brought up on a prediction",
                     [](const MetricsSnapshot& s) { return as_double(s.predictor.preloads); }));
  t.push_back(single("memd_model_preload_hits_total", MetricType::Counter, "Preloaded models then used",
                     [](const MetricsSnapshot& s) { return as_double(s.predictor.hits); }));
  t.push_back(single("memd_model_preload_misses_total", MetricType::Counter,
                     "Preloaded models evicted, dropped or failed before any use",
                     [](const MetricsSnapshot& s) { return as_double(s.predictor.misses); }));

  // ---- sessions (REST leases)
  t.push_back(single("memd_sessions_open", MetricType::Gauge, "Sessions open (leases not yet closed or swept)",
                     [](const MetricsSnapshot& s) { return as_double(s.sessions); }));
  t.push_back(single("memd_session_allocations", MetricType::Gauge, "Allocations attached to open sessions",
                     [](const MetricsSnapshot& s) { return as_double(s.session_allocations); }));
  t.push_back(single("memd_session_leased_bytes", MetricType::Gauge,
                     "Requested bytes of the allocations attached to open sessions (freed when a lease lapses)",
                     [](const MetricsSnapshot& s) { return as_double(s.session_bytes); }));

  // ---- client mode: memory workers lease over the socket
  t.push_back(single("memd_leases", MetricType::Gauge, "Leases held by client-mode processes (memory_lease)",
                     [](const MetricsSnapshot& s) { return as_double(s.leases.leases); }));
  t.push_back({"memd_leased_bytes", MetricType::Gauge,
               "Bytes leased to client-mode processes, by device (each lease counts in its owner's quota)",
               "device", [](const MetricsSnapshot& s, Samples& out) {
                 // Every GPU-like device, 0 where nothing is leased (by owner:
                 // memory_status "leases", as owners are not bounded in number).
                 for (const auto& d : s.status.devices) {
                   if (!d.info.id.is_gpu_like()) continue;
                   const auto it = s.leases.bytes_by_device.find(d.info.id);
                   out.push_back({{{"device", d.info.id.to_string()}},
                                  as_double(it == s.leases.bytes_by_device.end() ? 0 : it->second)});
                 }
               }});

  // ---- the sampler: how old the device numbers above are
  t.push_back(single("memd_monitor_samples_total", MetricType::Counter, "Device samples the monitor has taken",
                     [](const MetricsSnapshot& s) { return as_double(s.status.sample); }));
  t.push_back(single("memd_monitor_last_sample_timestamp_seconds", MetricType::Gauge,
                     "When the monitor last read the devices (Unix time)", [](const MetricsSnapshot& s) {
                       return std::chrono::duration<double>(s.status.sampled_at.time_since_epoch()).count();
                     }));
  return t;
}

}  // namespace

std::string_view to_string(MetricType type) noexcept {
  switch (type) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Histogram: return "histogram";
  }
  return "untyped";
}

const std::vector<MetricSpec>& metric_table() {
  static const std::vector<MetricSpec> table = build_table();
  return table;
}

Result<MetricsSnapshot> gather_metrics(MemoryService& service) {
  MetricsSnapshot s;
  auto status = service.status(std::nullopt);
  if (!status) return fail(status.error());
  s.status = std::move(*status);
  for (const auto& d : s.status.devices) s.failures[d.info.id] = service.analytics_state().failures(d.info.id);
  s.models = service.models().status();
  s.model_counters = service.models().counters();
  s.predictor = service.models().predictor().stats();
  s.model_ram_bytes = service.models().ram_bytes();
  // The admin's view of the table (every owner's sessions); a host caller
  // names no session, so this admits nothing and changes nothing.
  auto sessions = service.sessions(Caller::host("memd:metrics"));
  if (!sessions) return fail(sessions.error());
  s.sessions = sessions->size();
  for (const auto& r : *sessions) {
    s.session_allocations += r.allocations;
    s.session_bytes += r.allocated_bytes;
  }
  s.leases = service.lease_counts();
  return s;
}

}  // namespace memd
