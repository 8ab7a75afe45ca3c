// memory_analytics and memory_optimization, and their JSON.
#include "protocol/actions/analytics_actions.hpp"

#include <cmath>

#include "memd/iso8601.hpp"
#include "protocol/action_helpers.hpp"
#include "protocol/action_table.hpp"
#include "protocol/params.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

constexpr std::uint64_t kDefaultWindowSeconds = 300;
constexpr std::uint64_t kDefaultTopOwners = 10;
constexpr std::uint64_t kMaxTopOwners = 1000;
constexpr std::uint64_t kDefaultIdleSeconds = 600;
constexpr std::uint64_t kMaxIdleSeconds = 30 * 24 * 3600;
constexpr std::string_view kResolutions[] = {"1s", "1m", "auto"};
// Not a boolean: a GET carries its params as query text, and booleans are
// JSON true/false only (protocol/params.hpp).
constexpr std::string_view kDetails[] = {"summary", "points"};

// Byte counts stay integers on the wire (a double holds them exactly up to
// 2^53); ratios, means and rates that are not whole stay numbers.
nlohmann::json number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::abs(v) < 9.0e15) return static_cast<std::int64_t>(v);
  return v;
}

nlohmann::json when(std::optional<std::chrono::system_clock::time_point> t) {
  return t ? nlohmann::json(iso8601(*t)) : nlohmann::json(nullptr);
}

nlohmann::json to_json(const FailureCounts& f) {
  return {{"outOfMemory", f.out_of_memory}, {"quotaExceeded", f.quota_exceeded}, {"lastAt", when(f.last_at)}};
}

nlohmann::json to_json(const TimeSeries::Window& w, const std::vector<std::string_view>& names) {
  const bool empty = w.to == TimeSeries::TimePoint{};
  nlohmann::json out = {
      {"window",
       {{"seconds", w.seconds},
        {"from", empty ? nlohmann::json(nullptr) : nlohmann::json(iso8601(w.from))},
        {"to", empty ? nlohmann::json(nullptr) : nlohmann::json(iso8601(w.to))}}},
      {"resolution", std::string(to_string(w.resolution))},
      {"samples", w.samples}};
  nlohmann::json fields = nlohmann::json::object();
  for (std::size_t f = 0; f < names.size() && f < w.fields.size(); ++f) {
    const auto& s = w.fields[f];
    fields[std::string(names[f])] =
        s.count == 0 ? nlohmann::json{{"min", nullptr}, {"mean", nullptr}, {"max", nullptr}, {"p95", nullptr}}
                     : nlohmann::json{{"min", number(s.min)},
                                      {"mean", number(s.mean)},
                                      {"max", number(s.max)},
                                      {"p95", number(s.p95)}};
  }
  out["fields"] = std::move(fields);
  if (!w.points.empty()) {
    nlohmann::json points = nlohmann::json::array();
    for (const auto& p : w.points) {
      nlohmann::json point = {{"at", iso8601(p.start)}, {"samples", p.samples}};
      for (std::size_t f = 0; f < names.size() && f < p.fields.size(); ++f) {
        const auto& a = p.fields[f];
        point[std::string(names[f])] =
            a.count == 0 ? nlohmann::json(nullptr)
                         : nlohmann::json{{"min", number(a.min)}, {"mean", number(a.mean())}, {"max", number(a.max)}};
      }
      points.push_back(std::move(point));
    }
    out["points"] = std::move(points);
  }
  return out;
}

std::vector<std::string_view> device_field_names() {
  std::vector<std::string_view> names;
  for (std::size_t f = 0; f < kDeviceFieldCount; ++f) names.push_back(to_string(static_cast<DeviceField>(f)));
  return names;
}

nlohmann::json to_json(const AnalyticsReport& r) {
  const auto names = device_field_names();
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : r.devices) {
    nlohmann::json j = {{"deviceId", d.device.to_string()}};
    j.update(to_json(d.window, names));
    j["failures"] = to_json(d.failures);
    devices.push_back(std::move(j));
  }
  nlohmann::json owners = nlohmann::json::array();
  for (const auto& o : r.top_owners)
    owners.push_back({{"owner", o.owner}, {"requestedBytes", o.requested_bytes}, {"allocations", o.allocations}});
  nlohmann::json out = {{"devices", std::move(devices)},
                        {"transfers", to_json(r.transfers, {kTransferRateField})},
                        {"topOwners", std::move(owners)},
                        {"failures", to_json(r.failures)}};
  if (r.models)
    out["models"] = {{"uses", r.models->uses},
                     {"preloads", r.models->preloads},
                     {"hits", r.models->hits},
                     {"misses", r.models->misses},
                     {"hitRate", r.models->hit_rate()}};
  return out;
}

