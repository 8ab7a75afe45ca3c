// models/model_manager.cpp — see model_manager.hpp.
#include "models/model_manager.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/eviction_plan.hpp"
#include "models/dtype_convert.hpp"
#include "models/layout_narrowing.hpp"
#include "models/model_name.hpp"
#include "memd/size.hpp"

namespace memd {

std::string_view to_string(ModelState state) noexcept {
  switch (state) {
    case ModelState::Loading: return "Loading";
    case ModelState::Loaded: return "Loaded";
    case ModelState::Failed: return "Failed";
  }
  return "Unknown";
}

std::string_view to_string(ModelTier tier) noexcept {
  switch (tier) {
    case ModelTier::VRAM: return "VRAM";
    case ModelTier::RAM: return "RAM";
    case ModelTier::Disk: return "Disk";
  }
  return "Unknown";
}

std::string_view to_string(ModelPlacement placement) noexcept {
  switch (placement) {
    case ModelPlacement::Spread: return "spread";
    case ModelPlacement::Fit: return "fit";
  }
  return "unknown";
}

std::optional<ModelPlacement> parse_model_placement(std::string_view text) noexcept {
  if (text == "spread") return ModelPlacement::Spread;
  if (text == "fit") return ModelPlacement::Fit;
  return std::nullopt;
}

// One stored component: its buffers in each tier and the models holding it.
struct ModelManager::Component {
  std::string name;
  std::uint64_t bytes = 0;
  DeviceId device;
  std::optional<AllocationId> vram;
  std::optional<AllocationId> ram;
  std::optional<ContentHash> hash;
  std::vector<std::string> holders;
  // Where its bytes are on disk (the first holder's files), to load or
  // restore from the Disk tier.
  std::shared_ptr<std::vector<ModelFile>> files;
  std::vector<CopyRun> runs;
  bool busy = false;  // being filled or moved: not an eviction candidate
  // Its VRAM buffer was handed to export_model once: another process may
  // still map that memory, so it is never reused for other bytes.
  bool ever_exported = false;
};

struct ModelManager::Model {
  ModelLoadRequest request;
  std::filesystem::path path;
  ModelLayout layout;
  std::shared_ptr<std::vector<ModelFile>> files;
  std::vector<std::shared_ptr<Component>> components;  // parallel to layout.components once placed
  ModelState state = ModelState::Loading;
  bool job = false;  // a job is running for it
  std::optional<DeviceId> device;
  std::string stage;
  std::string error;
  LoadProgress progress;
  std::uint64_t progress_total = 0;
  double load_seconds = 0, load_gbps = 0;
  std::uint64_t hits = 0;
  std::chrono::system_clock::time_point last_use{};
  std::chrono::steady_clock::time_point last_use_steady{};
  // When a preload last brought it up: its keep-alive counts from then too,
  // or the keep-alive sweep would take down at once what a guess just
  // brought up (its last use being older than its keep-alive).
  std::chrono::steady_clock::time_point preloaded_at{};
  // Load progress: when the job began (the rate), when the last
  // model_progress event went out (steady ns; 0: none this job).
  std::chrono::steady_clock::time_point job_start{};
  // The current job's stages so far, each with how long it took (the
  // status's progress.stages: where a load's time went).
  std::vector<std::pair<std::string, double>> stage_seconds;
  std::chrono::steady_clock::time_point stage_start{};
  std::atomic<std::int64_t> last_progress_ns{0};
  // The running job is a preload (models/model_preloader.hpp); a load asked
  // for meanwhile set taken_over: its own job follows the preload's.
  bool preloading = false;
  bool taken_over = false;
  // The files as of its last Loaded job (what a restart checks them
  // against); empty: never Loaded, so not kept across restarts.
  std::vector<ModelRecord::File> recorded;
  // The running job restores a record (its files must be `recorded`), and
  // only registers the model at the Disk tier (nothing allocated).
  bool restoring = false;
  bool register_only = false;
};

namespace {

constexpr std::uint64_t kUnit = 2 * kMiB;  // exportable buffers round to whole units
std::uint64_t rounded(std::uint64_t bytes) { return (bytes + kUnit - 1) / kUnit * kUnit; }

std::vector<HashRange> ranges_of(const std::vector<CopyRun>& runs) {
  std::vector<HashRange> out;
  out.reserve(runs.size());
  for (const auto& r : runs) out.push_back({r.file, r.file_offset, r.bytes});
  return out;
}

std::vector<const ModelFile*> pointers(const std::vector<ModelFile>& files) {
  std::vector<const ModelFile*> out;
  for (const auto& f : files) out.push_back(&f);
  return out;
}

// The layout a load lands: the file's, narrowed when the request asks.
Result<ModelLayout> read_layout(const std::filesystem::path& path, const std::optional<Dtype>& dtype) {
  auto layout = read_model_layout(path);
  if (!layout || !dtype) return layout;
  return narrow_layout(*layout, *dtype);
}

std::string as_loaded(const std::optional<Dtype>& dtype) {
  return dtype ? fmt::format("with its F32 tensors as {}", to_string(*dtype)) : "with the file's dtypes";
}

std::vector<ModelRecord::File> file_records(const std::vector<ModelFile>& files) {
  std::vector<ModelRecord::File> out;
  out.reserve(files.size());
  for (const auto& f : files) out.push_back({f.path().string(), f.identity()});
  return out;
}

// The files a restored model opened against those it was loaded from.
Result<void> check_recorded(const std::vector<ModelRecord::File>& recorded, const std::vector<ModelFile>& files) {
  for (const auto& f : files) {
    const auto it = std::find_if(recorded.begin(), recorded.end(),
                                 [&](const ModelRecord::File& r) { return r.path == f.path().string(); });
    if (it == recorded.end())
      return fail(ErrorCode::invalid_file, "the model now reads {}, which it was not loaded from",
                  f.path().string());
    if (!same_file(it->identity, f.identity()))
      return fail(ErrorCode::invalid_file,
                  "{} changed since memd loaded it (size {} -> {} bytes, modified {} -> {} ns since the epoch, "
                  "inode {} -> {}); load the model again to take the file as it is now",
                  f.path().string(), it->identity.size, f.identity().size, it->identity.mtime_ns,
                  f.identity().mtime_ns, it->identity.inode, f.identity().inode);
  }
  for (const auto& r : recorded) {
    const bool opened =
        std::any_of(files.begin(), files.end(), [&](const ModelFile& f) { return f.path().string() == r.path; });
    if (!opened)
      return fail(ErrorCode::invalid_file, "the model no longer reads {}, which it was loaded from", r.path);
  }
  return {};
}

bool same_geometry(const std::vector<CopyRun>& a, const std::vector<CopyRun>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].buffer_offset != b[i].buffer_offset || a[i].bytes != b[i].bytes || a[i].narrow_to != b[i].narrow_to)
      return false;
  return true;
}

}  // namespace

bool same_file(const FileIdentity& recorded, const FileIdentity& now) noexcept {
  return recorded.inode == now.inode && recorded.size == now.size && recorded.mtime_ns == now.mtime_ns;
}

ModelManager::ModelManager(MemoryManager& manager, TransferEngine& transfers, Monitor& monitor, EventBus& events,
                           ModelOptions options)
    : manager_(manager), transfers_(transfers), monitor_(monitor), events_(events), options_(std::move(options)) {
  // A missing file is an empty cache; an unreadable one costs only rehashing.
  if (!options_.state_dir.empty())
    if (auto loaded = hashes_.load(options_.state_dir / kHashCacheFile)) hash_cache_loaded_ = *loaded;
  reclaim_handle_ = manager_.add_reclaim_callback([this](DeviceId device, MemoryType type, std::uint64_t needed) {
    if (type != MemoryType::VRAM || device.kind() == DeviceKind::Cpu) return std::uint64_t{0};
    if (ModelPreloader::on_preload_thread()) return std::uint64_t{0};  // never evict for a guess
    return evict_for(device, needed);
  });
  // The RAM tier is pinned host memory: cpu SharedMemory's release rung
  // (pressure's High action, or an allocation there short of room) takes it
  // down to its floor.
  release_handle_ = manager_.add_release_callback([this](DeviceId device, MemoryType type) {
    if (device.kind() != DeviceKind::Cpu || type != MemoryType::SharedMemory) return std::uint64_t{0};
    return release_ram_to_floor();
  });
  if (options_.keep_alive_sweep.count() > 0)
    sweeper_ = std::jthread([this](std::stop_token stop) { sweep_keep_alive(stop); });
  if (options_.preload) preloader_ = std::make_unique<ModelPreloader>(*this);
}

