// models/model_manager.hpp — models as named sets of components, kept in
// tiers (VRAM, memd's RAM cache, the files on disk), loaded, shared,
// evicted and restored (issue 15, items 2–7).
//
// A component is one exportable allocation (owner `memd:models`) sized from
// the header: on a device for the VRAM tier, in pinned host memory (cpu
// SharedMemory) for the RAM tier. Components with identical bytes are
// stored once per device and shared: a component whose size equals one
// already stored is hashed (XXH3-128, cached by file identity) and, on a
// hash match, compared byte for byte before the model takes a reference.
//
// A load is a job on a thread of its own: resolve the path under the roots,
// read the layout (models/model_layout.hpp), pick the device, share what is
// already there, make room for the rest (evict, below), allocate each
// component and fill it (models/component_loader.hpp), then Loaded. Asking
// for a model that is loaded restores it to VRAM if it left (a hit).
//
// Room: a device's room is the monitor's capacity for memd there less what
// memd's users hold. When a load needs more, models resident in VRAM on
// that device go down a tier, cheapest first (core/eviction_plan.hpp: pinned
// never, priority, keep-alive, expected restore cost), only as many bytes as
// needed: to the RAM cache when it has room under its own limit (itself
// evicting its coldest to make room), else straight to Disk (dropped: the
// files are still there). The allocator's reclaim callback (issue 3) and the
// pressure policy (issue 14) reach the same eviction. The model predicted
// next is brought up into idle room, never by evicting
// (models/model_preloader.hpp).
//
// Idle models (issue 15, item 5): a model is idle when it is not pinned, no
// job runs for it and its keep-alive has run out since its last use.
// optimize() moves idle models one tier down — VRAM to the RAM tier while it
// has room, else to Disk — and brings the RAM tier to its floor. The floor
// is what the RAM tier keeps for a reason: RAM-only copies of components
// some pinned, busy or within-keep-alive model holds. Everything else there
// goes (copies of idle models' components, and copies of components that
// are also in VRAM — duplicates whose only use would be a quicker later
// demotion). A timer does the VRAM half on its own for models with a
// keep-alive set (keepAliveSeconds > 0: Ollama's keep_alive), and the
// allocator's release callback (pressure's High rung, and rung 3 of an
// allocation in pinned host memory) brings the RAM tier to its floor.
//
// Thread safety: every public method is thread-safe. One mutex guards the
// registry; it is never held across an allocation or a copy (the allocator
// may call the reclaim callback from inside an allocation).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "core/eviction_plan.hpp"
#include "models/component_loader.hpp"
#include "models/content_hash.hpp"
#include "models/model_export.hpp"
#include "models/model_layout.hpp"
#include "models/model_preloader.hpp"
#include "models/model_roots.hpp"
#include "models/model_status.hpp"
#include "models/usage_predictor.hpp"
#include "monitor/event_bus.hpp"
#include "monitor/monitor.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {

struct ModelOptions {
  ModelRoots roots;                       // none: every load refused
  std::uint64_t ram_cache_bytes = 0;      // the RAM tier's limit; 0: no RAM tier
  unsigned readers = 4;                   // reader threads per component load
  std::size_t max_models = 1024;
  // Where state that outlives the process is kept (memd serve --state-dir);
  // empty: nothing is. Today: the content-hash cache (kHashCacheFile), read
  // at start and written after a load that hashed something new, and at exit.
  std::filesystem::path state_dir;
  // How often models whose keep-alive ran out are offloaded (only those
  // with a keep-alive set); 0: never on its own (optimize() still does).
  std::chrono::milliseconds keep_alive_sweep{1000};
  // Preloading the model predicted next (models/model_preloader.hpp): on
  // or off, the probability the prediction must reach, and how full (a
  // fraction of its capacity) a preload may leave a device.
  bool preload = true;
  double preload_threshold = 0.5;
  double preload_vram_ceiling = 0.75;
};