nlohmann::json to_json(const Recommendation& r) {
  nlohmann::json j = {{"kind", std::string(to_string(r.kind))},
                      {"deviceId", r.device ? nlohmann::json(r.device->to_string()) : nlohmann::json(nullptr)},
                      {"bytesFreed", r.bytes_freed},
                      {"fragmentationRemoved", r.fragmentation_removed},
                      {"reason", r.reason},
                      {"action", {{"action", r.action}, {"params", r.params}}}};
  if (r.kind == RecommendationKind::raise_limit) j["bytesNeeded"] = r.bytes_needed;
  return j;
}

Result<Outcome> memory_analytics(MemoryService& s, const Params& p, const CallContext&) {
  AnalyticsQuery q;
  MEMD_ASSIGN_OR_RETURN(q.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto window, p.count("windowSeconds", TimeSeries::kMaxWindowSeconds, 1));
  MEMD_ASSIGN_OR_RETURN(auto resolution, p.string("resolution"));
  MEMD_ASSIGN_OR_RETURN(auto detail, p.string("detail"));
  MEMD_ASSIGN_OR_RETURN(auto top, p.count("topOwners", kMaxTopOwners));
  q.window_seconds = window.value_or(kDefaultWindowSeconds);
  if (resolution && *resolution != "auto") {
    auto r = parse_series_resolution(*resolution);
    if (!r) return fail(ErrorCode::invalid_argument, "'resolution' must be one of 1s, 1m, auto");
    q.resolution = *r;
  }
  if (detail && *detail != "summary" && *detail != "points")
    return fail(ErrorCode::invalid_argument, "'detail' must be one of summary, points");
  q.points = detail == "points";
  q.top_owners = top.value_or(kDefaultTopOwners);
  MEMD_ASSIGN_OR_RETURN(auto report, s.analytics(q));
  return ok(to_json(report));
}

Result<Outcome> memory_optimization(MemoryService& s, const Params& p, const CallContext&) {
  RecommendationOptions o;
  MEMD_ASSIGN_OR_RETURN(o.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(auto idle, p.count("idleSeconds", kMaxIdleSeconds, 1));
  o.idle_after = std::chrono::seconds(idle.value_or(kDefaultIdleSeconds));
  // Defragmentation is recommended only where this table can carry it out.
  o.defragment_available = find_action("memory_defragment") != nullptr;
  MEMD_ASSIGN_OR_RETURN(auto list, s.optimization(o));
  nlohmann::json items = nlohmann::json::array();
  std::uint64_t total = 0;
  for (const auto& r : list) {
    items.push_back(to_json(r));
    total += r.bytes_freed;
  }
  return ok({{"recommendations", std::move(items)}, {"bytesFreed", total}});
}

}  // namespace