ModelManager::~ModelManager() {
  if (sweeper_.joinable()) {
    sweeper_.request_stop();
    sweeper_.join();
  }
  manager_.remove_reclaim_callback(release_handle_);
  manager_.remove_reclaim_callback(reclaim_handle_);
  std::map<std::string, std::jthread, std::less<>> jobs;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto& [name, m] : models_) m->progress.cancel = true;
    jobs.swap(jobs_);
  }
  if (preloader_) preloader_->stop();  // its preload was cancelled above; it starts no job now
  jobs.clear();  // joins
  save_hashes();
  // Every buffer goes back.
  for (auto& c : components_) {
    if (c->vram) (void)manager_.deallocate(*c->vram);
    if (c->ram) (void)manager_.deallocate(*c->ram);
  }
}

void ModelManager::save_hashes() {
  if (options_.state_dir.empty()) return;
  std::lock_guard lock(save_mu_);
  const std::uint64_t misses = hashes_.misses();
  if (misses == saved_misses_) return;
  // Best effort: a failed write leaves the previous file whole (save()
  // renames into place), and the next load tries again.
  if (hashes_.save(options_.state_dir / kHashCacheFile)) saved_misses_ = misses;
}

std::uint64_t ModelManager::ram_bytes() const {
  std::lock_guard lock(mu_);
  return ram_used_;
}

bool ModelManager::moving_locked(const Model& m) {
  return std::ranges::any_of(m.components, [](const auto& c) { return c->busy; });
}

ModelTier ModelManager::tier_locked(const Model& m) const {
  if (m.components.empty()) return ModelTier::Disk;
  bool all_vram = true, all_ram = true;
  for (const auto& c : m.components) {
    all_vram = all_vram && c->vram.has_value();
    all_ram = all_ram && (c->vram.has_value() || c->ram.has_value());
  }
  return all_vram ? ModelTier::VRAM : all_ram ? ModelTier::RAM : ModelTier::Disk;
}

ModelStatus ModelManager::status_locked(const Model& m) const {
  ModelStatus s;
  s.name = m.request.name;
  s.path = m.path.string();
  s.kind = std::string(to_string(m.layout.kind));
  s.state = m.state;
  s.tier = tier_locked(m);
  s.device = m.device;
  s.priority = m.request.priority;
  s.pinned = m.request.pinned;
  s.keep_alive = m.request.keep_alive;
  std::set<std::string> dtypes;
  for (std::size_t i = 0; i < m.layout.components.size(); ++i) {
    const auto& lc = m.layout.components[i];
    ComponentStatus cs;
    cs.name = lc.name;
    cs.bytes = lc.bytes;
    cs.tensors = lc.tensors.size();
    for (const auto& t : lc.tensors) dtypes.insert(std::string(to_string(t.dtype)));
    s.bytes += lc.bytes;
    s.tensors += lc.tensors.size();
    if (i < m.components.size()) {
      const auto& c = *m.components[i];
      cs.tier = c.vram ? ModelTier::VRAM : c.ram ? ModelTier::RAM : ModelTier::Disk;
      cs.allocation = c.vram;
      cs.holders = c.holders.size();
      if (c.hash) cs.hash = c.hash->to_string();
      if (c.vram) s.vram_bytes += c.bytes;
      if (c.ram) s.ram_bytes += c.bytes;
      if (c.holders.size() > 1) s.shared_bytes += c.bytes;
    }
    s.components.push_back(std::move(cs));
  }
  s.dtypes.assign(dtypes.begin(), dtypes.end());
  s.narrowed_to = m.request.dtype;
  s.stage_seconds = m.stage_seconds;
  s.progress_bytes = m.progress.bytes_copied.load();
  s.progress_total = m.progress_total;
  s.stage = m.stage;
  if (m.job_start != std::chrono::steady_clock::time_point{}) {
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - m.job_start).count();
    if (m.state == ModelState::Loading && secs > 0)
      s.rate_bytes_per_second = static_cast<double>(s.progress_bytes) / secs;
    else if (m.state == ModelState::Loaded)
      s.rate_bytes_per_second = m.load_gbps * 1e9;
  }
  s.load_seconds = m.load_seconds;
  s.load_gbps = m.load_gbps;
  s.hits = m.hits;
  s.preloaded = !m.job && predictor_.preloaded(m.request.name);
  s.last_use = m.last_use;
  s.error = m.error;
  return s;
}

Result<ModelStatus> ModelManager::status(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
  return status_locked(*it->second);
}

std::vector<ModelStatus> ModelManager::status() const {
  std::lock_guard lock(mu_);
  std::vector<ModelStatus> out;
  for (const auto& [name, m] : models_) out.push_back(status_locked(*m));
  return out;
}

Result<ModelStatus> ModelManager::load(const ModelLoadRequest& request) {
  if (auto ok = check_model_name(request.name); !ok) return fail(ok.error());
  if (request.device && !manager_.catalog().info(*request.device))
    return fail(ErrorCode::not_found, "no device {}", request.device->to_string());
  if (request.device && request.device->kind() == DeviceKind::Cpu)
    return fail(ErrorCode::not_found, "no GPU or host device cpu: models load onto cuda:N or host:N");
  if (request.dtype && !convertible(Dtype::F32, *request.dtype))
    return fail(ErrorCode::invalid_argument, "dtype {}: a load narrows F32 to F16 or BF16 only",
                to_string(*request.dtype));
  auto path = options_.roots.resolve(request.path);
  if (!path) return fail(path.error());
  std::unique_lock lock(mu_);
  if (stopping_) return fail(ErrorCode::unavailable, "memd is shutting down");
  if (auto it = models_.find(request.name); it != models_.end()) {
    Model& m = *it->second;
    if (m.path != *path)
      return fail(ErrorCode::conflict, "model '{}' is {}; unload it before loading {}", request.name,
                  m.path.string(), path->string());
    if (m.request.dtype != request.dtype)
      return fail(ErrorCode::conflict, "model '{}' is loaded {}; unload it before loading it {}", request.name,
                  as_loaded(m.request.dtype), as_loaded(request.dtype));
    if (m.job && m.preloading) return take_over_preload_locked(m, request);
    if (m.job) return status_locked(m);
    const bool new_terms = m.request.priority != request.priority || m.request.keep_alive != request.keep_alive ||
                           m.request.pinned != request.pinned;
    note_request_locked(m, request);
    // A hit only when nothing of it is moving: a component an eviction or
    // the sweep is taking down still has its VRAM id until the copy ends,
    // and answering VRAM then would leave it in RAM with no job to bring it
    // back. Else a job runs; it waits the move out and restores.
    if (m.state == ModelState::Loaded && tier_locked(m) == ModelTier::VRAM && !moving_locked(m)) {
      ++m.hits;
      nudge_preloader();
      auto s = status_locked(m);
      lock.unlock();
      state_changed(new_terms);
      return s;
    }
    // Failed, or no longer all in VRAM: a job (re)loads what is missing.
    // One never placed (a first load that failed, a record not restored)
    // goes where this request says, not where its last attempt aimed.
    if (m.components.empty()) m.request.device = request.device;
    m.state = ModelState::Loading;
    m.error.clear();
    m.job = true;
    start_job_locked(request.name);
    return status_locked(m);
  }
  if (models_.size() >= options_.max_models)
    return fail(ErrorCode::unavailable, "{} models are registered, the most this daemon keeps", models_.size());
  auto m = std::make_shared<Model>();
  m->request = request;
  m->path = *path;
  m->stage = "queued";
  m->job = true;
  m->last_use = std::chrono::system_clock::now();
  m->last_use_steady = std::chrono::steady_clock::now();
  predictor_.record_use(request.name, m->last_use_steady);
  models_.emplace(request.name, m);
  auto s = status_locked(*m);
  start_job_locked(request.name);
  return s;
}

void ModelManager::start_job_locked(const std::string& name) {
  if (auto it = jobs_.find(name); it != jobs_.end()) {
    // The last job set Model::job false under mu_ and only notifies after:
    // it ends without mu_, so joining here cannot wait on us.
    it->second = std::jthread([this, name] { run_job(name); });
    return;
  }
  jobs_.emplace(name, std::jthread([this, name] { run_job(name); }));
}

Result<ModelStatus> ModelManager::wait(std::string_view name, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
  auto m = it->second;
  if (!done_.wait_for(lock, timeout, [&] { return !m->job; }))
    return fail(ErrorCode::unavailable, "model '{}' is still {}", name, m->stage);
  return status_locked(*m);
}