// What the manager has done since start, counted where it happens (for
// /metrics): load jobs (a first load or a restore to VRAM) that ended Loaded
// or Failed, and models moved down a tier by an eviction, the keep-alive
// sweep or an optimize (an unload is not an eviction; a dry run moves nothing).
struct ModelCounters {
  std::uint64_t loads_completed = 0;
  std::uint64_t loads_failed = 0;
  std::uint64_t evictions = 0;
};

inline constexpr std::string_view kHashCacheFile = "content-hashes.jsonl";

// A model as the state directory keeps it (service/state_store.hpp): its
// terms, the device it was placed on, its last use on the wall clock, and
// the files it was loaded from as they were then. Only a model that was
// Loaded once has one (before that its files are not known).
struct ModelRecord {
  struct File {
    std::string path;  // absolute, as opened
    FileIdentity identity;
    bool operator==(const File&) const = default;
  };
  std::string name;
  std::string path;  // the resolved path the model was loaded from
  DeviceId device;
  std::optional<Dtype> dtype;
  int priority = 1;
  std::chrono::seconds keep_alive{0};
  bool pinned = false;
  std::chrono::system_clock::time_point last_use{};
  std::vector<File> files;
  bool operator==(const ModelRecord&) const = default;
};

// Whether `now` is still the file `recorded` describes: the same inode, size
// and modification time (the device number is not compared: NFS, btrfs
// subvolumes and overlays may number a device differently after a reboot).
bool same_file(const FileIdentity& recorded, const FileIdentity& now) noexcept;

inline constexpr std::string_view kModelOwner = "memd:models";

class ModelManager {
 public:
  ModelManager(MemoryManager& manager, TransferEngine& transfers, Monitor& monitor, EventBus& events,
               ModelOptions options);
  ~ModelManager();
  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  // Starts a load (or, for a model already known, a restore to VRAM) and
  // returns its status at once (Loading). invalid_argument for a bad name or
  // request, permission_denied for a path outside the roots, conflict for a
  // name taken by another path, not_found for a device or file that does not
  // exist. What goes wrong later (a malformed file, no room, a file that
  // changed while it was read: invalid_file) ends the job Failed with the
  // error, and status() says it; the buffers that job had filled go back,
  // so a failed load holds no more memory than the model held before it.
  Result<ModelStatus> load(const ModelLoadRequest& request);
  // Waits until the model's job is done; its status then.
  Result<ModelStatus> wait(std::string_view name, std::chrono::milliseconds timeout = std::chrono::minutes(10));

  Result<ModelStatus> status(std::string_view name) const;
  std::vector<ModelStatus> status() const;
  // What loading `request` would need and evict, changing nothing.
  Result<ModelEstimate> estimate(const ModelLoadRequest& request);
  // Unloads: its components' references go, and what nobody else holds is
  // freed. conflict while it is loading.
  Result<ModelStatus> unload(std::string_view name);
  Result<ModelStatus> set_pinned(std::string_view name, bool pinned);

  // State kept across restarts (service/state_store.hpp). records(): every
  // model that was Loaded once, by name. restore(): at start, before any
  // request, each record's model is known again — a pinned one is loaded
  // back into VRAM, any other registered at the Disk tier (its layout read
  // and its files opened, nothing allocated), as if evicted, so a load
  // brings it back on its terms and the preloader may bring it up. Each runs
  // as a job (status Loading); confined by the roots as any load is. A record
  // whose device this machine lacks, whose path no root holds now, or whose
  // files are gone or changed since (same_file) ends Failed with
  // "not restored at start: …" (logged as a warning, published as the final
  // model_progress); it keeps its record until it is loaded again or unloaded.
  std::vector<ModelRecord> records() const;
  void restore(const std::vector<ModelRecord>& records);
  // Changes whenever records() would answer something else (a last use
  // included). The hook runs after a change a restart must see at once —
  // a job that succeeded (before its model reads Loaded anywhere), new
  // terms, a pin, an unload — with no lock held; a use or a failed job
  // only moves the generation. Set before requests are served (or {} to
  // stop it); it may be called from any thread.
  std::uint64_t state_generation() const noexcept { return state_generation_.load(std::memory_order_acquire); }
  void set_state_hook(std::function<void()> hook) {
    std::lock_guard lock(state_hook_mu_);
    state_hook_ = std::move(hook);
  }

