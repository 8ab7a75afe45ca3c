// protocol/metrics_table.hpp — the one list of statistics GET /metrics exposes.
//
// Every Prometheus metric memd serves is a row of metric_table(): its name
// (memd_*, the unit in the name: _bytes, _seconds, _ratio, and _total for a
// counter), its type, its help text, its labels, and how to read its samples
// from a MetricsSnapshot. The exposition (protocol/metrics_text.hpp) and the
// metrics section of docs/api.md (protocol/api_doc.cpp) both expand this one
// list, so a metric cannot be served and undocumented, or documented and
// missing. The pool statistics are the allocator's own list
// (MEMD_POOL_STAT_FIELDS, alloc/pool_stats.hpp) expanded row by row here.
//
// A MetricsSnapshot is gathered from state memd already keeps (the monitor's
// cached status with the allocator's live counters, the analytics' failure
// counts, the model manager's status and counters, the session table): no
// driver call, no device sample, so a scrape is cheap at any rate.
//
// Thread safety: the table is immutable after first use (a function-local
// static); gather_metrics is as thread-safe as MemoryService (fully).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "memd/error.hpp"
#include "models/model_manager.hpp"
#include "models/model_status.hpp"
#include "models/usage_predictor.hpp"
#include "monitor/analytics.hpp"
#include "monitor/status_report.hpp"
#include "service/memory_service.hpp"

namespace memd {

class MemoryService;

// What one scrape reads, copied out of the service at once.
struct MetricsSnapshot {
  MemoryStatusReport status;  // every device, the pinned pool and transfers
  std::map<DeviceId, FailureCounts> failures;
  std::vector<ModelStatus> models;
  ModelCounters model_counters;
  PredictorStats predictor;
  std::uint64_t model_ram_bytes = 0;  // the RAM tier in use
  std::uint64_t sessions = 0;         // open (leased) sessions
  std::uint64_t session_allocations = 0;
  std::uint64_t session_bytes = 0;    // requested bytes of the allocations in them
  LeaseCounts leases;                 // client mode's leases over the socket
};

Result<MetricsSnapshot> gather_metrics(MemoryService& service);

enum class MetricType { Counter, Gauge, Histogram };
std::string_view to_string(MetricType type) noexcept;  // "counter", "gauge", "histogram"

// One sample of a metric: its labels and value. A histogram's sample is its
// observations' count and sum (value); memd keeps no per-observation buckets,
// so it has only the +Inf bucket.
struct MetricSample {
  std::map<std::string, std::string> labels;
  double value = 0;
  std::uint64_t count = 0;  // Histogram only
};

struct MetricSpec {
  std::string name;    // memd_device_total_bytes
  MetricType type = MetricType::Gauge;
  std::string help;
  std::string labels;  // for the docs: "device, memory_type" (empty: none)
  std::function<void(const MetricsSnapshot&, std::vector<MetricSample>&)> read;
};

const std::vector<MetricSpec>& metric_table();

}  // namespace memd
