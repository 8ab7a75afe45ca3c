// Monitor: the sampling thread, the cached status, pressure and its response.
#include "monitor/monitor.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "memd/size.hpp"
#include "monitor/health_policy.hpp"
#include "monitor/monitor_json.hpp"

namespace memd {
namespace {

double combined_fragmentation(std::uint64_t free_bytes, std::uint64_t largest_free) {
  if (free_bytes == 0) return 0;
  const double f = 1.0 - static_cast<double>(largest_free) / static_cast<double>(free_bytes);
  return std::clamp(f, 0.0, 1.0);
}

// Generations of every Monitor's samples (0: none yet).
std::uint64_t next_generation() {
  static std::atomic<std::uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}

// A thread's copy of the latest sample of the monitor it last asked. A copy
// of the report, not of the pointer: the reference count it bumps is this
// thread's alone.
struct ThreadStatus {
  std::uint64_t generation = 0;
  std::shared_ptr<const MemoryStatusReport> report;
};
thread_local ThreadStatus t_status;

}  // namespace

std::shared_ptr<const MemoryStatusReport> Monitor::cached_status() const {
  const std::uint64_t generation = generation_.load(std::memory_order_acquire);
  ThreadStatus& mine = t_status;
  if (mine.generation != generation || mine.report == nullptr) {
    // latest_ is at least as new as `generation` (stored before it).
    mine.report = std::make_shared<const MemoryStatusReport>(*latest_.load(std::memory_order_acquire));
    mine.generation = generation;
  }
  return mine.report;
}

Result<std::unique_ptr<Monitor>> Monitor::create(const DeviceCatalog& catalog, MemoryManager& manager,
                                                 TransferEngine& transfers, EventBus& events,
                                                 MonitorOptions options) {
  if (auto ok = options.thresholds.validate(); !ok) return fail(ok.error());
  if (options.interval.count() < 0)
    return fail(ErrorCode::invalid_argument, "the monitor's interval cannot be negative");
  auto monitor = std::unique_ptr<Monitor>(new Monitor(catalog, manager, transfers, events, std::move(options)));
  monitor->sample_now();
  if (monitor->options_.interval.count() > 0) monitor->thread_ = std::thread([m = monitor.get()] { m->loop(); });
  return monitor;
}

Monitor::Monitor(const DeviceCatalog& catalog, MemoryManager& manager, TransferEngine& transfers, EventBus& events,
                 MonitorOptions options)
    : catalog_(catalog), manager_(manager), transfers_(transfers), events_(events), options_(std::move(options)) {}

Monitor::~Monitor() { stop(); }

void Monitor::stop() {
  {
    std::lock_guard lock(wake_mu_);
    stopping_ = true;
  }
  wake_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Monitor::add_sample_hook(std::function<void(const MemoryStatusReport&)> hook) {
  std::lock_guard lock(hooks_mu_);
  hooks_.push_back(std::move(hook));
}

std::shared_ptr<MemoryStatusReport> Monitor::take_sample() {
  auto report = std::make_shared<MemoryStatusReport>();
  const auto pools = manager_.pool_stats();
  const auto limits = manager_.limits();
  report->health = MemoryHealthStatus::Healthy;
  report->sampled_at = std::chrono::system_clock::now();
  for (auto& info : catalog_.devices()) {
    DeviceStatus s;
    s.info = info;
    s.total_bytes = info.total_bytes;
    s.free_bytes = info.free_bytes;
    s.used_bytes = info.total_bytes - std::min(info.total_bytes, info.free_bytes);
    if (!info.memory_types.empty()) {
      auto backend = catalog_.backend_for(info.id, info.memory_types.front());
      if (backend) {
        if (auto mem = (*backend)->memory_info(info.id)) {
          s.total_bytes = mem->total_bytes;
          s.free_bytes = mem->free_bytes;
          s.used_bytes = mem->used_bytes;
          s.answered = true;
        }
      }
    }
    std::uint64_t pool_free = 0, largest_free = 0;
    for (const auto& [key, stats] : pools) {
      if (key.device != info.id) continue;
      s.pools.emplace(key.memory_type, stats);
      s.reserved_bytes += stats.reserved_bytes;
      s.allocated_bytes += stats.allocated_bytes;
      s.allocations += stats.live_allocations;
      pool_free += stats.free_bytes;
      largest_free = std::max(largest_free, stats.largest_free_block);
    }
    s.fragmentation = combined_fragmentation(pool_free, largest_free);
    // Exportable allocations (model weights among them) have memory of their
    // own outside every pool, inside the backend's used bytes: counted as
    // memd's here, or pressure would take them for another process's and,
    // with note_usage's live counters (which include them), every room
    // computed between samples would count them twice.
    const auto live = manager_.device_counters(info.id);
    s.reserved_bytes += live.exportable_bytes;
    s.allocated_bytes += live.exportable_bytes;
    s.allocations += live.exportable_allocations;
    if (auto it = limits.per_device.find(info.id); it != limits.per_device.end()) s.limit_bytes = it->second;
    PressureInputs in;
    in.device_total = s.total_bytes;
    in.device_used = s.used_bytes;
    in.memd_reserved = s.reserved_bytes;
    in.memd_allocated = s.allocated_bytes;
    in.limit = s.limit_bytes.value_or(
        static_cast<std::uint64_t>(static_cast<double>(s.total_bytes) * manager_.options().max_device_fraction));
    s.pressure = measure_pressure(info.id, in);
    if (!info.memory_types.empty())
      if (auto backend = catalog_.backend_for(info.id, info.memory_types.front())) s.hardware = (*backend)->health_info(info.id);
    report->devices.push_back(std::move(s));
  }
  PinnedPoolReport pinned;
  pinned.limit_bytes = manager_.pinned_limit();
  if (auto it = pools.find(PoolKey{DeviceId::cpu(), MemoryType::SharedMemory}); it != pools.end()) {
    pinned.reserved_bytes = it->second.reserved_bytes;
    pinned.allocated_bytes = it->second.allocated_bytes;
  }
  pinned.staging = transfers_.staging();
  report->pinned = pinned;
  report->transfers = transfers_.stats();
  return report;
}

void Monitor::sample_now() {
  std::lock_guard sample_lock(sample_mu_);
  auto report = take_sample();
  report->sample = ++samples_;
  std::vector<std::pair<DeviceStatus*, MemoryHealthStatus>> regraded;
  {
    std::lock_guard lock(levels_mu_);
    const auto now = std::chrono::steady_clock::now();
    for (auto& d : report->devices) {
      observe(d.pressure);
      d.pressure.level = readings_[d.info.id].level;
      auto& failures = failures_[d.info.id];
      while (!failures.empty() && now - failures.front() > kRecentFailureWindow) failures.pop_front();
      HealthInputs in{.answered = d.answered, .total_bytes = d.total_bytes, .free_bytes = d.free_bytes,
                      .fragmentation = d.fragmentation, .pressure = d.pressure.level,
                      .recent_out_of_memory = failures.size(), .hardware = d.hardware};
      HealthGrade grade = grade_health(in);
      d.health = grade.status;
      d.health_reasons = std::move(grade.reasons);
      report->health = worse_health(report->health, d.health);
    }
  }
  for (auto& d : report->devices) {
    auto [it, fresh] = grades_.try_emplace(d.info.id, d.health);
    if (!fresh && it->second != d.health) regraded.emplace_back(&d, it->second);
    it->second = d.health;
  }
  for (const auto& [d, before] : regraded)
    events_.publish(EventKind::health_changed, d->info.id,
                    {{"deviceId", d->info.id.to_string()},
                     {"health", std::string(to_string(d->health))},
                     {"previousHealth", std::string(to_string(before))},
                     {"reasons", d->health_reasons}});
  latest_.store(report, std::memory_order_release);
  generation_.store(next_generation(), std::memory_order_release);
  std::vector<std::function<void(const MemoryStatusReport&)>> hooks;
  {
    std::lock_guard lock(hooks_mu_);
    hooks = hooks_;
  }
  for (auto& hook : hooks) hook(*report);
}

void Monitor::observe(PressureReading reading) {
  auto [it, fresh] = readings_.try_emplace(reading.device, reading);
  const PressureLevel before = fresh ? PressureLevel::Low : it->second.level;
  reading.level = next_pressure_level(before, reading.percent, options_.thresholds);
  it->second = reading;
  if (reading.level == before) return;
  nlohmann::json data = to_json(reading);
  data["previousLevel"] = std::string(to_string(before));
  events_.publish(EventKind::pressure_changed, reading.device, std::move(data));
  spdlog::info("pressure on {}: {} → {} ({:.1f}% of {} in use)", reading.device.to_string(), to_string(before),
               to_string(reading.level), reading.percent, format_size(reading.capacity_bytes));
}

void Monitor::note_usage(DeviceId device) { note_usage(device, manager_.device_counters(device)); }

void Monitor::note_usage(DeviceId device, const MemoryManager::DeviceCounters& live) {
  bool respond = false;
  {
    std::lock_guard lock(levels_mu_);
    auto it = readings_.find(device);
    if (it == readings_.end()) return;  // not sampled yet: the next sample sees it
    // The capacity side (device total, other processes, the limit) is the
    // last sample's; memd's own side is live.
    PressureInputs in;
    in.device_total = it->second.device_total_bytes;
    in.device_used = it->second.other_processes_bytes + live.reserved_bytes;
    in.memd_reserved = live.reserved_bytes;
    in.memd_allocated = live.allocated_bytes;
    in.limit = it->second.limit_bytes;
    const PressureLevel before = it->second.level;
    last_use_[device] = std::chrono::steady_clock::now();
    observe(measure_pressure(device, in));
    respond = readings_[device].level >= PressureLevel::High && readings_[device].level > before;
  }
  if (respond && options_.interval.count() > 0) {
    {
      std::lock_guard lock(wake_mu_);
      wake_ = true;
    }
    wake_cv_.notify_all();
  }
}

PressureLevel Monitor::level(DeviceId device) const {
  std::lock_guard lock(levels_mu_);
  auto it = readings_.find(device);
  return it == readings_.end() ? PressureLevel::Low : it->second.level;
}

std::vector<PressureReading> Monitor::pressure() const {
  std::lock_guard lock(levels_mu_);
  std::vector<PressureReading> out;
  for (const auto& [device, r] : readings_) out.push_back(r);
  return out;
}

Result<PressureReading> Monitor::pressure(DeviceId device) const {
  if (auto info = catalog_.info(device); !info) return fail(info.error());
  std::lock_guard lock(levels_mu_);
  auto it = readings_.find(device);
  if (it == readings_.end()) return PressureReading{.device = device};
  return it->second;
}

std::chrono::steady_clock::duration Monitor::idle_for(DeviceId device) const {
  std::lock_guard lock(levels_mu_);
  auto it = last_use_.find(device);
  return std::chrono::steady_clock::now() - (it == last_use_.end() ? started_ : it->second);
}

void Monitor::note_failure(DeviceId device) {
  std::lock_guard lock(levels_mu_);
  auto& failures = failures_[device];
  failures.push_back(std::chrono::steady_clock::now());
  if (failures.size() > 4096) failures.pop_front();  // the count saturates; memory does not grow
}

Result<void> Monitor::admit(DeviceId device, MemoryPriority priority) const {
  if (priority != MemoryPriority::Low || !options_.policy.refuse_low_priority) return {};
  std::lock_guard lock(levels_mu_);
  auto it = readings_.find(device);
  if (it == readings_.end() || it->second.level != PressureLevel::Critical) return {};
  return fail(ErrorCode::out_of_memory,
              "{} is at Critical memory pressure ({:.1f}% of its {} capacity in use); Low-priority allocations are "
              "refused until it falls below {:.0f}%",
              device.to_string(), it->second.percent, format_size(it->second.capacity_bytes),
              options_.thresholds.critical - options_.thresholds.hysteresis);
}

std::vector<PressureAction> Monitor::run_policy() {
  std::lock_guard policy_lock(policy_mu_);
  std::vector<PressureAction> actions;
  for (const PressureReading& reading : pressure()) {
    if (reading.level < PressureLevel::High) continue;
    const DeviceId device = reading.device;
    if (options_.policy.release_cached) {
      const std::uint64_t released = manager_.release_cached(device);
      if (released > 0) actions.push_back({device, reading.level, "release_cached", released, 0});
    }
    if (reading.level == PressureLevel::Critical && options_.policy.reclaim) {
      // Back under High, counted from the live numbers after the release.
      note_usage(device);
      const PressureReading now = pressure(device).value_or(reading);
      const double target = (options_.thresholds.high - options_.thresholds.hysteresis) / 100.0;
      const auto goal = static_cast<std::uint64_t>(static_cast<double>(now.capacity_bytes) * target);
      if (now.in_use_bytes > goal) {
        const std::uint64_t needed = now.in_use_bytes - goal;
        const MemoryType type = device == DeviceId::cpu() ? MemoryType::RAM : MemoryType::VRAM;
        const std::uint64_t freed = manager_.reclaim(device, type, needed);
        // Only what freed something is an event: a device that stays
        // Critical with nothing evictable would repeat it every interval.
        if (freed > 0) actions.push_back({device, now.level, "reclaim", freed, needed});
      }
    }
    note_usage(device);
  }
  for (const auto& a : actions) {
    events_.publish(EventKind::pressure_action, a.device,
                    {{"deviceId", a.device.to_string()},
                     {"level", std::string(to_string(a.level))},
                     {"action", a.action},
                     {"bytes", a.bytes},
                     {"requestedBytes", a.requested}});
    spdlog::info("pressure policy on {} at {}: {} {}", a.device.to_string(), to_string(a.level), a.action,
                 format_size(a.bytes));
  }
  return actions;
}

void Monitor::loop() {
  auto next = std::chrono::steady_clock::now() + options_.interval;
  std::unique_lock lock(wake_mu_);
  while (!stopping_) {
    wake_cv_.wait_until(lock, next, [&] { return stopping_ || wake_; });
    if (stopping_) break;
    const bool woken = std::exchange(wake_, false);
    lock.unlock();
    if (!woken || std::chrono::steady_clock::now() >= next) {
      sample_now();
      next = std::chrono::steady_clock::now() + options_.interval;
    }
    run_policy();
    lock.lock();
  }
}

}  // namespace memd