  // Exports (models/model_export.hpp). The probe says which buffers other
  // processes use; set once, before requests are served (none: nothing is).
  // Under the registry mutex: the keep-alive sweep may already be reading it.
  void set_export_probe(ExportProbe probe) {
    std::lock_guard lock(mu_);
    export_probe_ = std::move(probe);
  }
  // The model as an export sees it, handed to `grant` with the registry
  // locked, so no eviction or unload slips between the check and the
  // grant's bookkeeping (grant must not call back into this manager).
  // not_found: no such model; conflict: loading, failed, or not every
  // component in VRAM (the message names each component's tier).
  Result<ModelExportView> export_model(std::string_view name,
                                       const std::function<Result<void>(const ModelExportView&)>& grant);
  // The buffers (VRAM and RAM tier) of the model's components now; not_found.
  Result<std::vector<AllocationId>> component_allocations(std::string_view name) const;

  // Frees at least `needed` bytes of VRAM on `device` by moving models down
  // (the allocator's reclaim callback); returns the bytes freed there.
  std::uint64_t evict_for(DeviceId device, std::uint64_t needed);
  // The RAM tier's bytes in use and its limit.
  std::uint64_t ram_bytes() const;

  // Idle models down a tier, the RAM tier to its floor, components no model
  // holds freed (see above). not_found for a device this machine lacks.
  Result<ModelOptimizeReport> optimize(const ModelOptimizeRequest& request);
  // The keep-alive timer's pass: models with a keep-alive set that ran out
  // by `now` leave VRAM (the RAM tier is left alone).
  ModelOptimizeReport expire_idle(std::chrono::steady_clock::time_point now);
  // Drops the RAM tier to its floor; the bytes freed (the release callback).
  std::uint64_t release_ram_to_floor();

  ModelCounters counters() const noexcept {
    return {loads_completed_.load(std::memory_order_relaxed), loads_failed_.load(std::memory_order_relaxed),
            evictions_.load(std::memory_order_relaxed)};
  }
  UsagePredictor& predictor() noexcept { return predictor_; }
  // Tests: called on the thread moving a component down to the RAM tier
  // (an eviction, the keep-alive sweep, optimize) once its RAM copy is made
  // and before it lands (its RAM id set, its VRAM freed), so a test can act
  // in the middle of a move. Null: none.
  void set_move_hook(std::function<void(const std::string& component)> hook) {
    std::lock_guard lock(mu_);
    move_hook_ = std::move(hook);
  }
  // Null when ModelOptions::preload is off.
  ModelPreloader* preloader() noexcept { return preloader_.get(); }
  ContentHashCache& hash_cache() noexcept { return hashes_; }
  // What reading the state directory's hash cache found at start.
  const HashCacheLoadReport& hash_cache_loaded() const noexcept { return hash_cache_loaded_; }