void ModelManager::run_job(std::string name) {
  const auto t0 = std::chrono::steady_clock::now();
  bool restoring = false, registering = false;
  {
    std::lock_guard lock(mu_);
    if (auto it = models_.find(name); it != models_.end()) {
      restoring = it->second->restoring;
      registering = it->second->register_only;
    }
  }
  auto done = load_job(name);
  if (done) {
    // Kept before anyone can see it Loaded (status, the event, a waiter):
    // a model a client saw Loaded survives a SIGKILL.
    {
      std::lock_guard lock(mu_);
      auto it = models_.find(name);
      if (it == models_.end()) return;
      if (it->second->files) it->second->recorded = file_records(*it->second->files);
    }
    state_changed(true);
  }
  std::shared_ptr<Model> m;
  {
    std::lock_guard lock(mu_);
    auto it = models_.find(name);
    if (it == models_.end()) return;
    m = it->second;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (done) {
      m->state = ModelState::Loaded;
      enter_stage_locked(*m, "done");
      if (!registering) {
        m->load_seconds = secs;
        const auto bytes = m->progress.bytes_copied.load();
        m->load_gbps = secs > 0 ? static_cast<double>(bytes) / secs / 1e9 : 0;
      }
    } else {
      m->state = ModelState::Failed;
      m->error = restoring ? "not restored at start: " + done.error().message : done.error().message;
      enter_stage_locked(*m, "failed");
    }
    m->restoring = false;
    m->register_only = false;
  }
  if (restoring && !done) spdlog::warn("model '{}' not restored at start: {}", name, done.error().message);
  if (!registering) (done ? loads_completed_ : loads_failed_).fetch_add(1, std::memory_order_relaxed);
  save_hashes();
  // The events go out before a waiter hears the job is done.
  publish_progress(*m, true);
  if (done && !registering) publish(EventKind::model_loaded, *m, {});
  // Before a waiter hears of it, so what it leads to is already asked for.
  if (done && !registering) nudge_preloader();
  // A failure changes no record (a first load has none yet; a restore
  // keeps the one it had); only the generation moves.
  if (!done) state_changed(false);
  {
    std::lock_guard lock(mu_);
    m->job = false;
  }
  done_.notify_all();
}

Result<DeviceId> ModelManager::place(const ModelLayout& layout, const ModelLoadRequest& request) {
  if (request.device) return *request.device;
  const std::uint64_t need = [&] {
    std::uint64_t n = 0;
    for (const auto& c : layout.components) n += rounded(c.bytes);
    return n;
  }();
  // Among the devices it fits on at all (its capacity, under any limit): the
  // least eviction first, then by the policy (model_status.hpp).
  struct Seen {
    DeviceId id;
    std::uint64_t capacity;
  };
  std::vector<Seen> seen;
  std::optional<DeviceId> best;
  std::uint64_t best_short = 0, best_room = 0;
  for (const auto& d : manager_.catalog().devices()) {
    if (d.id.kind() == DeviceKind::Cpu) continue;
    const auto [cap, r] = capacity_and_room(d.id);
    seen.push_back({d.id, cap});
    if (need > cap) continue;
    const std::uint64_t shortfall = need > r ? need - r : 0;
    const bool roomier = request.placement == ModelPlacement::Spread ? r > best_room : r < best_room;
    if (!best || shortfall < best_short || (shortfall == best_short && roomier)) {
      best = d.id;
      best_short = shortfall;
      best_room = r;
    }
  }
  if (seen.empty()) return fail(ErrorCode::not_found, "no GPU or host device to load onto");
  if (!best) {
    // Larger than any one device even with every other model evicted: say
    // by how much, device by device, rather than evict anything.
    std::string each;
    for (const auto& s : seen)
      each += fmt::format("{}{} holds {}", each.empty() ? "" : ", ", s.id.to_string(), format_size(s.capacity));
    return fail(ErrorCode::out_of_memory,
                "'{}' needs {} on one device and no device is that large ({}); a model is not split across "
                "devices",
                request.name, format_size(need), each);
  }
  return *best;
}

std::pair<std::uint64_t, std::uint64_t> ModelManager::capacity_and_room(DeviceId device) {
  monitor_.note_usage(device);
  auto reading = monitor_.pressure(device);
  if (!reading) return {0, 0};
  // The reading's limit is its last sample's; a limit set since (a
  // memory_set_limits just before a load) must count now, or the load skips
  // eviction and its allocation meets the limit.
  std::uint64_t capacity = reading->capacity_bytes;
  const auto limits = manager_.limits();
  if (auto it = limits.per_device.find(device); it != limits.per_device.end())
    capacity = std::min(capacity, it->second);
  return {capacity, capacity > reading->in_use_bytes ? capacity - reading->in_use_bytes : 0};
}

std::uint64_t ModelManager::room(DeviceId device) { return capacity_and_room(device).second; }

Result<std::shared_ptr<ModelManager::Component>> ModelManager::find_shared(const Model& model, std::size_t index,
                                                                           DeviceId device) {
  const auto& lc = model.layout.components[index];
  std::vector<std::shared_ptr<Component>> same_size;
  std::vector<std::optional<ContentHash>> known;  // each one's hash as read under mu_ (another load may set it)
  {
    std::lock_guard lock(mu_);
    for (const auto& c : components_)
      if (c->device == device && c->bytes == lc.bytes && !c->busy && c->files && same_geometry(c->runs, lc.runs)) {
        same_size.push_back(c);
        known.push_back(c->hash);
      }
  }
  if (same_size.empty()) return std::shared_ptr<Component>{};
  // Only a component of the same size and layout can be the same: hash it
  // (cached by file identity), then confirm byte for byte.
  const auto mine = pointers(*model.files);
  const auto ranges = ranges_of(lc.runs);
  auto hash = hash_component(mine, ranges, &hashes_);
  if (!hash) return fail(hash.error());
  for (std::size_t i = 0; i < same_size.size(); ++i) {
    const auto& c = same_size[i];
    if (!known[i]) {
      auto theirs = hash_component(pointers(*c->files), ranges_of(c->runs), &hashes_);
      if (!theirs) continue;
      known[i] = *theirs;
      std::lock_guard lock(mu_);
      c->hash = *theirs;
    }
    if (*known[i] != *hash) continue;
    auto same = same_bytes(mine, ranges, pointers(*c->files), ranges_of(c->runs));
    if (same && *same) return c;
  }
  return std::shared_ptr<Component>{};
}

Result<void> ModelManager::load_job(const std::string& name) {
  std::shared_ptr<Model> m;
  {
    std::lock_guard lock(mu_);
    m = models_.at(name);
    m->progress.bytes_copied = 0;
    m->progress.bytes_read = 0;
  }
  begin_progress(*m);
  if (m->components.empty()) {
    // First load: the layout, the files (re-opened confined, same identity).
    set_stage(*m, "reading layout");
    auto layout = read_layout(m->path, m->request.dtype);
    if (!layout) return fail(layout.error());
    auto files = std::make_shared<std::vector<ModelFile>>();
    for (std::size_t i = 0; i < layout->files.size(); ++i) {
      auto f = options_.roots.open_file(layout->files[i]);
      if (!f) return fail(f.error());
      if (i < layout->identities.size() && f->identity() != layout->identities[i])
        return fail(ErrorCode::invalid_file, "{} changed while its header was read", layout->files[i].string());
      files->push_back(std::move(*f));
    }
    // Set before the job started and left alone while it runs.
    if (m->restoring)
      if (auto ok = check_recorded(m->recorded, *files); !ok) return fail(ok.error());
    auto device = place(*layout, m->request);
    if (!device) return fail(device.error());
    std::lock_guard lock(mu_);
    m->layout = std::move(*layout);
    m->files = std::move(files);
    m->device = *device;
  }
  const DeviceId device = *m->device;
  // Components: shared where the device already holds the same bytes.
  if (m->components.empty()) {
    set_stage(*m, "hashing");
    for (std::size_t i = 0; i < m->layout.components.size(); ++i) {
      auto shared = find_shared(*m, i, device);
      if (!shared) return fail(shared.error());
      std::lock_guard lock(mu_);
      // Hashing ran without mu_: the component picked may have been unloaded
      // since (its buffers freed, itself dropped from components_). Share it
      // only while it is still registered and held; else load it afresh.
      if (*shared && ((*shared)->holders.empty() || std::ranges::find(components_, *shared) == components_.end()))
        *shared = nullptr;
      if (*shared) {
        (*shared)->holders.push_back(name);
        m->components.push_back(*shared);
        continue;
      }
      auto c = std::make_shared<Component>();
      c->name = m->layout.components[i].name;
      c->bytes = m->layout.components[i].bytes;
      c->device = device;
      c->holders.push_back(name);
      c->files = m->files;
      c->runs = m->layout.components[i].runs;
      components_.push_back(c);
      m->components.push_back(c);
    }
  }
  // Registered at the Disk tier: known, nothing allocated.
  if (m->register_only) return {};
  // What is not in VRAM comes in: room first, then each buffer.
  std::vector<std::size_t> missing;
  std::uint64_t need = 0, todo = 0;
  {
    std::unique_lock lock(mu_);
    // A component another job is moving (an eviction or optimize taking it
    // down, another model's load filling a shared one) is neither here nor
    // gone: wait until it settles, or this load could end Loaded with it
    // landing in the RAM tier. Nothing signals the end of a move, so look
    // again every few milliseconds; a move is one copy, bounded in time.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (moving_locked(*m) && !m->progress.cancel) {
      if (std::chrono::steady_clock::now() > give_up)
        return fail(ErrorCode::unavailable, "a component of '{}' has been moving for 2 minutes; try again", name);
      done_.wait_for(lock, std::chrono::milliseconds(5));
    }
    for (std::size_t i = 0; i < m->components.size(); ++i) {
      auto& c = *m->components[i];
      if (!c.vram && !c.busy) {
        c.busy = true;
        missing.push_back(i);
        need += rounded(c.bytes);
        // From the RAM tier the whole buffer is copied; from the files,
        // only the tensors' bytes (not the alignment between them).
        std::uint64_t from_files = 0;
        for (const auto& r : c.runs) from_files += r.buffer_bytes();
        todo += c.ram ? c.bytes : from_files;
      }
    }
    // What this job lands: shared and resident components cost it nothing,
    // so bytesDone reaches bytesTotal when it is done.
    m->progress_total = todo;
  }
  set_stage(*m, "allocating");
  auto release_busy = [&] {
    std::lock_guard lock(mu_);
    for (auto i : missing) m->components[i]->busy = false;
  };
  std::vector<std::uint64_t> reuse;
  {
    std::lock_guard lock(mu_);
    for (auto i : missing)
      if (m->components[i]->ram) reuse.push_back(m->components[i]->bytes);
  }
  std::vector<Spare> spares;
  auto free_spares = [&] {
    for (const auto& sp : spares) (void)manager_.deallocate(sp.id);
    spares.clear();
  };
  if (auto ok = make_room(device, need, name, std::move(reuse), &spares); !ok) {
    free_spares();
    release_busy();
    return fail(ok.error());
  }
  for (std::size_t k = 0; k < missing.size(); ++k) {
    if (auto ok = fill_vram(*m, *m->components[missing[k]], &spares); !ok) {
      // A failed load leaves nothing half-loaded: the buffers this job
      // filled go back, and the model is where it was before the job (its
      // RAM-tier copies and files untouched). Nobody used them meanwhile:
      // they were busy, and the model not Loaded, so not exportable.
      std::vector<AllocationId> undo;
      {
        std::lock_guard lock(mu_);
        for (std::size_t j = 0; j < k; ++j) {
          auto& c = *m->components[missing[j]];
          if (c.vram) undo.push_back(*c.vram);
          c.vram.reset();
        }
      }
      for (const auto& id : undo) (void)manager_.deallocate(id);
      free_spares();
      release_busy();
      return fail(ok.error());
    }
  }
  free_spares();
  release_busy();
  return {};
}

