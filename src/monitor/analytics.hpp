// monitor/analytics.hpp — memory over time, and what went wrong: the state
// behind memory_analytics and the history half of memory_optimization.
//
// Fed by the monitor's sample hook (monitor/monitor.hpp): every
// MemoryStatusReport adds one sample to each device's series
// (monitor/time_series.hpp) with these fields:
//   usedBytes       the device as its driver sees it (every process)
//   reservedBytes   memd's footprint on it, all pools
//   allocatedBytes  what memd's users hold, all pools
//   fragmentation   1 − largest free block / free bytes, all pools
//   pressurePercent the pressure reading (monitor/pressure.hpp)
//   allocationsPerSecond, freesPerSecond
//                   from successive samples' total_allocations / total_frees
//                   of the device's pools (absent from a device's first sample)
// Transfers are machine-wide (TransferStats counts bytes copied by every
// transfer, not per device), so their rate is a series of its own rather
// than a guess at which device to charge: transferBytesPerSecond, from
// successive samples' bytes_copied.
//
// Samples are stamped with the report's sampled_at, or with
// AnalyticsOptions::clock when set (tests script an hour in milliseconds).
//
// Failures: the service reports each refused allocation (note_failure);
// counted per device by code (out_of_memory, quota_exceeded), with the time
// of the last, and for quota refusals the scope that refused and by how much
// (QuotaShortfall), which a "raise the limit" recommendation needs. Kept for
// the last kMaxShortfalls scopes.
//
// Memory: one TimeSeries per device the catalog had at start (about 1 MiB
// each) plus one for transfers, allocated at construction; samples of other
// devices are ignored.
//
// Thread safety: every method is thread-safe (one mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "alloc/quotas.hpp"
#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"
#include "monitor/status_report.hpp"
#include "monitor/time_series.hpp"

namespace memd {

enum class DeviceField : std::uint8_t {
  used_bytes,
  reserved_bytes,
  allocated_bytes,
  fragmentation,
  pressure_percent,
  allocations_per_second,
  frees_per_second,
};
inline constexpr std::size_t kDeviceFieldCount = 7;
std::string_view to_string(DeviceField field) noexcept;  // the wire's names: "usedBytes", …
inline constexpr std::string_view kTransferRateField = "transferBytesPerSecond";

using AnalyticsClock = std::function<std::chrono::system_clock::time_point()>;

struct AnalyticsOptions {
  // The time samples and failures are stamped with, and "now" for
  // recommendations; null: each report's sampled_at, and the system clock.
  AnalyticsClock clock;
};

struct FailureCounts {
  std::uint64_t out_of_memory = 0;
  std::uint64_t quota_exceeded = 0;
  std::optional<std::chrono::system_clock::time_point> last_at;
  void merge(const FailureCounts& o);
};

// Which limit refused an allocation, and how far short it was.
enum class LimitScope : std::uint8_t { Device, MemoryType, Owner };
std::string_view to_string(LimitScope scope) noexcept;  // "deviceId", "memoryType", "owner" (the wire's keys)

struct QuotaShortfall {
  LimitScope scope = LimitScope::Owner;
  std::string key;        // the device id, memory type name or owner
  DeviceId device;        // where the refused request went
  std::uint64_t limit_bytes = 0;      // the limit then
  std::uint64_t shortfall_bytes = 0;  // in use + requested − limit, then
  std::uint64_t failures = 0;         // refusals by this scope since start
  std::chrono::system_clock::time_point at;  // the last
};

// Which scope refused `size` bytes for (owner, device, type), checked in the
// quotas' own order (device, memory type, owner; alloc/quotas.cpp) against
// the limits and usage given; nullopt when none would refuse now.
std::optional<QuotaShortfall> find_shortfall(const Limits& limits, const std::map<DeviceId, std::uint64_t>& by_device,
                                             const std::map<MemoryType, std::uint64_t>& by_type,
                                             const std::map<std::string, OwnerUsage>& by_owner,
                                             std::string_view owner, DeviceId device, MemoryType type,
                                             std::uint64_t size);

struct AnalyticsQuery {
  std::optional<DeviceId> device;  // none: every device
  std::uint64_t window_seconds = 300;
  std::optional<SeriesResolution> resolution;  // none: auto
  bool points = false;
  std::size_t top_owners = 10;
};

struct DeviceAnalytics {
  DeviceId device;
  TimeSeries::Window window;  // fields in DeviceField order
  FailureCounts failures;
};

struct OwnerRank {
  std::string owner;
  std::uint64_t requested_bytes = 0;
  std::uint64_t allocations = 0;
};

// The model manager's prediction and preloading (models/usage_predictor.hpp),
// as counts: the service copies them in (monitor sits below models and
// does not know them).
struct ModelPreloadCounts {
  std::uint64_t uses = 0;      // model uses the predictor learnt from
  std::uint64_t preloads = 0;  // models brought up on a prediction
  std::uint64_t hits = 0;      // preloaded, then used
  std::uint64_t misses = 0;    // preloaded, then evicted, dropped or failed unused
  double hit_rate() const {
    return hits + misses == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(hits + misses);
  }
};

struct AnalyticsReport {
  std::vector<DeviceAnalytics> devices;
  TimeSeries::Window transfers;  // one field: transferBytesPerSecond
  std::vector<OwnerRank> top_owners;
  FailureCounts failures;  // of the devices answered
  std::optional<ModelPreloadCounts> models;  // machine-wide; the service's
};

// The `count` largest owners by requested bytes (then allocations, then
// name), from MemoryManager::usage_by_owner().
std::vector<OwnerRank> top_owners(const std::map<std::string, OwnerUsage>& usage, std::size_t count);

class Analytics {
 public:
  static constexpr std::size_t kMaxShortfalls = 1024;

  Analytics(std::vector<DeviceId> devices, AnalyticsOptions options);

  // The monitor's sample hook.
  void on_sample(const MemoryStatusReport& report);
  // A refused allocation (the service calls this for out_of_memory and
  // quota_exceeded; other codes are ignored). shortfall: for quota refusals,
  // which limit and by how much.
  void note_failure(DeviceId device, ErrorCode code, std::optional<QuotaShortfall> shortfall);

  // Series of every device (or one: not_found for a device never seen), plus
  // transfers and failures. Top owners are the caller's (the manager's).
  Result<AnalyticsReport> query(const AnalyticsQuery& q) const;
  FailureCounts failures(std::optional<DeviceId> device) const;
  // Quota refusals per scope, newest first.
  std::vector<QuotaShortfall> shortfalls() const;
  std::chrono::system_clock::time_point now() const;

  Result<void> validate() const;

 private:
  struct DeviceState {
    explicit DeviceState() : series(kDeviceFieldCount) {}
    TimeSeries series;
    std::optional<std::chrono::system_clock::time_point> last_at;
    std::uint64_t last_allocations = 0, last_frees = 0;
    FailureCounts failures;
  };

  const AnalyticsOptions options_;
  mutable std::mutex mu_;
  std::map<DeviceId, DeviceState> devices_;
  TimeSeries transfers_{1};
  std::optional<std::chrono::system_clock::time_point> transfers_last_at_;
  std::uint64_t last_bytes_copied_ = 0;
  std::vector<QuotaShortfall> shortfalls_;  // newest last
};

}  // namespace memd
