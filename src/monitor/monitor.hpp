// monitor/monitor.hpp — background sampling, the cached status, pressure
// levels and the automatic response to them.
//
// One thread samples every device each `interval` (1 s by default): the
// backend's memory info (the driver's truth, other processes included — NVML
// or cudaMemGetInfo on GPUs, /proc/meminfo for RAM) and the pools'
// statistics. The result is a MemoryStatusReport kept behind an atomic
// pointer: memory_status answers from it (cached_status(): a pointer copy),
// each thread's own once per sample,
// so no request ever waits on the driver.
//
// Pressure (monitor/pressure.hpp) is evaluated at every sample and also
// whenever the service tells the monitor that usage on a device changed
// (note_usage(): after each allocation, free, move or failure), from the
// allocator's live counters and the capacity of the last sample — so a level
// changes with the request that crossed the threshold, not up to a second
// later. Each change is a `pressure_changed` event.
//
// The response (monitor/pressure_policy.hpp) runs on the monitor thread,
// never on the request that crossed a threshold: its actions free memory,
// which calls back into the service, which would re-enter the monitor.
// At High it releases cached pages (the reclaim ladder's trim rung) and calls
// the release callbacks (caches above their floors: the model manager's RAM
// tier); at Critical it also calls the reclaim callbacks (the ladder's
// eviction rung) for the bytes that would bring the device back under High;
// while Critical, Low-priority allocations are refused (admit()). Every
// action is a `pressure_action` event.
//
// Thread safety: every method is thread-safe. Sample hooks run on the
// sampling thread (or the caller of sample_now()).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/error.hpp"
#include "monitor/event_bus.hpp"
#include "monitor/pressure.hpp"
#include "monitor/pressure_policy.hpp"
#include "monitor/status_report.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {

struct MonitorOptions {
  // How often devices are sampled; zero runs no thread (tests call
  // sample_now() and run_policy() themselves).
  std::chrono::milliseconds interval{1000};
  PressureThresholds thresholds;
  PressurePolicy policy;
};

class Monitor {
 public:
  // Takes the first sample before returning, so cached_status() always has
  // one. Starts the thread when options.interval > 0.
  static Result<std::unique_ptr<Monitor>> create(const DeviceCatalog& catalog, MemoryManager& manager,
                                                 TransferEngine& transfers, EventBus& events,
                                                 MonitorOptions options);
  ~Monitor();
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;

  // The latest sample; never null. The cost of a status query before JSON.
  // Each thread keeps its own copy of the latest sample, refreshed when the
  // sample's generation changes: a call is one atomic load of a line that
  // changes once an interval and a copy of a thread-private shared_ptr.
  // (Loading the shared atomic<shared_ptr> itself took a lock inside
  // libstdc++ and bounced the report's reference count between threads:
  // 37 ns on one thread, 1.27 us each on four of an H100 host's cores.)
  std::shared_ptr<const MemoryStatusReport> cached_status() const;
  // Samples every device now, re-evaluates pressure and runs the sample hooks
  // (what the thread does each interval; the policy runs after, there).
  void sample_now();
  // Re-evaluates the pressure of `device` from the live counters (cheap: no
  // driver call); publishes a change; wakes the thread to respond when a
  // level at or above High is entered.
  void note_usage(DeviceId device);
  // The same with the device's counters already read (MemoryHistory hands
  // back the ones it stamped): one walk of the device's pools per request.
  void note_usage(DeviceId device, const MemoryManager::DeviceCounters& live);
  // Runs the pressure response once for every device at High or above (what
  // the thread does after each sample and when woken). Returns the actions.
  std::vector<PressureAction> run_policy();

  PressureLevel level(DeviceId device) const;
  std::vector<PressureReading> pressure() const;
  // nullopt when the device exists but was never read; not_found otherwise.
  Result<PressureReading> pressure(DeviceId device) const;

  // How long since note_usage() last saw `device` change (since the monitor
  // started when it never did): the idle clock of scheduled defragmentation.
  std::chrono::steady_clock::duration idle_for(DeviceId device) const;

  // An out_of_memory on `device`: counted for health for kRecentFailureWindow.
  void note_failure(DeviceId device);

  // Refuses (out_of_memory, naming the level) a Low-priority request while
  // its device is Critical; the policy's last rung.
  Result<void> admit(DeviceId device, MemoryPriority priority) const;

  const MonitorOptions& options() const noexcept { return options_; }
  // Called with every sample (analytics' time series, health, scheduled
  // defragmentation). Add before requests are served.
  void add_sample_hook(std::function<void(const MemoryStatusReport&)> hook);
  // Called after every pressure response (for tests and analytics).
  void stop();

 private:
  Monitor(const DeviceCatalog& catalog, MemoryManager& manager, TransferEngine& transfers, EventBus& events,
          MonitorOptions options);
  std::shared_ptr<MemoryStatusReport> take_sample();
  // Applies a reading to the device's level; publishes a change. Caller
  // holds levels_mu_.
  void observe(PressureReading reading);
  void loop();

  const DeviceCatalog& catalog_;
  MemoryManager& manager_;
  TransferEngine& transfers_;
  EventBus& events_;
  const MonitorOptions options_;

  std::atomic<std::shared_ptr<const MemoryStatusReport>> latest_;
  // Set after latest_, from one counter for every Monitor of the process, so
  // a thread's copy is never mistaken for another monitor's (cached_status).
  std::atomic<std::uint64_t> generation_{0};
  std::uint64_t samples_ = 0;  // under sample_mu_
  std::mutex sample_mu_;       // one sample at a time

  mutable std::mutex levels_mu_;
  std::map<DeviceId, PressureReading> readings_;
  std::map<DeviceId, std::deque<std::chrono::steady_clock::time_point>> failures_;  // under levels_mu_
  std::map<DeviceId, MemoryHealthStatus> grades_;
  std::map<DeviceId, std::chrono::steady_clock::time_point> last_use_;  // under levels_mu_
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();  // the last sample's, under sample_mu_

  std::mutex hooks_mu_;
  std::vector<std::function<void(const MemoryStatusReport&)>> hooks_;

  std::mutex policy_mu_;  // one response at a time

  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool wake_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace memd
