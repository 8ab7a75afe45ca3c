// service/state_store.hpp — what `memd --state-dir DIR` keeps across
// restarts (issue 17, item 4), one file per concern.
//
// Files (each a state_json.hpp document: {"format": "memd-state", "kind",
// "version": 1, "savedAt", ...}, two-space indented, mode 0600 in a 0700
// directory):
//   limits.json      the limits per device, memory type and owner, in
//                    memory_limits' own shape (perDevice, perMemoryType,
//                    perOwner). Written on every change, before the answer.
//   models.json      every model that was Loaded once (ModelRecord: name,
//                    resolved path, device, dtype, priority, keep-alive,
//                    pinned, last use, and each file's identity then).
//                    Written when a load job succeeds (before the model
//                    reads Loaded anywhere), on a pin, an unload and new
//                    terms (before the answer); a use only moves it to the
//                    next periodic write.
//   predictor.json   the usage predictor's history (PredictorHistory:
//                    frequencies, successions, last uses on the wall
//                    clock). Written periodically (every flush interval,
//                    2 s by default) when it changed.
//   content-hashes.jsonl  the models' content-hash cache (models/
//                    content_hash.hpp: its own JSON-lines format, written by
//                    the model manager after a load that hashed something).
//   memd.lock        held (flock) while a daemon uses the directory.
// Every file is replaced with state/atomic_file.hpp (temporary, fsync,
// rename, fsync of the directory), so after a crash each is the last whole
// write. At stop (SIGTERM) everything that changed is written.
//
// Reading at start (load()): a missing file is no state. A file that is not
// a whole, well-formed document of its kind and version — cut off, not JSON,
// another version, a value of the wrong type, a number over its bound, an
// owner or model name that breaks its rule, a key this memd does not know —
// is refused whole: the error is logged naming the file and the line and
// column or the field (perOwner["x"], models[2].files[0].sizeBytes), the
// file is renamed to `<file>.bad-<UTC time>` and memd starts without that
// concern's state (the rest is restored). What is well-formed but no longer
// applies (a limit on a device this machine lacks, a model whose files
// changed) is skipped by whoever applies it (MemoryService, ModelManager),
// with a warning.
//
// The format/parse functions are pure (tested on hostile input and fuzzed:
// fuzz/state_file_fuzz.cpp); format's output always parses back to the
// same value.
//
// Thread safety: StateStore is thread-safe; flushes of one concern are
// serialised (the newest state is written last).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "alloc/limits.hpp"
#include "memd/error.hpp"
#include "models/model_manager.hpp"
#include "models/usage_predictor.hpp"
#include "state/atomic_file.hpp"

namespace memd {

inline constexpr std::string_view kLimitsStateFile = "limits.json";
inline constexpr std::string_view kModelsStateFile = "models.json";
inline constexpr std::string_view kPredictorStateFile = "predictor.json";
inline constexpr std::uint64_t kStateVersion = 1;

// Bounds a state file must keep (beyond them it is refused as hostile).
inline constexpr std::size_t kMaxStateDevices = 2048;
inline constexpr std::size_t kMaxStateOwners = 65536;
inline constexpr std::size_t kMaxStateModels = 4096;
inline constexpr std::size_t kMaxStateModelFiles = 4096;
inline constexpr std::size_t kMaxStatePathBytes = 4096;
inline constexpr std::size_t kMaxStateSuccessors = 256;
inline constexpr std::uint64_t kMaxStateKeepAliveSeconds = 30ull * 24 * 3600;

std::string format_limits_state(const Limits& limits, std::chrono::system_clock::time_point now);
Result<Limits> parse_limits_state(std::string_view text);

// invalid_argument for a record that would not parse back (a path that is
// not UTF-8, say); format_models_state() leaves such a record out.
Result<void> check_model_record(const ModelRecord& record);
std::string format_models_state(const std::vector<ModelRecord>& records, std::chrono::system_clock::time_point now);
Result<std::vector<ModelRecord>> parse_models_state(std::string_view text);

std::string format_predictor_state(const PredictorHistory& history, std::chrono::system_clock::time_point now);
Result<PredictorHistory> parse_predictor_state(std::string_view text);

// What the state directory held at start.
struct StateLoad {
  std::optional<Limits> limits;
  std::optional<std::vector<ModelRecord>> models;
  std::optional<PredictorHistory> predictor;
  // Each refused file: the message logged (file, where, what) and where it
  // was set aside ("" when even that failed).
  struct Refused {
    std::filesystem::path file;
    std::string message;
    std::filesystem::path set_aside_as;
  };
  std::vector<Refused> refused;
  std::size_t temporaries_removed = 0;  // left by writes a crash interrupted
};

class StateStore {
 public:
  // Takes the directory (DirectoryLock: conflict when another memd holds
  // it) and removes leftover temporaries. The directory must exist.
  static Result<std::unique_ptr<StateStore>> open(const std::filesystem::path& dir);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  const std::filesystem::path& directory() const noexcept { return dir_; }
  // Reads the three files (rules above); refused ones are logged and set aside.
  StateLoad load();

  // A concern: its file in the directory, a generation that moves whenever
  // its state changes, and the text of its state now. Added before start().
  struct Concern {
    std::string file;
    std::function<std::uint64_t()> generation;
    std::function<std::string()> render;
  };
  using ConcernId = std::size_t;
  // The concern's state as of now counts as written (it was just read).
  ConcernId add(Concern concern);
  // Flushes every concern every `interval` from a thread of its own (0: none).
  void start(std::chrono::milliseconds interval);
  // Writes the concern's file if its generation moved since the last write.
  // A failed write is logged and retried at the next flush.
  Result<void> flush(ConcernId id);
  // Every concern; the first error, if any.
  Result<void> flush_all();
  // Stops the thread, flushes every concern, then writes nothing more (a
  // flush after it is a no-op). Idempotent.
  void close();

  std::uint64_t writes() const noexcept { return writes_.load(std::memory_order_relaxed); }
  std::uint64_t write_failures() const noexcept { return write_failures_.load(std::memory_order_relaxed); }

 private:
  StateStore(std::filesystem::path dir, DirectoryLock lock) : dir_(std::move(dir)), lock_(std::move(lock)) {}
  struct Slot {
    Concern concern;
    std::mutex mu;            // one write of this file at a time
    std::uint64_t saved = 0;  // the generation last written
  };
  void run(std::stop_token stop, std::chrono::milliseconds interval);

  const std::filesystem::path dir_;
  DirectoryLock lock_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::atomic<bool> closed_{false};
  std::atomic<std::uint64_t> writes_{0}, write_failures_{0};
  std::mutex thread_mu_;
  std::condition_variable_any wake_;
  std::jthread thread_;
};

}  // namespace memd
