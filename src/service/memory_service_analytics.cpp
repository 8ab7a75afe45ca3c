// MemoryService's analytics and recommendations (memory_analytics,
// memory_optimization): the service gathers the state, monitor/analytics and
// monitor/recommendations decide.
#include <algorithm>

#include "service/memory_service.hpp"

namespace memd {
namespace {

constexpr std::size_t kMaxTopOwners = 1000;

double fragmentation_of(const std::map<MemoryType, PoolStats>& pools) {
  std::uint64_t free_bytes = 0, largest = 0;
  for (const auto& [type, s] : pools) {
    free_bytes += s.free_bytes;
    largest = std::max(largest, s.largest_free_block);
  }
  if (free_bytes == 0) return 0;
  return std::clamp(1.0 - static_cast<double>(largest) / static_cast<double>(free_bytes), 0.0, 1.0);
}

}  // namespace

void MemoryService::record_refusal(const AllocationRequest& request, DeviceId device, const Error& error) {
  std::optional<QuotaShortfall> shortfall;
  if (error.code == ErrorCode::quota_exceeded)
    // Recomputed from the books now, in the quotas' order: the refusal's
    // numbers are only in its message.
    shortfall = find_shortfall(manager_->limits(), manager_->requested_by_device(), manager_->requested_by_type(),
                               manager_->usage_by_owner(), request.owner, device, request.memory_type,
                               request.size_bytes);
  analytics_->note_failure(device, error.code, std::move(shortfall));
}

Result<AnalyticsReport> MemoryService::analytics(const AnalyticsQuery& query) const {
  if (query.device)
    if (auto info = catalog_->info(*query.device); !info) return fail(info.error());
  if (query.window_seconds == 0 || query.window_seconds > TimeSeries::kMaxWindowSeconds)
    return fail(ErrorCode::invalid_argument, "windowSeconds {} is outside 1..{}", query.window_seconds,
                TimeSeries::kMaxWindowSeconds);
  if (query.top_owners > kMaxTopOwners)
    return fail(ErrorCode::invalid_argument, "topOwners {} is over the maximum of {}", query.top_owners,
                kMaxTopOwners);
  auto report = analytics_->query(query);
  if (!report) return report;
  // Owners are counted machine-wide by the quotas (requested bytes), so the
  // ranking is the machine's even when one device is asked about.
  report->top_owners = top_owners(manager_->usage_by_owner(), query.top_owners);
  // Prediction is machine-wide too (one history of model uses).
  if (models_) {
    const auto p = models_->predictor().stats();
    report->models = ModelPreloadCounts{.uses = p.uses, .preloads = p.preloads, .hits = p.hits, .misses = p.misses};
  }
  return report;
}

Result<std::vector<Recommendation>> MemoryService::optimization(const RecommendationOptions& options) const {
  if (options.device)
    if (auto info = catalog_->info(*options.device); !info) return fail(info.error());
  RecommendationInputs in;
  in.now = analytics_->now();
  auto status_report = status(options.device);
  if (!status_report) return fail(status_report.error());
  in.status = std::move(*status_report);
  // Free space fresh from the pools (the cached status has the sampler's).
  const auto pools = manager_->pool_stats();
  for (auto& d : in.status.devices) {
    d.pools.clear();
    for (const auto& [key, stats] : pools)
      if (key.device == d.info.id) d.pools.emplace(key.memory_type, stats);
    d.fragmentation = fragmentation_of(d.pools);
  }
  in.limits = manager_->limits();
  AllocationFilter filter;
  filter.device = options.device;
  filter.status = MemoryAllocationStatus::Allocated;
  in.allocations = manager_->list(filter);
  in.trim = manager_->trim_forecasts();
  in.shortfalls = analytics_->shortfalls();
  // in.models: the model manager's (issue 15), when it exists.
  return recommend(in, options);
}

}  // namespace memd