Result<void> ModelManager::fill_vram(Model& m, Component& c, std::vector<Spare>* spares) {
  AllocationRequest r;
  r.size_bytes = c.bytes;
  r.device = c.device;
  r.memory_type = MemoryType::VRAM;
  r.owner = std::string(kModelOwner);
  r.name = fmt::format("{}/{}", m.request.name, c.name);
  r.allocation_type = MemoryAllocationType::Model;
  r.exportable = true;
  Result<AllocationRecord> rec = fail(ErrorCode::not_found, "no spare");
  if (spares && c.ram) {
    // A spare of exactly this size: the restore below overwrites every byte.
    auto it = std::find_if(spares->begin(), spares->end(), [&](const Spare& sp) { return sp.bytes == c.bytes; });
    if (it != spares->end()) {
      const AllocationId id = it->id;
      spares->erase(it);
      if (manager_.rename(id, r.name)) rec = manager_.get(id);
      if (!rec) (void)manager_.deallocate(id);
    }
  }
  if (!rec) rec = manager_.allocate(r);
  if (!rec) return fail(rec.error());
  Result<void> filled;
  if (c.ram) {
    // From the RAM tier: one device copy.
    set_stage(m, "restoring");
    TransferSpec spec;
    spec.source = *c.ram;
    spec.destination = rec->id;
    auto copied = transfers_.copy(spec);
    if (copied) m.progress.bytes_copied.fetch_add(c.bytes);
    if (copied) publish_progress(m, false);
    filled = copied ? Result<void>{} : Result<void>(fail(copied.error()));
  } else {
    // From disk: the files must still be the ones read (a restore re-checks).
    for (const auto& f : *c.files) {
      auto now = f.current_identity();
      if (!now || *now != f.identity()) {
        (void)manager_.deallocate(rec->id);
        return fail(ErrorCode::invalid_file, "{} changed since memd read it; unload and load the model again",
                    f.path().string());
      }
    }
    auto hold = manager_.hold(rec->id);
    if (!hold) {
      (void)manager_.deallocate(rec->id);
      return fail(hold.error());
    }
    AllocationLocation at;
    {
      std::shared_lock io(hold->entry().io);
      at = hold->location();
    }
    set_stage(m, "copying");
    LoaderOptions lo;
    lo.readers = options_.readers;
    filled = load_component(*c.files, c.runs, {at.backend, at.ptr, c.bytes}, c.device, transfers_.stream_pool(),
                            transfers_.staging_buffers(), m.progress, lo);
    // A file rewritten in place while it was read keeps its size and inode:
    // only its mtime says the buffer may hold a mix of old and new bytes.
    // Checked after the reads, so a write during them is seen.
    for (const auto& f : *c.files) {
      if (!filled) break;
      auto now = f.current_identity();
      if (!now || *now != f.identity())
        filled = fail(ErrorCode::invalid_file, "{} changed while memd read it; unload and load the model again",
                      f.path().string());
    }
  }
  if (!filled) {
    (void)manager_.deallocate(rec->id);
    return filled;
  }
  std::lock_guard lock(mu_);
  c.vram = rec->id;
  return {};
}

EvictionInput ModelManager::residents_locked(DeviceId device, const std::string& loading,
                                           std::vector<std::shared_ptr<Component>>& comps,
                                           std::vector<std::string>& names) const {
  // The tier's residents: models with a VRAM component on the device. A
  // model with a job running (or the one being loaded) counts as pinned:
  // its components stay.
  EvictionInput in;
  std::map<const Component*, std::uint32_t> index;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [name, mp] : models_) {
    const Model& m = *mp;
    EvictionCandidate cand;
    for (const auto& c : m.components) {
      if (!c->vram || c->device != device) continue;
      auto [it, fresh] = index.try_emplace(c.get(), static_cast<std::uint32_t>(comps.size()));
      const bool exported = export_use(c->vram).held();  // another process maps it, or may
      if (fresh) {
        comps.push_back(c);
        in.component_bytes.push_back(rounded(c->bytes));
        if (c->busy || exported) in.held_elsewhere.push_back(it->second);
      }
      cand.components.push_back(it->second);
      cand.pinned = cand.pinned || exported;
    }
    if (cand.components.empty()) continue;
    cand.priority = m.request.priority;
    cand.pinned = cand.pinned || m.request.pinned || m.job || name == loading;
    const auto idle = now - m.last_use_steady;
    cand.idle_seconds = std::chrono::duration<double>(idle).count();
    cand.in_keep_alive = idle < m.request.keep_alive;
    cand.reuse_probability = predictor_.reuse_probability(name, now);
    // Back from RAM at ~25 GB/s, from disk at ~2 GB/s: the restore cost.
    std::uint64_t bytes_here = 0;
    bool in_ram = true;
    for (auto c : cand.components) {
      bytes_here += in.component_bytes[c];
      in_ram = in_ram && comps[c]->ram.has_value();
    }
    cand.restore_seconds = static_cast<double>(bytes_here) / (in_ram || options_.ram_cache_bytes > 0 ? 25e9 : 2e9);
    in.models.push_back(cand);
    names.push_back(name);
  }
  return in;
}

Result<void> ModelManager::make_room(DeviceId device, std::uint64_t bytes, const std::string& loading,
                                     std::vector<std::uint64_t> reuse, std::vector<Spare>* spares) {
  if (bytes == 0) return {};
  const std::uint64_t have = room(device);
  if (have >= bytes) return {};
  const std::uint64_t needed = bytes - have;
  std::vector<std::shared_ptr<Component>> chosen;
  std::vector<std::string> victims;
  {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<Component>> comps;
    std::vector<std::string> names;
    EvictionInput in = residents_locked(device, loading, comps, names);
    in.bytes_needed = needed;
    auto plan = plan_eviction(in);
    if (!plan) return fail(plan.error());
    if (!plan->enough)
      return fail(ErrorCode::out_of_memory,
                  "loading '{}' needs {} on {}: {} free, and evicting every model that may go frees {} ({} short)",
                  loading, format_size(bytes), device.to_string(), format_size(have),
                  format_size(plan->evictable_bytes), format_size(needed - std::min(needed, plan->evictable_bytes)));
    for (auto c : plan->freed) {
      comps[c]->busy = true;
      chosen.push_back(comps[c]);
    }
    for (auto v : plan->victims) victims.push_back(names[v]);
  }
  Result<void> moved;
  for (const auto& c : chosen) {
    const bool to_ram = options_.ram_cache_bytes >= c->bytes;
    // Kept for the load when a component it restores has this size.
    auto wanted = std::find(reuse.begin(), reuse.end(), c->bytes);
    std::optional<AllocationId> kept;
    const bool keep = spares != nullptr && wanted != reuse.end() && !c->ever_exported && !export_use(c->vram).held();
    auto ok = demote(c, to_ram, keep ? &kept : nullptr);
    if (!ok && to_ram) ok = demote(c, false, keep ? &kept : nullptr);  // no room in RAM: straight to disk
    if (kept) {
      spares->push_back({*kept, c->bytes});
      reuse.erase(wanted);
    }
    if (!ok) {
      moved = fail(ok.error());
      break;
    }
  }
  // Every chosen component settles, and the victims' evictions are counted,
  // in one section under mu_: the preloader may claim a victim the moment
  // its components are idle, and an eviction counted after that claim would
  // turn the new preload into a miss.
  std::vector<std::shared_ptr<Model>> evicted;
  {
    std::lock_guard lock(mu_);
    for (const auto& c : chosen) c->busy = false;
    if (moved)
      for (const auto& v : victims)
        if (auto it = models_.find(v); it != models_.end()) {
          predictor_.record_eviction(v);
          evicted.push_back(it->second);
        }
  }
  if (!moved) return moved;
  for (const auto& m : evicted) {
    evictions_.fetch_add(1, std::memory_order_relaxed);
    publish(EventKind::model_evicted, *m, {{"fromTier", "VRAM"}});
  }
  return {};
}