void append_analytics_actions(std::vector<Action>& t) {
  constexpr auto Get = HttpMethod::Get;
  t.push_back(Action{
      "memory_analytics",
      "Memory over the last windowSeconds, per device: min, mean, max and p95 of usedBytes (the driver's view), "
      "reservedBytes, allocatedBytes, fragmentation, pressurePercent, allocationsPerSecond and freesPerSecond, from "
      "1 s points (kept an hour) or 1 min points (kept a day); mean, min and max are exact over the samples, p95 "
      "is the nearest rank over the points. Plus the machine's transfer rate (transferBytesPerSecond: transfers are "
      "not counted per device), failed allocations by code with the time of the last, the owners holding the "
      "most bytes (machine-wide), and models: the model predictor's uses, preloads, hits (preloaded, then used), "
      "misses (preloaded, then evicted or failed unused) and hitRate (hits / (hits + misses); 0 before any). A window ends at the newest sample.",
      {{Get, "/api/memory/analytics"}},
      {{.name = "deviceId", .kind = K::DeviceId, .description = "Only this device (cuda:N, host:N or cpu)."},
       {.name = "windowSeconds",
        .kind = K::Count,
        .description = "How far back, 1..86400 seconds (default 300).",
        .maximum = TimeSeries::kMaxWindowSeconds,
        .minimum = 1},
       {.name = "resolution",
        .kind = K::String,
        .description = "1s (windows up to 3600 s; longer ones are out_of_range), 1m, or auto (default: 1s up to an hour, "
                       "else 1m).",
        .choices = kResolutions,
        .choice_count = std::size(kResolutions)},
       {.name = "detail",
        .kind = K::String,
        .description = "summary (default), or points: also answer the points themselves, each with its samples "
                       "and per field min, mean and max.",
        .choices = kDetails,
        .choice_count = std::size(kDetails)},
       {.name = "topOwners",
        .kind = K::Count,
        .description = "How many owners to rank, 0..1000 (default 10).",
        .maximum = kMaxTopOwners}},
      R"({"deviceId": "host:0", "windowSeconds": 60})",
      R"({"devices": [{"deviceId": "host:0", "window": {"seconds": 60, "from": "2026-01-01T00:00:00.000Z", "to": "2026-01-01T00:01:00.000Z"}, "resolution": "1s", "samples": 60, "fields": {"usedBytes": {"min": 268435456, "mean": 301989888, "max": 335544320, "p95": 335544320}, "reservedBytes": {"min": 268435456, "mean": 301989888, "max": 335544320, "p95": 335544320}, "allocatedBytes": {"min": 201326592, "mean": 234881024, "max": 268435456, "p95": 268435456}, "fragmentation": {"min": 0, "mean": 0.05, "max": 0.25, "p95": 0.25}, "pressurePercent": {"min": 2.4, "mean": 2.8, "max": 3.2, "p95": 3.2}, "allocationsPerSecond": {"min": 0, "mean": 1.5, "max": 12, "p95": 6}, "freesPerSecond": {"min": 0, "mean": 1.2, "max": 10, "p95": 5}}, "failures": {"outOfMemory": 0, "quotaExceeded": 2, "lastAt": "2026-01-01T00:00:42.000Z"}}], "transfers": {"window": {"seconds": 60, "from": "2026-01-01T00:00:00.000Z", "to": "2026-01-01T00:01:00.000Z"}, "resolution": "1s", "samples": 60, "fields": {"transferBytesPerSecond": {"min": 0, "mean": 17476266.7, "max": 1073741824, "p95": 0}}}, "topOwners": [{"owner": "worker-1", "requestedBytes": 268435456, "allocations": 3}], "failures": {"outOfMemory": 0, "quotaExceeded": 2, "lastAt": "2026-01-01T00:00:42.000Z"}, "models": {"uses": 12, "preloads": 4, "hits": 3, "misses": 1, "hitRate": 0.75}})",
      memory_analytics});
  t.push_back(Action{
      "memory_optimization",
      "What would give memory back now, ranked by bytes freed (then fragmentation removed): release_cached (a trim: "
      "memory_optimize), defragment (memory_defragment, when memd has it), free_idle (memory_deallocate of an "
      "allocation unused for idleSeconds; not pinned or exportable ones), raise_limit (memory_limits, for a limit "
      "that refused allocations in the last hour; frees nothing, bytesNeeded says by how much). Each carries the "
      "request that does it: send action.action with action.params to the stdio door, or to its REST route.",
      {{Get, "/api/memory/optimization"}},
      {{.name = "deviceId", .kind = K::DeviceId, .description = "Only this device's (cuda:N, host:N or cpu)."},
       {.name = "idleSeconds",
        .kind = K::Count,
        .description = "An allocation unused this long is idle, 1..2592000 (default 600).",
        .maximum = kMaxIdleSeconds,
        .minimum = 1}},
      R"({"deviceId": "host:0"})",
      R"json({"recommendations": [{"kind": "release_cached", "deviceId": "host:0", "bytesFreed": 134217728, "fragmentationRemoved": 0, "reason": "128 MiB of the 512 MiB memd holds on host:0 sit in wholly free mapping units, cached ranges or empty segments of 1 pool; a trim gives them back (memory_optimize trims every device)", "action": {"action": "memory_optimize", "params": {}}}, {"kind": "free_idle", "deviceId": "host:0", "bytesFreed": 67108864, "fragmentationRemoved": 0, "reason": "allocation a1b2c3d4-e5f6-4890-abcd-ef1234567890 of 'worker-1' (64 MiB on host:0) has not been used for 1200 s (idle after 600 s)", "action": {"action": "memory_deallocate", "params": {"allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}}}], "bytesFreed": 201326592})json",
      memory_optimization});
}

}  // namespace memd