 private:
  friend class ModelPreloader;
  struct Component;
  struct Model;
  void run_job(std::string name);
  Result<void> load_job(const std::string& name);
  // The request's device, or one chosen by its placement policy; out_of_memory
  // when the model is larger than every device's capacity.
  Result<DeviceId> place(const ModelLayout& layout, const ModelLoadRequest& request);
  // Free for memd on the device now (its capacity under any limit, less what is in use).
  std::uint64_t room(DeviceId device);
  // (capacity under any limit, room)
  std::pair<std::uint64_t, std::uint64_t> capacity_and_room(DeviceId device);
  // A VRAM buffer an eviction freed, kept for a component of the same size
  // that the same load restores from the RAM tier (see make_room).
  struct Spare {
    AllocationId id;
    std::uint64_t bytes = 0;
  };
  // `reuse`: sizes of components this load restores from the RAM tier. A
  // victim's buffer of one of those sizes, never exported, is moved into
  // `spares` instead of being freed: the restore writes all of it, and
  // memory the GPU has written before takes a copy ~10 % faster than
  // freshly made memory (docs/benchmarks.md, session 12, restore).
  Result<void> make_room(DeviceId device, std::uint64_t bytes, const std::string& loading,
                         std::vector<std::uint64_t> reuse = {}, std::vector<Spare>* spares = nullptr);
  // The eviction planner's input for the VRAM tier of `device` (caller holds
  // mu_): `comps` and `names` say what its indices are.
  EvictionInput residents_locked(DeviceId device, const std::string& loading,
                                 std::vector<std::shared_ptr<Component>>& comps,
                                 std::vector<std::string>& names) const;
  // Drops RAM-tier copies until `bytes` fit under the cache's limit, and
  // reserves them (ram_used_) in the same lock as the check, so two
  // demotions cannot both count on the same free room; the caller gives
  // them back (unreserve_ram) if its copy does not land.
  Result<void> make_ram_room(std::uint64_t bytes);
  Result<std::shared_ptr<Component>> find_shared(const Model& model, std::size_t index, DeviceId device);
  // `spares`: buffers make_room kept; one of the component's size is used
  // (renamed) instead of a new allocation when it is restored from RAM.
  Result<void> fill_vram(Model& model, Component& component, std::vector<Spare>* spares = nullptr);
  // `keep`: give the VRAM buffer to the caller instead of freeing it.
  Result<void> demote(const std::shared_ptr<Component>& component, bool to_ram,
                      std::optional<AllocationId>* keep = nullptr);
  ModelStatus status_locked(const Model& model) const;
  ModelTier tier_locked(const Model& model) const;
  // Whether a component of the model is being filled or moved (Component::busy; under mu_).
  static bool moving_locked(const Model& model);
  void publish(EventKind kind, const Model& model, nlohmann::json extra);
  // Writes the hash cache to the state directory when it learnt a hash since
  // the last write (a miss is a hash computed and stored).
  void save_hashes();
  ExportUse export_use(const std::optional<AllocationId>& buffer) const;
  // The generation moves; `now`: the hook runs too (no lock may be held).
  void state_changed(bool now);
  // conflict when unloading `model` would free a buffer with live exports.
  Result<void> check_unexported_locked(const Model& model) const;

  // Idle models and the RAM floor (see above); the pieces are in
  // model_manager.cpp after publish().
  struct OptimizeScope {
    std::optional<DeviceId> device;  // VRAM offloads only there
    bool vram = true;                // offload idle models' VRAM components
    bool ram_floor = true;           // drop the RAM tier to its floor
    bool orphans = false;            // free components no model holds
    bool timed_only = false;         // keep-alive timer: only models with a keep-alive set
    bool dry_run = false;
    const char* reason = "optimize";  // the model_evicted events say why
  };
  bool idle_locked(const Model& model, std::chrono::steady_clock::time_point now, bool timed_only) const;
  ModelOptimizeReport run_optimize(const OptimizeScope& scope, std::chrono::steady_clock::time_point now);
  // Load progress (model_progress events, at most one per kProgressEvery per
  // model, and the final one always).
  void begin_progress(Model& model);
  // Ends the stage running (its time goes to the status's stages) and
  // starts `stage`. Caller holds mu_.
  void enter_stage_locked(Model& model, std::string_view stage);
  void set_stage(Model& model, std::string_view stage);
  void publish_progress(Model& model, bool final);
  void sweep_keep_alive(std::stop_token stop);
  std::uint64_t release_handle_ = 0;
  std::mutex sweep_mu_;
  std::condition_variable_any sweep_cv_;
  std::jthread sweeper_;