Result<void> ModelManager::make_ram_room(std::uint64_t bytes) {
  if (bytes > options_.ram_cache_bytes)
    return fail(ErrorCode::out_of_memory, "{} is more than the RAM cache holds ({})", format_size(bytes),
                format_size(options_.ram_cache_bytes));
  for (;;) {
    std::shared_ptr<Component> drop;
    {
      std::lock_guard lock(mu_);
      if (ram_used_ + bytes <= options_.ram_cache_bytes) {
        ram_used_ += bytes;  // reserved with the check (see the header)
        return {};
      }
      // Copies of components also in VRAM cost nothing to drop; then the
      // coldest RAM-only component (its holders' latest use).
      auto latest_use = [&](const Component& c) {
        std::chrono::steady_clock::time_point t{};
        for (const auto& h : c.holders)
          if (auto it = models_.find(h); it != models_.end()) t = std::max(t, it->second->last_use_steady);
        return t;
      };
      auto pinned = [&](const Component& c) {
        for (const auto& h : c.holders)
          if (auto it = models_.find(h); it != models_.end() && it->second->request.pinned) return true;
        return false;
      };
      for (const auto& c : components_)
        if (c->ram && !c->busy && c->vram) {
          drop = c;
          break;
        }
      if (!drop)
        for (const auto& c : components_)
          if (c->ram && !c->busy && !pinned(*c) && (!drop || latest_use(*c) < latest_use(*drop))) drop = c;
      if (!drop)
        return fail(ErrorCode::out_of_memory, "the RAM cache ({}) is full of pinned or busy models",
                    format_size(options_.ram_cache_bytes));
      drop->busy = true;
    }
    const auto id = *drop->ram;
    (void)manager_.deallocate(id);
    std::lock_guard lock(mu_);
    drop->ram.reset();
    drop->busy = false;
    ram_used_ -= std::min(ram_used_, drop->bytes);
    // Its holders left the RAM tier: a preload of theirs not yet used missed.
    if (!drop->vram)
      for (const auto& h : drop->holders) predictor_.record_eviction(h);
  }
}

Result<void> ModelManager::demote(const std::shared_ptr<Component>& c, bool to_ram,
                                  std::optional<AllocationId>* keep) {
  if (to_ram && !c->ram && c->vram) {
    if (auto ok = make_ram_room(c->bytes); !ok) return ok;
    AllocationRequest r;
    r.size_bytes = c->bytes;
    r.device = DeviceId::cpu();
    r.memory_type = MemoryType::SharedMemory;  // pinned: restores run at the copy engine's rate
    r.owner = std::string(kModelOwner);
    r.name = fmt::format("ram/{}", c->name);
    r.allocation_type = MemoryAllocationType::Cache;
    auto rec = manager_.allocate(r);
    if (!rec) {
      unreserve_ram(c->bytes);
      return fail(rec.error());
    }
    TransferSpec spec;
    spec.source = *c->vram;
    spec.destination = rec->id;
    if (auto copied = transfers_.copy(spec); !copied) {
      (void)manager_.deallocate(rec->id);
      unreserve_ram(c->bytes);
      return fail(copied.error());
    }
    std::function<void(const std::string&)> hook;
    {
      std::lock_guard lock(mu_);
      hook = move_hook_;
    }
    if (hook) hook(c->name);
    std::lock_guard lock(mu_);
    c->ram = rec->id;  // its bytes were counted by make_ram_room
  }
  std::optional<AllocationId> vram;
  {
    std::lock_guard lock(mu_);
    vram = c->vram;
    c->vram.reset();
  }
  if (vram && keep) {
    *keep = vram;
    return {};
  }
  if (vram) (void)manager_.deallocate(*vram);
  return {};
}

std::uint64_t ModelManager::evict_for(DeviceId device, std::uint64_t needed) {
  const std::uint64_t before = room(device);
  if (auto ok = make_room(device, before + needed, {}); !ok) return 0;
  const std::uint64_t after = room(device);
  return after > before ? after - before : 0;
}

Result<ModelEstimate> ModelManager::estimate(const ModelLoadRequest& request) {
  auto path = options_.roots.resolve(request.path);
  if (!path) return fail(path.error());
  auto layout = read_layout(*path, request.dtype);
  if (!layout) return fail(layout.error());
  auto device = place(*layout, request);
  if (!device) return fail(device.error());
  ModelEstimate e;
  e.device = *device;
  e.bytes = layout->total_bytes();
  e.room_bytes = room(*device);
  std::uint64_t need = 0;
  for (const auto& c : layout->components) need += rounded(c.bytes);
  e.new_bytes = need;
  if (need <= e.room_bytes) {
    e.fits = true;
    return e;
  }
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Component>> comps;
  std::vector<std::string> names;
  EvictionInput in = residents_locked(*device, {}, comps, names);
  in.bytes_needed = need - e.room_bytes;
  auto plan = plan_eviction(in);
  if (!plan) return fail(plan.error());
  e.fits = plan->enough;
  e.evictable_bytes = plan->evictable_bytes;
  for (auto v : plan->victims) e.evict.emplace_back(names[v], freed_by(in, {v}));
  return e;
}

Result<ModelStatus> ModelManager::unload(std::string_view name) {
  std::vector<AllocationId> frees;
  ModelStatus s;
  std::shared_ptr<Model> m;
  std::jthread finished;  // its last job's thread, joined outside the lock
  {
    std::unique_lock lock(mu_);
    wait_out_preload_locked(lock, name);
    auto it = models_.find(name);
    if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
    m = it->second;
    // A job whose load has ended (status already says Loaded or Failed) is
    // only publishing its events and saving hashes: wait for it rather than
    // refuse an unload the status invites (the soak met this window about
    // once in a hundred loads). A load still running is refused as before.
    if (m->job && m->state != ModelState::Loading) {
      done_.wait_for(lock, std::chrono::seconds(10), [&] { return !m->job; });
      it = models_.find(name);
      if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
      m = it->second;
    }
    if (m->job) return fail(ErrorCode::conflict, "model '{}' is {}; unload it when it is done", name, m->stage);
    // A component an eviction, the keep-alive sweep or optimize is moving
    // (or another model's load is filling) is neither here nor gone: its
    // mover sets its buffers when the copy ends. Freeing it now would leak
    // the RAM copy the mover lands and skew the RAM tier's count, so wait
    // for the move (one copy, bounded), as a load does, then look again.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (moving_locked(*m)) {
      if (std::chrono::steady_clock::now() > give_up)
        return fail(ErrorCode::unavailable, "a component of '{}' has been moving for 2 minutes; try again", name);
      done_.wait_for(lock, std::chrono::milliseconds(5));
      it = models_.find(name);
      if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
      m = it->second;
      if (m->job) return fail(ErrorCode::conflict, "model '{}' is {}; unload it when it is done", name, m->stage);
    }
    if (auto ok = check_unexported_locked(*m); !ok) return fail(ok.error());
    s = status_locked(*m);
    for (const auto& c : m->components) {
      std::erase(c->holders, std::string(name));
      if (!c->holders.empty()) continue;
      // Reset as freed: a load that picked this component to share before
      // it went finds it gone from components_ (load_job) and no stale id.
      if (c->vram) frees.push_back(*std::exchange(c->vram, std::nullopt));
      if (c->ram) {
        frees.push_back(*std::exchange(c->ram, std::nullopt));
        ram_used_ -= std::min(ram_used_, c->bytes);
      }
      std::erase(components_, c);
    }
    models_.erase(it);
    if (auto job = jobs_.find(name); job != jobs_.end()) {
      finished = std::move(job->second);
      jobs_.erase(job);
    }
  }
  if (finished.joinable()) finished.join();
  for (const auto& id : frees) (void)manager_.deallocate(id);
  predictor_.forget(name);
  state_changed(true);
  publish(EventKind::model_evicted, *m, {{"fromTier", std::string(to_string(s.tier))}, {"toTier", "Unloaded"}});
  return s;
}

