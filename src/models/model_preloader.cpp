// models/model_preloader.cpp — see model_preloader.hpp.
#include "models/model_preloader.hpp"

#include <algorithm>
#include <shared_mutex>
#include <span>

#include <fmt/format.h>

#include "memd/size.hpp"
#include "models/model_manager.hpp"

namespace memd {
namespace {

thread_local bool t_preloading = false;

// Marks this thread's allocations as a preload's for as long as it lives.
struct PreloadScope {
  PreloadScope() { t_preloading = true; }
  ~PreloadScope() { t_preloading = false; }
  PreloadScope(const PreloadScope&) = delete;
  PreloadScope& operator=(const PreloadScope&) = delete;
};

// Disk → RAM tier reads go straight into the pinned host buffer, in pieces
// this big so a cancel (an unload, shutdown) is seen soon.
constexpr std::uint64_t kReadPiece = 8 * kMiB;

std::string_view to_string_target(bool vram) { return vram ? "VRAM" : "RAM"; }

}  // namespace

struct ModelPreloader::Plan {
  ModelManager::PreloadCandidate candidate;
  Target target = Target::VRAM;
  double probability = 0;
  std::vector<ModelManager::PreloadItem> items;  // what the preload brings up
};

bool ModelPreloader::on_preload_thread() noexcept { return t_preloading; }

ModelPreloader::ModelPreloader(ModelManager& models) : models_(models) {
  thread_ = std::thread([this] { run(); });
}

ModelPreloader::~ModelPreloader() { stop(); }

void ModelPreloader::nudge() {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    nudged_ = true;
  }
  wake_.notify_all();
}

void ModelPreloader::stop() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ModelPreloader::set_claimed_hook(std::function<void(const std::string& model)> hook) {
  std::lock_guard lock(mu_);
  claimed_hook_ = std::move(hook);
}

void ModelPreloader::wait_idle() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [&] { return stopped_ || (!nudged_ && !working_); });
}

void ModelPreloader::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stopped_ || nudged_; });
    if (stopped_) break;
    nudged_ = false;
    working_ = true;
    lock.unlock();
    consider();
    lock.lock();
    working_ = false;
    if (!nudged_) idle_.notify_all();
  }
  working_ = false;
  idle_.notify_all();
}

void ModelPreloader::consider() {
  auto plan = pick();
  if (!plan) return;
  auto& mm = models_;
  const auto& name = plan->candidate.name;
  const std::string to_tier(to_string_target(plan->target == Target::VRAM));
  mm.publish(EventKind::model_preload_started, *plan->candidate.model,
             {{"toTier", to_tier}, {"probability", plan->probability}});
  std::function<void(const std::string&)> hook;
  {
    std::lock_guard lock(mu_);
    hook = claimed_hook_;
  }
  if (hook) hook(name);
  Result<void> done = preload(*plan);
  nlohmann::json event{{"toTier", to_tier}, {"ok", done.has_value()}};
  // Not brought up: end_preload counts the miss (unless a load took it
  // over, which counted its hit).
  if (!done) event["error"] = done.error().message;
  mm.end_preload(plan->candidate, plan->items, done.has_value(), std::move(event));
}

std::optional<ModelPreloader::Plan> ModelPreloader::pick() {
  auto& mm = models_;
  const double threshold = mm.options_.preload_threshold;
  const double ceiling = mm.options_.preload_vram_ceiling;
  for (const auto& p : mm.predictor_.predict(std::chrono::steady_clock::now(), 4)) {
    if (p.probability < threshold) break;  // most likely first: none after it passes
    auto candidate = mm.preload_candidate(p.model);
    if (!candidate) continue;
    // Idle room on its device, read outside the registry lock (it samples
    // the monitor): the device must stay under the ceiling afterwards.
    bool vram_fits = false;
    mm.monitor_.note_usage(candidate->device);
    if (auto reading = mm.monitor_.pressure(candidate->device); reading && reading->capacity_bytes > 0)
      vram_fits = static_cast<double>(reading->in_use_bytes + candidate->vram_bytes) <=
                  static_cast<double>(reading->capacity_bytes) * ceiling;
    Plan plan{.candidate = *candidate, .target = vram_fits ? Target::VRAM : Target::RAM, .probability = p.probability};
    // Not into VRAM: into the RAM tier's free room, if it is on Disk (the
    // claim checks the room); else no idle room for it, and a guess never
    // evicts.
    if (!vram_fits && candidate->tier != ModelTier::Disk) continue;
    plan.items = mm.claim_preload(*candidate, vram_fits);
    if (plan.items.empty()) continue;
    return plan;
  }
  return std::nullopt;
}

