// service/state_store.cpp — see state_store.hpp.
#include "service/state_store.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "memd/iso8601.hpp"
#include "memd/memory_types.hpp"
#include "memd/owner_name.hpp"
#include "memd/size.hpp"
#include "models/dtype.hpp"
#include "models/model_name.hpp"
#include "models/strict_json.hpp"
#include "service/state_json.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::system_clock;
using ojson = nlohmann::ordered_json;

constexpr std::uint64_t kMaxPriority = 3;                // MemoryPriority::Critical
constexpr double kMaxFrequency = 1e12;                   // decayed uses: far beyond any real count
constexpr std::uint64_t kMaxSuccessorCount = 1ull << 53;  // exact in a double, as JSON readers keep it

// Times are kept to the millisecond (what iso8601() writes), so a value read
// back writes the same text.
Clock::time_point to_ms(Clock::time_point t) { return std::chrono::floor<std::chrono::milliseconds>(t); }

bool utf8(const std::string& s) {
  try {
    (void)nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
    return true;
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

Result<void> check_path(const std::string& path, std::string_view what) {
  if (path.empty() || path.front() != '/')
    return fail(ErrorCode::invalid_argument, "{} {} is not an absolute path", what, quote_for_message(path));
  if (path.size() > kMaxStatePathBytes)
    return fail(ErrorCode::invalid_argument, "{} of {} bytes, over {}", what, path.size(), kMaxStatePathBytes);
  if (path.find('\0') != std::string::npos) return fail(ErrorCode::invalid_argument, "{} has a NUL byte", what);
  if (!utf8(path)) return fail(ErrorCode::invalid_argument, "{} {} is not UTF-8", what, quote_for_message(path));
  return {};
}

// The member `key` of `object` read by `read` (a StateReader method).
template <typename F>
auto read_member(const StateReader& object, std::string_view key, F read)
    -> decltype(read(std::declval<const StateReader&>())) {
  auto member = object.member(key);
  if (!member) return fail(member.error());
  return read(*member);
}

// A reader's error for a value that has the right type but breaks a rule.
Error rule(const StateReader& at, const Error& why) { return at.error(why.message); }

}  // namespace

// ---- limits.json -------------------------------------------------------------

std::string format_limits_state(const Limits& limits, Clock::time_point now) {
  ojson doc = state_envelope("limits", kStateVersion, now);
  ojson devices = ojson::object(), types = ojson::object(), owners = ojson::object();
  for (const auto& [d, b] : limits.per_device) devices[d.to_string()] = b;
  for (const auto& [t, b] : limits.per_memory_type) types[std::string(to_string(t))] = b;
  for (const auto& [o, b] : limits.per_owner) owners[o] = b;
  doc["perDevice"] = std::move(devices);
  doc["perMemoryType"] = std::move(types);
  doc["perOwner"] = std::move(owners);
  return render_state_document(doc);
}

Result<Limits> parse_limits_state(std::string_view text) {
  auto doc = parse_state_document(text, "limits", kStateVersion);
  if (!doc) return fail(doc.error());
  const StateReader root(*doc, "");
  if (auto ok = root.object({"perDevice", "perMemoryType", "perOwner"}, /*with_envelope=*/true); !ok)
    return fail(ok.error());
  Limits limits;
  if (auto devices = root.optional_member("perDevice")) {
    auto ok = devices->each_member(kMaxStateDevices, [&](const std::string& key, const StateReader& v) -> Result<void> {
      auto device = DeviceId::parse(key);
      if (!device) return fail(rule(v, device.error()));
      auto bytes = v.u64(kMaxRequestBytes);
      if (!bytes) return fail(bytes.error());
      if (!limits.per_device.emplace(*device, *bytes).second)
        return fail(v.error(fmt::format("{} is named twice", device->to_string())));
      return {};
    });
    if (!ok) return fail(ok.error());
  }
  if (auto types = root.optional_member("perMemoryType")) {
    auto ok = types->each_member(16, [&](const std::string& key, const StateReader& v) -> Result<void> {
      auto type = parse_memory_type(key);
      if (!type || *type == MemoryType::Unknown)
        return fail(v.error("not a memory type that carries a limit (VRAM, RAM, SharedMemory, UnifiedMemory)"));
      auto bytes = v.u64(kMaxRequestBytes);
      if (!bytes) return fail(bytes.error());
      if (!limits.per_memory_type.emplace(*type, *bytes).second)
        return fail(v.error(fmt::format("{} is named twice", to_string(*type))));
      return {};
    });
    if (!ok) return fail(ok.error());
  }
  if (auto owners = root.optional_member("perOwner")) {
    auto ok = owners->each_member(kMaxStateOwners, [&](const std::string& key, const StateReader& v) -> Result<void> {
      if (auto owner = check_owner(key); !owner) return fail(rule(v, owner.error()));
      auto bytes = v.u64(kMaxRequestBytes);
      if (!bytes) return fail(bytes.error());
      limits.per_owner.emplace(key, *bytes);  // keys of one object are distinct (strict parse)
      return {};
    });
    if (!ok) return fail(ok.error());
  }
  return limits;
}

// ---- models.json ----------------------------------------------------------------

Result<void> check_model_record(const ModelRecord& r) {
  if (auto ok = check_model_name(r.name); !ok) return ok;
  if (auto ok = check_path(r.path, "path"); !ok) return ok;
  if (r.priority < 0 || static_cast<std::uint64_t>(r.priority) > kMaxPriority)
    return fail(ErrorCode::invalid_argument, "priority {} is not 0..3", r.priority);
  if (r.keep_alive.count() < 0 || static_cast<std::uint64_t>(r.keep_alive.count()) > kMaxStateKeepAliveSeconds)
    return fail(ErrorCode::invalid_argument, "keep-alive of {} s is not 0..{}", r.keep_alive.count(),
                kMaxStateKeepAliveSeconds);
  if (r.files.empty() || r.files.size() > kMaxStateModelFiles)
    return fail(ErrorCode::invalid_argument, "{} files; a model has 1..{}", r.files.size(), kMaxStateModelFiles);
  for (const auto& f : r.files)
    if (auto ok = check_path(f.path, "file path"); !ok) return ok;
  const auto year = std::chrono::year_month_day(std::chrono::floor<std::chrono::days>(r.last_use)).year();
  if (year < std::chrono::year(2000) || year > std::chrono::year(2999))
    return fail(ErrorCode::invalid_argument, "last use in year {}, not 2000..2999", static_cast<int>(year));
  return {};
}

std::string format_models_state(const std::vector<ModelRecord>& records, Clock::time_point now) {
  ojson doc = state_envelope("models", kStateVersion, now);
  ojson models = ojson::array();
  std::set<std::string_view> names;
  for (const auto& r : records) {
    if (!check_model_record(r) || !names.insert(r.name).second) continue;
    ojson files = ojson::array();
    for (const auto& f : r.files)
      files.push_back({{"path", f.path},
                       {"device", f.identity.device},
                       {"inode", f.identity.inode},
                       {"sizeBytes", f.identity.size},
                       {"mtimeNs", f.identity.mtime_ns}});
    ojson m;
    m["name"] = r.name;
    m["path"] = r.path;
    m["deviceId"] = r.device.to_string();
    m["dtype"] = r.dtype ? ojson(std::string(to_string(*r.dtype))) : ojson(nullptr);
    m["priority"] = std::string(to_string(static_cast<MemoryPriority>(r.priority)));
    m["keepAliveSeconds"] = r.keep_alive.count();
    m["pinned"] = r.pinned;
    m["lastUse"] = iso8601(r.last_use);
    m["files"] = std::move(files);
    models.push_back(std::move(m));
  }
  doc["models"] = std::move(models);
  return render_state_document(doc);
}

Result<std::vector<ModelRecord>> parse_models_state(std::string_view text) {
  auto doc = parse_state_document(text, "models", kStateVersion);
  if (!doc) return fail(doc.error());
  const StateReader root(*doc, "");
  if (auto ok = root.object({"models"}, /*with_envelope=*/true); !ok) return fail(ok.error());
  auto models = root.member("models");
  if (!models) return fail(models.error());
  if (auto ok = models->array(kMaxStateModels); !ok) return fail(ok.error());
  std::vector<ModelRecord> out;
  std::set<std::string> names;
  for (std::size_t i = 0; i < models->json().size(); ++i) {
    const StateReader m = models->item(i);
    if (auto ok = m.object({"name", "path", "deviceId", "dtype", "priority", "keepAliveSeconds", "pinned", "lastUse",
                            "files"});
        !ok)
      return fail(ok.error());
    ModelRecord r;
    auto name = read_member(m, "name", [](const StateReader& v) { return v.string(128); });
    if (!name) return fail(name.error());
    if (auto ok = check_model_name(*name); !ok) return fail(rule(*m.member("name"), ok.error()));
    if (!names.insert(*name).second) return fail(m.error(fmt::format("model {} is named twice", *name)));
    r.name = *name;
    auto path = m.member("path");
    if (!path) return fail(path.error());
    auto path_text = path->string(kMaxStatePathBytes);
    if (!path_text) return fail(path_text.error());
    if (auto ok = check_path(*path_text, "path"); !ok) return fail(rule(*path, ok.error()));
    r.path = *path_text;
    auto device = m.member("deviceId");
    if (!device) return fail(device.error());
    auto device_text = device->string(16);
    if (!device_text) return fail(device_text.error());
    auto id = DeviceId::parse(*device_text);
    if (!id) return fail(rule(*device, id.error()));
    r.device = *id;
    if (auto dtype = m.optional_member("dtype"); dtype && !dtype->json().is_null()) {
      auto dtype_text = dtype->string(16);
      if (!dtype_text) return fail(dtype_text.error());
      r.dtype = parse_dtype(*dtype_text);
      if (!r.dtype) return fail(dtype->error(fmt::format("{} is not a dtype", quote_for_message(*dtype_text))));
    }
    if (auto priority = m.optional_member("priority")) {
      auto priority_text = priority->string(16);
      if (!priority_text) return fail(priority_text.error());
      auto p = parse_priority(*priority_text);
      if (!p) return fail(priority->error("expected Low, Normal, High or Critical"));
      r.priority = static_cast<int>(*p);
    }
    if (auto keep = m.optional_member("keepAliveSeconds")) {
      auto seconds = keep->u64(kMaxStateKeepAliveSeconds);
      if (!seconds) return fail(seconds.error());
      r.keep_alive = std::chrono::seconds(static_cast<std::int64_t>(*seconds));
    }
    if (auto pinned = m.optional_member("pinned")) {
      auto b = pinned->boolean();
      if (!b) return fail(b.error());
      r.pinned = *b;
    }
    auto last = read_member(m, "lastUse", [](const StateReader& v) { return v.time(); });
    if (!last) return fail(last.error());
    r.last_use = to_ms(*last);
    auto files = m.member("files");
    if (!files) return fail(files.error());
    if (auto ok = files->array(kMaxStateModelFiles); !ok) return fail(ok.error());
    if (files->json().empty()) return fail(files->error("a model was loaded from at least one file"));
    for (std::size_t j = 0; j < files->json().size(); ++j) {
      const StateReader f = files->item(j);
      if (auto ok = f.object({"path", "device", "inode", "sizeBytes", "mtimeNs"}); !ok) return fail(ok.error());
      ModelRecord::File file;
      auto fpath = f.member("path");
      if (!fpath) return fail(fpath.error());
      auto fpath_text = fpath->string(kMaxStatePathBytes);
      if (!fpath_text) return fail(fpath_text.error());
      if (auto ok = check_path(*fpath_text, "file path"); !ok) return fail(rule(*fpath, ok.error()));
      file.path = *fpath_text;
      auto dev = read_member(f, "device", [](const StateReader& v) { return v.u64(~std::uint64_t{0}); });
      auto ino = read_member(f, "inode", [](const StateReader& v) { return v.u64(~std::uint64_t{0}); });
      auto size = read_member(f, "sizeBytes", [](const StateReader& v) { return v.u64(~std::uint64_t{0} >> 1); });
      auto mtime = read_member(f, "mtimeNs", [](const StateReader& v) { return v.i64(); });
      if (!dev) return fail(dev.error());
      if (!ino) return fail(ino.error());
      if (!size) return fail(size.error());
      if (!mtime) return fail(mtime.error());
      file.identity = {*dev, *ino, *size, *mtime};
      r.files.push_back(std::move(file));
    }
    out.push_back(std::move(r));
  }
  return out;
}

// ---- predictor.json -------------------------------------------------------------

std::string format_predictor_state(const PredictorHistory& history, Clock::time_point now) {
  ojson doc = state_envelope("predictor", kStateVersion, now);
  std::set<std::string_view> names;
  ojson models = ojson::array();
  for (const auto& m : history.models) {
    if (!check_model_name(m.name) || !names.insert(m.name).second) continue;
    ojson successors = ojson::object();
    for (const auto& [next, n] : m.successors)
      if (check_model_name(next) && n <= kMaxSuccessorCount && successors.size() < kMaxStateSuccessors)
        successors[next] = n;
    ojson e;
    e["name"] = m.name;
    e["frequency"] = std::clamp(std::isfinite(m.frequency) ? m.frequency : 0.0, 0.0, kMaxFrequency);
    e["updatedAt"] = iso8601(m.updated);
    e["lastUse"] = iso8601(m.last_use);
    e["successors"] = std::move(successors);
    models.push_back(std::move(e));
    if (models.size() >= kMaxStateModels) break;
  }
  doc["last"] = history.last && check_model_name(*history.last) ? ojson(*history.last) : ojson(nullptr);
  doc["models"] = std::move(models);
  return render_state_document(doc);
}

Result<PredictorHistory> parse_predictor_state(std::string_view text) {
  auto doc = parse_state_document(text, "predictor", kStateVersion);
  if (!doc) return fail(doc.error());
  const StateReader root(*doc, "");
  if (auto ok = root.object({"last", "models"}, /*with_envelope=*/true); !ok) return fail(ok.error());
  PredictorHistory h;
  if (auto last = root.optional_member("last"); last && !last->json().is_null()) {
    auto name = last->string(128);
    if (!name) return fail(name.error());
    if (auto ok = check_model_name(*name); !ok) return fail(rule(*last, ok.error()));
    h.last = *name;
  }
  auto models = root.member("models");
  if (!models) return fail(models.error());
  if (auto ok = models->array(kMaxStateModels); !ok) return fail(ok.error());
  std::set<std::string> names;
  for (std::size_t i = 0; i < models->json().size(); ++i) {
    const StateReader m = models->item(i);
    if (auto ok = m.object({"name", "frequency", "updatedAt", "lastUse", "successors"}); !ok) return fail(ok.error());
    PredictorHistory::Model e;
    auto name = read_member(m, "name", [](const StateReader& v) { return v.string(128); });
    if (!name) return fail(name.error());
    if (auto ok = check_model_name(*name); !ok) return fail(rule(*m.member("name"), ok.error()));
    if (!names.insert(*name).second) return fail(m.error(fmt::format("model {} is named twice", *name)));
    e.name = *name;
    auto frequency = read_member(m, "frequency", [](const StateReader& v) { return v.number(0, kMaxFrequency); });
    if (!frequency) return fail(frequency.error());
    e.frequency = *frequency;
    auto updated = read_member(m, "updatedAt", [](const StateReader& v) { return v.time(); });
    if (!updated) return fail(updated.error());
    e.updated = to_ms(*updated);
    auto last_use = read_member(m, "lastUse", [](const StateReader& v) { return v.time(); });
    if (!last_use) return fail(last_use.error());
    e.last_use = to_ms(*last_use);
    if (auto successors = m.optional_member("successors")) {
      auto ok = successors->each_member(kMaxStateSuccessors,
                                        [&](const std::string& next, const StateReader& v) -> Result<void> {
                                          if (auto rule_ok = check_model_name(next); !rule_ok)
                                            return fail(rule(v, rule_ok.error()));
                                          auto n = v.u64(kMaxSuccessorCount);
                                          if (!n) return fail(n.error());
                                          e.successors.emplace(next, *n);
                                          return {};
                                        });
      if (!ok) return fail(ok.error());
    }
    h.models.push_back(std::move(e));
  }
  return h;
}

// ---- StateStore ---------------------------------------------------------------------

Result<std::unique_ptr<StateStore>> StateStore::open(const fs::path& dir) {
  auto lock = DirectoryLock::acquire(dir);
  if (!lock) return fail(lock.error());
  auto store = std::unique_ptr<StateStore>(new StateStore(dir, std::move(*lock)));
  return store;
}

StateStore::~StateStore() { close(); }

StateLoad StateStore::load() {
  StateLoad out;
  out.temporaries_removed = remove_leftover_temporaries(dir_);
  if (out.temporaries_removed > 0)
    spdlog::info("state: removed {} temporary file(s) an interrupted write left in {}", out.temporaries_removed,
                 dir_.string());
  // Reads one file; a refused one is logged and set aside, and nothing of
  // it is used.
  auto read = [&]<typename T>(std::string_view name, std::string_view what,
                              Result<T> (*parse)(std::string_view)) -> std::optional<T> {
    const fs::path path = dir_ / name;
    auto text = read_file_bounded(path, kMaxStateFileBytes);
    if (!text && text.error().code == ErrorCode::not_found) return std::nullopt;
    Result<T> value = text ? parse(*text) : Result<T>(fail(text.error()));
    if (value) return std::move(*value);
    StateLoad::Refused refused{path, value.error().message, {}};
    auto aside = set_aside(path);
    if (aside) refused.set_aside_as = *aside;
    spdlog::error("state file {} refused: {}; {}; memd starts without its {}", path.string(), refused.message,
                  aside ? "kept aside as " + aside->string() : "could not set it aside: " + aside.error().message,
                  what);
    out.refused.push_back(std::move(refused));
    return std::nullopt;
  };
  out.limits = read(kLimitsStateFile, "limits", &parse_limits_state);
  out.models = read(kModelsStateFile, "models", &parse_models_state);
  out.predictor = read(kPredictorStateFile, "usage predictor's history", &parse_predictor_state);
  return out;
}

StateStore::ConcernId StateStore::add(Concern concern) {
  auto slot = std::make_unique<Slot>();
  slot->saved = concern.generation();
  slot->concern = std::move(concern);
  slots_.push_back(std::move(slot));
  return slots_.size() - 1;
}

void StateStore::start(std::chrono::milliseconds interval) {
  if (interval.count() <= 0 || thread_.joinable()) return;
  thread_ = std::jthread([this, interval](std::stop_token stop) { run(stop, interval); });
}

void StateStore::run(std::stop_token stop, std::chrono::milliseconds interval) {
  std::unique_lock lock(thread_mu_);
  while (!stop.stop_requested()) {
    // Woken only by the stop request: a pass every interval.
    wake_.wait_for(lock, stop, interval, [] { return false; });
    if (stop.stop_requested()) break;
    lock.unlock();
    (void)flush_all();
    lock.lock();
  }
}

Result<void> StateStore::flush(ConcernId id) {
  if (id >= slots_.size()) return fail(ErrorCode::invalid_argument, "no state concern {}", id);
  Slot& slot = *slots_[id];
  std::lock_guard lock(slot.mu);
  if (closed_.load(std::memory_order_acquire)) return {};
  // The generation before the state: a change racing this write moves it
  // again, so the next flush writes once more rather than missing it.
  const std::uint64_t generation = slot.concern.generation();
  if (generation == slot.saved) return {};
  const fs::path path = dir_ / slot.concern.file;
  auto written = write_file_atomically(path, slot.concern.render());
  if (!written) {
    write_failures_.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("state: cannot write {}: {} (the state in force is unchanged; the write is tried again at "
                  "the next flush)",
                  path.string(), written.error().message);
    return written;
  }
  writes_.fetch_add(1, std::memory_order_relaxed);
  slot.saved = generation;
  return {};
}

Result<void> StateStore::flush_all() {
  Result<void> first;
  for (ConcernId id = 0; id < slots_.size(); ++id)
    if (auto ok = flush(id); !ok && first) first = ok;
  return first;
}

void StateStore::close() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
  if (closed_.load(std::memory_order_acquire)) return;
  (void)flush_all();
  // Under each slot's lock, so a flush running now finishes first.
  for (auto& slot : slots_) {
    std::lock_guard lock(slot->mu);
    closed_.store(true, std::memory_order_release);
  }
  closed_.store(true, std::memory_order_release);
}

}  // namespace memd