Result<ModelStatus> ModelManager::set_pinned(std::string_view name, bool pinned) {
  ModelStatus s;
  {
    std::lock_guard lock(mu_);
    auto it = models_.find(name);
    if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
    it->second->request.pinned = pinned;
    s = status_locked(*it->second);
  }
  // Written before the answer: a pin seen by the caller survives a SIGKILL.
  state_changed(true);
  return s;
}

void ModelManager::state_changed(bool now) {
  state_generation_.fetch_add(1, std::memory_order_acq_rel);
  if (!now) return;
  std::function<void()> hook;
  {
    std::lock_guard lock(state_hook_mu_);
    hook = state_hook_;
  }
  if (hook) hook();
}

std::vector<ModelRecord> ModelManager::records() const {
  std::lock_guard lock(mu_);
  std::vector<ModelRecord> out;
  for (const auto& [name, m] : models_) {
    if (m->recorded.empty() || !m->device) continue;
    ModelRecord r;
    r.name = name;
    r.path = m->path.string();
    r.device = *m->device;
    r.dtype = m->request.dtype;
    r.priority = m->request.priority;
    r.keep_alive = m->request.keep_alive;
    r.pinned = m->request.pinned;
    r.last_use = m->last_use;
    r.files = m->recorded;
    out.push_back(std::move(r));
  }
  return out;
}

void ModelManager::restore(const std::vector<ModelRecord>& records) {
  const auto wall_now = std::chrono::system_clock::now();
  const auto steady_now = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<Model>> refused;
  {
    std::lock_guard lock(mu_);
    for (const auto& r : records) {
      if (stopping_) break;
      if (models_.contains(r.name)) {
        spdlog::warn("model '{}' not restored at start: a model of that name is already known", r.name);
        continue;
      }
      if (models_.size() >= options_.max_models) {
        spdlog::warn("model '{}' not restored at start: {} models are registered, the most this daemon keeps",
                     r.name, models_.size());
        continue;
      }
      auto m = std::make_shared<Model>();
      m->request.name = r.name;
      m->request.path = r.path;
      m->request.device = r.device;
      m->request.priority = r.priority;
      m->request.keep_alive = r.keep_alive;
      m->request.pinned = r.pinned;
      m->request.dtype = r.dtype;
      m->device = r.device;
      m->recorded = r.files;
      m->path = r.path;
      m->last_use = std::min(r.last_use, wall_now);
      m->last_use_steady =
          steady_now - std::chrono::duration_cast<std::chrono::steady_clock::duration>(wall_now - m->last_use);
      // The checks a load makes before its job: the device, the roots.
      std::string why;
      if (!check_model_name(r.name)) {
        why = "its name breaks the model name rule";
      } else if (!manager_.catalog().info(r.device) || r.device.kind() == DeviceKind::Cpu) {
        why = fmt::format("no GPU or host device {} on this machine now", r.device.to_string());
      } else if (r.dtype && !convertible(Dtype::F32, *r.dtype)) {
        why = fmt::format("dtype {}: a load narrows F32 to F16 or BF16 only", to_string(*r.dtype));
      } else if (auto path = options_.roots.resolve(r.path); !path) {
        why = path.error().message;
      } else {
        m->path = *path;
      }
      if (!why.empty()) {
        m->state = ModelState::Failed;
        m->stage = "failed";
        m->error = "not restored at start: " + why;
        refused.push_back(m);
        models_.emplace(r.name, m);
        continue;
      }
      m->restoring = true;
      m->register_only = !r.pinned;
      m->stage = "queued";
      m->job = true;
      models_.emplace(r.name, m);
      start_job_locked(r.name);
    }
  }
  for (const auto& m : refused) {
    spdlog::warn("model '{}' {}", m->request.name, m->error);
    publish_progress(*m, true);
  }
  state_changed(false);
}

void ModelManager::publish(EventKind kind, const Model& m, nlohmann::json extra) {
  ModelStatus s;
  {
    std::lock_guard lock(mu_);
    s = status_locked(m);
  }
  nlohmann::json data{{"model", s.name},
                      {"tier", std::string(to_string(s.tier))},
                      {"bytes", s.bytes},
                      {"vramBytes", s.vram_bytes},
                      {"ramBytes", s.ram_bytes}};
  if (s.device) data["deviceId"] = s.device->to_string();
  if (kind == EventKind::model_loaded) {
    data["loadSeconds"] = s.load_seconds;
    data["loadGBps"] = s.load_gbps;
  }
  for (auto& [k, v] : extra.items()) data[k] = v;
  events_.publish(kind, s.device, std::move(data));
}

ExportUse ModelManager::export_use(const std::optional<AllocationId>& buffer) const {
  if (!buffer || !export_probe_) return {};
  return export_probe_(*buffer);
}

Result<void> ModelManager::check_unexported_locked(const Model& m) const {
  // Only what this unload frees matters: a component another model still
  // holds stays, and so do its exports.
  for (const auto& c : m.components) {
    if (c->holders.size() > 1) continue;
    const auto use = export_use(c->vram);
    if (use.exports > 0)
      return fail(ErrorCode::conflict,
                  "model '{}' is exported ({} live export{} of component '{}'); release them first "
                  "(memory_model_export_release), then unload",
                  m.request.name, use.exports, use.exports == 1 ? "" : "s", c->name);
  }
  return {};
}

Result<ModelExportView> ModelManager::export_model(std::string_view name,
                                                   const std::function<Result<void>(const ModelExportView&)>& grant) {
  std::lock_guard lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
  const Model& m = *it->second;
  if (m.job || m.state == ModelState::Loading)
    return fail(ErrorCode::conflict, "model '{}' is Loading ({}); export it once it is Loaded", name, m.stage);
  if (m.state == ModelState::Failed)
    return fail(ErrorCode::conflict, "model '{}' failed to load ({}); load it again before exporting it", name,
                m.error);
  // Workers map the device's buffers: a model partly in the RAM cache or
  // on disk has nothing to map there, and one being moved down a tier
  // (busy) is about to lose its buffer.
  std::string tiers;
  bool resident = !m.components.empty();
  for (const auto& c : m.components) {
    const auto tier = c->busy ? std::string_view("moving") : c->vram ? to_string(ModelTier::VRAM)
                                                          : c->ram   ? to_string(ModelTier::RAM)
                                                                     : to_string(ModelTier::Disk);
    resident = resident && c->vram && !c->busy;
    tiers += fmt::format("{}{}: {}", tiers.empty() ? "" : ", ", c->name, tier);
  }
  if (!resident)
    return fail(ErrorCode::conflict,
                "model '{}' is not all in VRAM ({}); load it again (memory_model_load brings it back), then export it",
                name, tiers);
  ModelExportView view;
  view.name = m.request.name;
  view.device = *m.device;
  for (std::size_t i = 0; i < m.components.size(); ++i) {
    const auto& c = *m.components[i];
    view.components.push_back(
        {m.layout.components[i].name, *c.vram, c.bytes, c.device, ModelTier::VRAM, m.layout.components[i].tensors});
  }
  if (auto ok = grant(view); !ok) return fail(ok.error());
  for (const auto& c : m.components) c->ever_exported = true;
  return view;
}

Result<std::vector<AllocationId>> ModelManager::component_allocations(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = models_.find(name);
  if (it == models_.end()) return fail(ErrorCode::not_found, "no model '{}'", name);
  std::vector<AllocationId> out;
  for (const auto& c : it->second->components) {
    if (c->vram) out.push_back(*c->vram);
    if (c->ram) out.push_back(*c->ram);
  }
  return out;
}

// ---- Load progress (issue 15, item 2) --------------------------------------