Result<void> ModelPreloader::preload(const Plan& plan) {
  if (plan.target == Target::RAM) return preload_ram(plan);
  // VRAM: the manager's own fill, from the RAM copy or from disk; its
  // allocations never reach the reclaim callback (PreloadScope).
  PreloadScope scope;
  auto& progress = models_.preload_progress(plan.candidate);
  for (const auto& item : plan.items) {
    if (progress.cancel.load()) return fail(ErrorCode::unavailable, "preload cancelled");
    if (auto ok = models_.preload_into_vram(plan.candidate, item); !ok) return ok;
  }
  return {};
}

Result<void> ModelPreloader::preload_ram(const Plan& plan) {
  auto& mm = models_;
  auto& progress = mm.preload_progress(plan.candidate);
  // The claim reserved the bytes of every item; what does not land goes back.
  std::uint64_t reserved = 0;
  for (const auto& item : plan.items) reserved += item.bytes;
  for (const auto& item : plan.items) {
    auto landed = [&]() -> Result<AllocationId> {
      if (progress.cancel.load()) return fail(ErrorCode::unavailable, "preload cancelled");
      // The files must still be the ones read (as a restore from disk checks).
      for (const auto& f : *item.files) {
        auto now = f.current_identity();
        if (!now || *now != f.identity())
          return fail(ErrorCode::invalid_file, "{} changed since memd read it", f.path().string());
      }
      AllocationRequest r;
      r.size_bytes = item.bytes;
      r.device = DeviceId::cpu();
      r.memory_type = MemoryType::SharedMemory;  // as a demotion's copy: pinned, restores at copy-engine rate
      r.owner = std::string(kModelOwner);
      r.name = fmt::format("ram/{}", item.name);
      r.allocation_type = MemoryAllocationType::Cache;
      auto rec = mm.manager_.allocate(r);
      if (!rec) return fail(rec.error());
      auto read = [&]() -> Result<void> {
        auto hold = mm.manager_.hold(rec->id);
        if (!hold) return fail(hold.error());
        AllocationLocation at;
        {
          std::shared_lock io(hold->entry().io);
          at = hold->location();
        }
        // Host memory: the runs are read into it directly, no staging copy.
        for (const auto& run : item.runs) {
          for (std::uint64_t done = 0; done < run.bytes;) {
            if (progress.cancel.load()) return fail(ErrorCode::unavailable, "preload cancelled");
            const std::uint64_t n = std::min(kReadPiece, run.bytes - done);
            std::span<std::byte> into(at.ptr + run.buffer_offset + done, n);
            if (auto ok = (*item.files)[run.file].read_at(run.file_offset + done, into); !ok) return ok;
            progress.bytes_read.fetch_add(n);
            progress.bytes_copied.fetch_add(n);
            done += n;
          }
        }
        return {};
      };
      if (auto ok = read(); !ok) {
        (void)mm.manager_.deallocate(rec->id);
        return fail(ok.error());
      }
      return rec->id;
    }();
    if (!landed) {
      mm.unreserve_ram(reserved);
      return fail(landed.error());
    }
    mm.preload_into_ram(item, *landed);
    reserved -= std::min(reserved, item.bytes);
  }
  return {};
}

}  // namespace memd