  MemoryManager& manager_;
  TransferEngine& transfers_;
  Monitor& monitor_;
  EventBus& events_;
  ModelOptions options_;
  UsagePredictor predictor_;
  ContentHashCache hashes_;
  HashCacheLoadReport hash_cache_loaded_;
  std::mutex save_mu_;
  std::uint64_t saved_misses_ = 0;  // guarded by save_mu_
  std::uint64_t reclaim_handle_ = 0;
  ExportProbe export_probe_;
  std::atomic<std::uint64_t> state_generation_{0};
  std::mutex state_hook_mu_;
  std::function<void()> state_hook_;
  std::function<void(const std::string&)> move_hook_;  // guarded by mu_

  std::atomic<std::uint64_t> loads_completed_{0}, loads_failed_{0}, evictions_{0};  // counters()
  mutable std::mutex mu_;
  std::condition_variable done_;
  std::map<std::string, std::shared_ptr<Model>, std::less<>> models_;
  std::vector<std::shared_ptr<Component>> components_;
  std::uint64_t ram_used_ = 0;
  // One thread per model at most: a model's next job first joins its last
  // one (finished by then: a job runs only while Model::job is set), so
  // finished threads never pile up in a long-running daemon.
  std::map<std::string, std::jthread, std::less<>> jobs_;
  void start_job_locked(const std::string& name);
  bool stopping_ = false;

  // Preloading. model_preloader.cpp decides what, when and where; these are
  // the registry's side (each takes mu_ itself unless it says _locked).
  struct PreloadCandidate {
    std::string name;
    std::shared_ptr<Model> model;
    DeviceId device;
    ModelTier tier = ModelTier::Disk;
    std::uint64_t vram_bytes = 0;  // the VRAM units its components not in VRAM need
    std::uint64_t ram_bytes = 0;   // the bytes of its components in neither tier
  };
  struct PreloadItem {  // one component a preload brings up
    std::shared_ptr<Component> component;
    std::string name;
    std::uint64_t bytes = 0;
    std::shared_ptr<std::vector<ModelFile>> files;
    std::vector<CopyRun> runs;
  };
  // A model loaded before, idle, whose components are all at rest, in a
  // lower tier; nullopt otherwise.
  std::optional<PreloadCandidate> preload_candidate(std::string_view name);
  // Makes the preload the model's job (its components busy) if nothing
  // changed since `seen`: into VRAM, or into the RAM tier's free room
  // (reserved here); empty when it cannot.
  std::vector<PreloadItem> claim_preload(const PreloadCandidate& seen, bool to_vram);
  Result<void> preload_into_vram(const PreloadCandidate& candidate, const PreloadItem& item);
  void preload_into_ram(const PreloadItem& item, AllocationId id);  // its bytes were reserved by the claim
  void unreserve_ram(std::uint64_t bytes);
  LoadProgress& preload_progress(const PreloadCandidate& candidate);
  // Frees the components, publishes model_preload_finished with `event`,
  // then ends the job — or starts the load that took the preload over.
  void end_preload(const PreloadCandidate& candidate, const std::vector<PreloadItem>& items, bool ok,
                   nlohmann::json event);
  // A load that finds the model preloading takes the preload over.
  void note_request_locked(Model& m, const ModelLoadRequest& request);
  ModelStatus take_over_preload_locked(Model& model, const ModelLoadRequest& request);
  // Cancels a preload of `name` and waits until it has stopped.
  void wait_out_preload_locked(std::unique_lock<std::mutex>& lock, std::string_view name);
  void nudge_preloader();
  // Last member: its thread is stopped in ~ModelManager before anything it
  // reaches goes away.
  std::unique_ptr<ModelPreloader> preloader_;
};

}  // namespace memd