namespace {
// model_progress events: at most one per this per model (about ten a
// second), so a load of thousands of chunks costs its subscribers a few
// lines, not thousands; the last always goes out.
constexpr auto kProgressEvery = std::chrono::milliseconds(100);

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void ModelManager::begin_progress(Model& m) {
  {
    std::lock_guard lock(mu_);
    m.job_start = std::chrono::steady_clock::now();
    m.stage_seconds.clear();
    m.stage.clear();
    enter_stage_locked(m, "resolving");
    m.stage_start = m.job_start;
    m.progress_total = 0;  // the last job's, until this one knows its own
    m.last_progress_ns = 0;
    // The model outlives its jobs (unload refuses while one runs), and the
    // loader calls this only inside a job.
    m.progress.on_landed = [this, model = &m] { publish_progress(*model, false); };
  }
  publish_progress(m, false);
}

void ModelManager::enter_stage_locked(Model& m, std::string_view stage) {
  const auto now = std::chrono::steady_clock::now();
  if (!m.stage.empty() && m.stage_start != std::chrono::steady_clock::time_point{})
    m.stage_seconds.emplace_back(m.stage, std::chrono::duration<double>(now - m.stage_start).count());
  m.stage = std::string(stage);
  m.stage_start = now;
}

void ModelManager::set_stage(Model& m, std::string_view stage) {
  {
    std::lock_guard lock(mu_);
    enter_stage_locked(m, stage);
  }
  publish_progress(m, false);
}

void ModelManager::publish_progress(Model& m, bool final) {
  const std::int64_t now = steady_ns();
  if (final) {
    m.last_progress_ns = now;
  } else {
    // One publisher per window: the reader threads race here.
    std::int64_t last = m.last_progress_ns.load();
    if (last != 0 && now - last < std::chrono::nanoseconds(kProgressEvery).count()) return;
    if (!m.last_progress_ns.compare_exchange_strong(last, now)) return;
  }
  nlohmann::json data;
  std::optional<DeviceId> device;
  {
    std::lock_guard lock(mu_);
    const std::uint64_t done = m.progress.bytes_copied.load();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - m.job_start).count();
    device = m.device;
    data = {{"model", m.request.name},
            {"state", std::string(to_string(m.state))},
            {"stage", m.stage},
            {"bytesDone", done},
            {"bytesTotal", m.progress_total},
            {"rateBytesPerSecond", secs > 0 ? static_cast<double>(done) / secs : 0.0},
            {"final", final}};
    if (device) data["deviceId"] = device->to_string();
    if (!m.error.empty()) data["error"] = m.error;
  }
  events_.publish(EventKind::model_progress, device, std::move(data));
}

// ---- Idle models, the RAM floor, orphans (issue 15, item 5) --------------

bool ModelManager::idle_locked(const Model& m, std::chrono::steady_clock::time_point now, bool timed_only) const {
  if (m.request.pinned || m.job) return false;
  // keepAliveSeconds 0 means "no timer": such a model stays until room is
  // needed or optimize is asked; asked, it is idle at once.
  if (timed_only && m.request.keep_alive.count() == 0) return false;
  return now - std::max(m.last_use_steady, m.preloaded_at) >= m.request.keep_alive;
}

ModelOptimizeReport ModelManager::run_optimize(const OptimizeScope& scope, std::chrono::steady_clock::time_point now) {
  ModelOptimizeReport report;
  report.dry_run = scope.dry_run;
  struct Offload {
    std::shared_ptr<Component> c;
    bool to_ram = false;
  };
  std::vector<Offload> offloads;
  std::vector<std::shared_ptr<Component>> drops, orphans;
  // The models touched, with their tier before, in name order.
  std::vector<std::pair<std::shared_ptr<Model>, ModelTier>> touched;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return report;
    auto idle_holders = [&](const Component& c) {
      for (const auto& h : c.holders) {
        auto it = models_.find(h);
        if (it == models_.end() || !idle_locked(*it->second, now, scope.timed_only)) return false;
      }
      return true;
    };
    // Orphans: unload() erases a component the moment its last holder goes
    // (and frees its buffers), and a load adds its holder as it creates it,
    // so none is ever left. The sweep guards that invariant; it finds 0.
    if (scope.orphans)
      for (const auto& c : components_)
        if (c->holders.empty() && !c->busy) orphans.push_back(c);
    // VRAM: components every holder of which is idle.
    std::set<const Component*> chosen;
    if (scope.vram)
      for (const auto& [name, m] : models_) {
        if (!idle_locked(*m, now, scope.timed_only)) continue;
        for (const auto& c : m->components) {
          if (!c->vram || c->busy || (scope.device && c->device != *scope.device) || chosen.contains(c.get()))
            continue;
          // Another process maps it (or may): it stays, as eviction leaves it.
          if (export_use(c->vram).held()) continue;
          if (!idle_holders(*c)) continue;
          chosen.insert(c.get());
          offloads.push_back({c, false});
        }
      }
    // The RAM floor: a RAM-only copy some pinned, busy or within-keep-alive
    // model holds stays; the rest goes (a copy of a component leaving VRAM
    // now stays: it is where that component goes).
    std::uint64_t ram = ram_used_;
    if (scope.ram_floor)
      for (const auto& c : components_) {
        if (!c->ram || c->busy || chosen.contains(c.get())) continue;
        bool keep = false;
        if (!c->vram)
          for (const auto& h : c->holders)
            if (auto it = models_.find(h); it != models_.end()) {
              const Model& m = *it->second;
              keep = keep || m.request.pinned || m.job || now - m.last_use_steady < m.request.keep_alive;
            }
        if (keep) continue;
        drops.push_back(c);
        ram -= std::min(ram, c->bytes);
      }
    // Where each offload goes: the RAM tier while it has room without
    // evicting anything (it holds only its floor by now), else Disk.
    for (auto& o : offloads) {
      if (o.c->ram) {
        o.to_ram = true;
      } else if (options_.ram_cache_bytes > 0 && ram + o.c->bytes <= options_.ram_cache_bytes) {
        o.to_ram = true;
        ram += o.c->bytes;
      }
    }
    std::set<const Component*> moving;
    for (const auto& o : offloads) moving.insert(o.c.get());
    for (const auto& c : drops) moving.insert(c.get());
    for (const auto& [name, m] : models_)
      for (const auto& c : m->components)
        if (moving.contains(c.get())) {
          touched.emplace_back(m, tier_locked(*m));
          break;
        }
    if (scope.dry_run) {
      // What the tiers would be: the same rule as tier_locked on the
      // components' planned places.
      std::map<const Component*, bool> to_ram;
      for (const auto& o : offloads) to_ram[o.c.get()] = o.to_ram;
      std::set<const Component*> dropped;
      for (const auto& c : drops) dropped.insert(c.get());
      for (const auto& [m, before] : touched) {
        bool all_vram = true, all_ram = true;
        ModelMove mv{m->request.name, m->device, before, before, 0};
        for (const auto& c : m->components) {
          const bool leaves = to_ram.contains(c.get());
          const bool vram = c->vram && !leaves;
          const bool in_ram = (c->ram && !dropped.contains(c.get())) || (leaves && to_ram[c.get()]);
          all_vram = all_vram && vram;
          all_ram = all_ram && (vram || in_ram);
          if (moving.contains(c.get())) mv.bytes += c->bytes;
        }
        mv.to = all_vram ? ModelTier::VRAM : all_ram ? ModelTier::RAM : ModelTier::Disk;
        if (mv.to != mv.from) report.moved.push_back(std::move(mv));
      }
      for (const auto& o : offloads) {
        report.vram_freed[o.c->device] += o.c->bytes;
        if (o.to_ram && !o.c->ram) report.ram_added += o.c->bytes;
      }
      for (const auto& c : drops) report.ram_freed += c->bytes;
      for (const auto& c : orphans) report.orphans_freed += c->bytes;
      report.ram_bytes = ram;
      return report;
    }
    for (const auto& o : offloads) o.c->busy = true;
    for (const auto& c : drops) c->busy = true;
    for (const auto& c : orphans) {
      c->busy = true;
      std::erase(components_, c);
    }
  }
  for (const auto& c : orphans) {
    if (c->vram) (void)manager_.deallocate(*c->vram);
    if (c->ram) (void)manager_.deallocate(*c->ram);
    std::lock_guard lock(mu_);
    if (c->ram) ram_used_ -= std::min(ram_used_, c->bytes);
    report.orphans_freed += c->bytes;
  }
  // The floor first: what it frees is room for the offloads below.
  for (const auto& c : drops) {
    std::optional<AllocationId> id;
    {
      std::lock_guard lock(mu_);
      id = c->ram;
      c->ram.reset();
      if (id) ram_used_ -= std::min(ram_used_, c->bytes);
      c->busy = false;
    }
    if (id) {
      (void)manager_.deallocate(*id);
      report.ram_freed += c->bytes;
    }
  }
  for (const auto& o : offloads) {
    const bool had_ram = o.c->ram.has_value();
    bool to_ram = o.to_ram;
    auto ok = demote(o.c, to_ram);
    if (!ok && to_ram) {
      to_ram = false;
      ok = demote(o.c, false);  // the RAM tier filled meanwhile: straight to disk
    }
    // Still busy: it settles below, with the eviction counted (as make_room).
    if (!ok) continue;  // demote() to disk only frees; it does not fail
    report.vram_freed[o.c->device] += o.c->bytes;
    if (to_ram && !had_ram) report.ram_added += o.c->bytes;
  }
  std::vector<std::pair<std::shared_ptr<Model>, ModelMove>> moved;
  {
    std::lock_guard lock(mu_);
    for (const auto& o : offloads) o.c->busy = false;
    std::set<const Component*> moving;
    for (const auto& o : offloads) moving.insert(o.c.get());
    for (const auto& c : drops) moving.insert(c.get());
    for (const auto& [m, before] : touched) {
      ModelMove mv{m->request.name, m->device, before, tier_locked(*m), 0};
      for (const auto& c : m->components)
        if (moving.contains(c.get())) mv.bytes += c->bytes;
      if (mv.to != mv.from) {
        if (mv.from == ModelTier::VRAM) predictor_.record_eviction(mv.name);
        moved.emplace_back(m, mv);
      }
    }
    report.ram_bytes = ram_used_;
  }
  for (auto& [m, mv] : moved) {
    evictions_.fetch_add(1, std::memory_order_relaxed);
    publish(EventKind::model_evicted, *m,
            {{"fromTier", std::string(to_string(mv.from))}, {"toTier", std::string(to_string(mv.to))},
             {"reason", scope.reason}});
    report.moved.push_back(std::move(mv));
  }
  return report;
}

Result<ModelOptimizeReport> ModelManager::optimize(const ModelOptimizeRequest& request) {
  if (request.device && !manager_.catalog().info(*request.device))
    return fail(ErrorCode::not_found, "no device {}", request.device->to_string());
  OptimizeScope scope;
  scope.dry_run = request.dry_run;
  scope.orphans = !request.device;
  if (request.device) {
    // cpu holds the RAM tier and no model's VRAM; a GPU or host device has
    // no RAM tier of its own.
    const bool cpu = request.device->kind() == DeviceKind::Cpu;
    scope.vram = !cpu;
    scope.ram_floor = cpu;
    if (!cpu) scope.device = request.device;
  }
  return run_optimize(scope, request.now.value_or(std::chrono::steady_clock::now()));
}

ModelOptimizeReport ModelManager::expire_idle(std::chrono::steady_clock::time_point now) {
  OptimizeScope scope;
  scope.ram_floor = false;
  scope.timed_only = true;
  scope.reason = "keep-alive";
  return run_optimize(scope, now);
}

std::uint64_t ModelManager::release_ram_to_floor() {
  OptimizeScope scope;
  scope.vram = false;
  scope.reason = "pressure";
  return run_optimize(scope, std::chrono::steady_clock::now()).ram_freed;
}

void ModelManager::sweep_keep_alive(std::stop_token stop) {
  std::unique_lock lock(sweep_mu_);
  while (!stop.stop_requested()) {
    // Woken only by the stop request: the pass runs every interval.
    sweep_cv_.wait_for(lock, stop, options_.keep_alive_sweep, [] { return false; });
    if (stop.stop_requested()) break;
    lock.unlock();
    (void)expire_idle(std::chrono::steady_clock::now());
    lock.lock();
  }
}

// A known model asked for again: the request's terms replace the old ones,
// and it counts as a use.
void ModelManager::note_request_locked(Model& m, const ModelLoadRequest& request) {
  m.request.priority = request.priority;
  m.request.keep_alive = request.keep_alive;
  m.request.pinned = request.pinned;
  m.request.placement = request.placement;  // for where it goes when it next comes back up
  m.last_use = std::chrono::system_clock::now();
  m.last_use_steady = std::chrono::steady_clock::now();
  predictor_.record_use(request.name, m.last_use_steady);
}

ModelStatus ModelManager::take_over_preload_locked(Model& m, const ModelLoadRequest& request) {
  // The preload keeps running (what it brings up is what the load needs);
  // the preloader starts the load's own job when it ends.
  note_request_locked(m, request);
  m.taken_over = true;
  m.state = ModelState::Loading;
  m.error.clear();
  return status_locked(m);
}

void ModelManager::wait_out_preload_locked(std::unique_lock<std::mutex>& lock, std::string_view name) {
  auto it = models_.find(name);
  if (it == models_.end() || !it->second->preloading) return;
  auto m = it->second;
  m->progress.cancel = true;
  done_.wait(lock, [&] { return !m->preloading; });
}

void ModelManager::nudge_preloader() {
  if (preloader_) preloader_->nudge();
}

std::optional<ModelManager::PreloadCandidate> ModelManager::preload_candidate(std::string_view name) {
  std::lock_guard lock(mu_);
  auto it = models_.find(name);
  if (stopping_ || it == models_.end()) return std::nullopt;
  const Model& m = *it->second;
  if (m.job || m.state != ModelState::Loaded || !m.device || m.components.empty()) return std::nullopt;
  PreloadCandidate c{.name = std::string(name), .model = it->second, .device = *m.device, .tier = tier_locked(m)};
  if (c.tier == ModelTier::VRAM) return std::nullopt;
  for (const auto& comp : m.components) {
    if (comp->busy) return std::nullopt;
    if (!comp->vram) c.vram_bytes += rounded(comp->bytes);
    if (!comp->vram && !comp->ram) c.ram_bytes += comp->bytes;
  }
  return c;
}

std::vector<ModelManager::PreloadItem> ModelManager::claim_preload(const PreloadCandidate& seen, bool to_vram) {
  std::lock_guard lock(mu_);
  auto it = models_.find(seen.name);
  if (stopping_ || it == models_.end() || it->second != seen.model) return {};
  Model& m = *seen.model;
  if (m.job || m.state != ModelState::Loaded || tier_locked(m) != seen.tier) return {};
  std::uint64_t vram_bytes = 0, ram_bytes = 0;
  for (const auto& comp : m.components) {
    if (comp->busy) return {};
    if (!comp->vram) vram_bytes += rounded(comp->bytes);
    if (!comp->vram && !comp->ram) ram_bytes += comp->bytes;
  }
  if (vram_bytes != seen.vram_bytes || ram_bytes != seen.ram_bytes) return {};
  // The RAM tier only from Disk, into its free room as it is: nothing of it
  // is dropped for a guess.
  if (!to_vram && (ram_bytes == 0 || ram_used_ + ram_bytes > options_.ram_cache_bytes)) return {};
  std::vector<PreloadItem> items;
  for (const auto& comp : m.components) {
    if (to_vram ? comp->vram.has_value() : (comp->vram || comp->ram)) continue;
    comp->busy = true;
    items.push_back({comp, comp->name, comp->bytes, comp->files, comp->runs});
  }
  if (!to_vram) ram_used_ += ram_bytes;  // reserved now, so a demotion cannot take the same room
  m.job = true;
  m.preloading = true;
  m.taken_over = false;
  m.stage = "preloading";
  // Counted in the claim, under mu_: a load that takes the preload over
  // (take_over_preload_locked, also under mu_) must find it counted, or its
  // use is not the hit and the preload stays a guess that later misses.
  predictor_.record_preload(seen.name);
  m.progress.cancel = false;
  m.progress.bytes_copied = 0;
  m.progress.bytes_read = 0;
  m.progress_total = 0;
  for (const auto& item : items) m.progress_total += item.bytes;
  return items;
}

Result<void> ModelManager::preload_into_vram(const PreloadCandidate& candidate, const PreloadItem& item) {
  return fill_vram(*candidate.model, *item.component);
}

void ModelManager::preload_into_ram(const PreloadItem& item, AllocationId id) {
  std::lock_guard lock(mu_);
  item.component->ram = id;
}

void ModelManager::unreserve_ram(std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  ram_used_ -= std::min(ram_used_, bytes);
}

LoadProgress& ModelManager::preload_progress(const PreloadCandidate& candidate) { return candidate.model->progress; }

void ModelManager::end_preload(const PreloadCandidate& candidate, const std::vector<PreloadItem>& items, bool ok,
                               nlohmann::json event) {
  Model& m = *candidate.model;
  {
    std::lock_guard lock(mu_);
    for (const auto& item : items) item.component->busy = false;
    m.stage = ok ? "preloaded" : "preload failed";
    if (ok) m.preloaded_at = std::chrono::steady_clock::now();
  }
  // The event goes out before a waiter hears the job is done (as a load's);
  // `preloading` stays set until then, so a load arriving meanwhile still
  // takes the preload over rather than being dropped.
  publish(EventKind::model_preload_finished, m, std::move(event));
  {
    std::lock_guard lock(mu_);
    // A failed preload is a miss unless a load took it over (its use was
    // the hit): decided here, under mu_ with `preloading`, so no load can
    // arrive between the two.
    if (!ok && !m.taken_over) predictor_.record_eviction(candidate.name);
    m.preloading = false;
    auto it = models_.find(candidate.name);
    const bool registered = it != models_.end() && it->second == candidate.model;
    if (m.taken_over && registered && !stopping_) {
      m.taken_over = false;
      m.progress.cancel = false;
      start_job_locked(candidate.name);  // Model::job stays set: the load's job now
    } else {
      m.taken_over = false;
      if (m.state == ModelState::Loading) m.state = ModelState::Loaded;  // taken over as memd stops
      if (!stopping_) m.progress.cancel = false;
      m.job = false;
    }
  }
  done_.notify_all();
}

}  // namespace memd
