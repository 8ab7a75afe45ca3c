// torch/memd_torch.cpp — libmemd_torch.so: PyTorch's CUDA allocator on memd
// (issue 16, item 1, in-process mode), through the C ABI (memd/memd.h).
//
// torch.cuda.memory.CUDAPluggableAllocator loads this library and calls
//   void* memd_torch_malloc(size_t size, int device, cudaStream_t stream)
//   void  memd_torch_free(void* ptr, size_t size, int device, cudaStream_t stream)
// for every CUDA tensor, with the stream PyTorch allocates on (and frees on
// the same one). PyTorch caches nothing in front of a pluggable allocator,
// so every tensor comes here: blocks come from memd's pool of that GPU
// (memd_allocate_async), stream-ordered — a block freed on a stream is
// reused on it at once and by other streams only after the free has run.
// PyTorch's own memory_reserved() cannot see this allocator;
// memd_torch_stats gives memd's counters instead (the Python side:
// clients/python/memd/torch_allocator.py).
//
// Two modes (issue 16, item 1). In-process: memd's allocator over memory
// of this process's own. Client mode (one budget across processes):
// memd_torch_configure (or $MEMD_TORCH_SOCKET, $MEMD_TORCH_TOKEN,
// $MEMD_TORCH_OWNER) names a running daemon's socket before the first
// allocation, and the engine leases its GPU memory from that daemon
// (lease/lease_backend.hpp): every worker's tensors count against the
// daemon's limits and show in its status; memd_torch_empty_cache gives the
// free part back; the lease ends when the process does.
//
// One engine per process, opened at the first call on every CUDA GPU
// (owner "torch", or the configured one); PyTorch's streams are adopted once each, by value of
// their cudaStream_t (a stream is never destroyed under PyTorch's caching
// of streams, so an address is never reused for another stream while this
// library maps it). A failed allocation returns NULL, which PyTorch turns
// into its out-of-memory error; the reason is in memd_torch_last_error().
//
// Regions (issue 16, item 2; the end of this file): memd_torch_set_region
// tags the calling thread's allocations, which then come from the tag's
// region on that GPU (made on first use, memd_region_create); such regions
// sleep and wake by tag (vLLM's sleep mode, SGLang's torch_memory_saver).
//
// Thread safety: PyTorch calls from any thread; the stream and region maps
// are behind a mutex, the engine is thread-safe; a thread's tag is its own.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "memd/memd.h"

namespace {

struct State {
  std::mutex mu;
  memd_engine* engine = nullptr;
  bool open_failed = false;
  // Client mode, set before the engine opens (empty: in-process).
  std::string socket, token, owner = "torch";
  std::unordered_map<std::uint64_t, memd_stream> streams;  // (device << 48) ^ stream address
  std::map<std::pair<std::string, int>, memd_region> regions;  // (tag, device)
  std::string error;
};

// Regions (defined at the end of the file).
const std::string& current_tag();
void* region_malloc(State& s, std::size_t size, int device, const memd_stream& stream);

State& state() {
  static State* s = new State;  // never destroyed: PyTorch frees tensors during interpreter exit
  return *s;
}

std::string device_name(int device) { return "cuda:" + std::to_string(device); }

void remember_error(State& s, const char* what) {
  s.error = std::string(what) + ": " + memd_last_error_message();
}

// The engine and the memd stream for (device, native stream), made once.
// Every tensor's allocation and free comes here: a thread's last stream is
// cached without the lock (an adopted stream is never forgotten, so a
// cached one stays valid; the engine, once open, never changes).
bool stream_for(State& s, int device, void* native, memd_stream* out) {
  const std::uint64_t key = (static_cast<std::uint64_t>(device) << 48) ^ reinterpret_cast<std::uintptr_t>(native);
  thread_local std::uint64_t last_key = 0;
  thread_local memd_stream last_stream{};
  thread_local bool last_valid = false;
  if (last_valid && last_key == key) {
    *out = last_stream;
    return true;
  }
  std::lock_guard lock(s.mu);
  if (s.engine == nullptr) {
    if (s.open_failed) return false;
    memd_engine_options o{};
    o.enable_cuda = 1;
    auto from_env = [](const char* name, std::string& into) {
      if (const char* v = std::getenv(name); v != nullptr && *v != '\0' && into.empty()) into = v;
    };
    from_env("MEMD_TORCH_SOCKET", s.socket);
    from_env("MEMD_TORCH_TOKEN", s.token);
    if (const char* v = std::getenv("MEMD_TORCH_OWNER"); v != nullptr && *v != '\0' && s.owner == "torch")
      s.owner = v;
    o.owner = s.owner.c_str();
    o.lease_socket = s.socket.empty() ? nullptr : s.socket.c_str();
    o.lease_token = s.token.empty() ? nullptr : s.token.c_str();
    if (memd_engine_open(&o, &s.engine) != MEMD_OK) {
      remember_error(s, "memd_engine_open");
      s.open_failed = true;
      return false;
    }
  }
  if (auto it = s.streams.find(key); it != s.streams.end()) {
    *out = it->second;
    last_key = key, last_stream = it->second, last_valid = true;
    return true;
  }
  memd_stream adopted{};
  if (memd_stream_adopt(s.engine, device_name(device).c_str(), native, &adopted) != MEMD_OK) {
    remember_error(s, "memd_stream_adopt");
    return false;
  }
  s.streams.emplace(key, adopted);
  *out = adopted;
  last_key = key, last_stream = adopted, last_valid = true;
  return true;
}

}  // namespace

extern "C" {

// The counters memd_torch_stats fills (clients/python/memd/torch_allocator.py
// mirrors this layout).
struct memd_torch_stats_t {
  std::uint64_t allocated_bytes;
  std::uint64_t reserved_bytes;
  std::uint64_t peak_allocated_bytes;
  std::uint64_t peak_reserved_bytes;
  std::uint64_t live_allocations;
  std::uint64_t stream_syncs;
};

__attribute__((visibility("default"))) void* memd_torch_malloc(std::size_t size, int device, void* stream) {
  State& s = state();
  memd_stream ms{};
  if (!stream_for(s, device, stream, &ms)) return nullptr;
  if (!current_tag().empty()) [[unlikely]]
    return region_malloc(s, size == 0 ? 1 : size, device, ms);
  void* p = nullptr;
  if (memd_allocate_async(s.engine, size == 0 ? 1 : size, ms, &p) != MEMD_OK) {
    std::lock_guard lock(s.mu);
    remember_error(s, "memd_allocate_async");
    return nullptr;
  }
  return p;
}

__attribute__((visibility("default"))) void memd_torch_free(void* ptr, std::size_t, int device, void* stream) {
  if (ptr == nullptr) return;
  State& s = state();
  memd_stream ms{};
  if (!stream_for(s, device, stream, &ms)) return;
  if (memd_free_async(s.engine, ptr, ms) != MEMD_OK) {
    std::lock_guard lock(s.mu);
    remember_error(s, "memd_free_async");
  }
}

// 0 on success; otherwise see memd_torch_last_error().
__attribute__((visibility("default"))) int memd_torch_stats(int device, memd_torch_stats_t* out) {
  State& s = state();
  if (out == nullptr) return -1;
  {
    std::lock_guard lock(s.mu);
    if (s.engine == nullptr) {
      *out = {};
      return 0;  // nothing allocated yet
    }
  }
  memd_pool_usage u{};
  if (memd_get_pool_usage(s.engine, device_name(device).c_str(), &u) != MEMD_OK) {
    std::lock_guard lock(s.mu);
    remember_error(s, "memd_get_pool_usage");
    return -1;
  }
  *out = {u.allocated_bytes, u.reserved_bytes, u.peak_allocated_bytes, u.peak_reserved_bytes, u.live_allocations,
          u.stream_syncs};
  return 0;
}

// Client mode: lease from the daemon at `socket` (NULL or "": in-process)
// as `owner` (NULL: "torch"), proving it with `token` where the daemon has
// tokens. Only before the first allocation: 0, else -1 (the engine is open).
__attribute__((visibility("default"))) int memd_torch_configure(const char* socket, const char* token,
                                                                const char* owner) {
  State& s = state();
  std::lock_guard lock(s.mu);
  if (s.engine != nullptr || s.open_failed) {
    s.error = "memd_torch_configure: the engine is open already (configure before the first CUDA allocation)";
    return -1;
  }
  s.socket = socket != nullptr ? socket : "";
  s.token = token != nullptr ? token : "";
  s.owner = owner != nullptr && *owner != '\0' ? owner : "torch";
  return 0;
}

// Gives back every free page (torch.cuda.empty_cache's counterpart; in
// client mode the daemon gets the leases back). Bytes given back, or -1.
__attribute__((visibility("default"))) long long memd_torch_empty_cache() {
  State& s = state();
  {
    std::lock_guard lock(s.mu);
    if (s.engine == nullptr) return 0;
  }
  std::uint64_t released = 0;
  if (memd_trim(s.engine, &released) != MEMD_OK) {
    std::lock_guard lock(s.mu);
    remember_error(s, "memd_trim");
    return -1;
  }
  return static_cast<long long>(released);
}

// The last failure's message ("" when none); valid until the next failure.
__attribute__((visibility("default"))) const char* memd_torch_last_error() {
  State& s = state();
  std::lock_guard lock(s.mu);
  thread_local std::string copy;
  copy = s.error;
  return copy.c_str();
}

}  // extern "C"

// ----- regions: tagged allocations that sleep and wake -----

namespace {

thread_local std::string thread_tag;  // "" = the GPU's pool

const std::string& current_tag() { return thread_tag; }

// The region of (tag, device), made on first use. Regions live as long as
// the engine, so a thread may keep the last one it used.
bool region_for(State& s, const std::string& tag, int device, memd_region* out) {
  thread_local std::string last_tag;
  thread_local int last_device = -1;
  thread_local memd_region last_region{};
  if (last_device == device && last_tag == tag) {
    *out = last_region;
    return true;
  }
  std::lock_guard lock(s.mu);
  auto key = std::pair{tag, device};
  auto it = s.regions.find(key);
  if (it == s.regions.end()) {
    memd_region made{};
    if (memd_region_create(s.engine, device_name(device).c_str(), tag.c_str(), &made) != MEMD_OK) {
      remember_error(s, "memd_region_create");
      return false;
    }
    it = s.regions.emplace(key, made).first;
  }
  *out = it->second;
  last_tag = tag, last_device = device, last_region = it->second;
  return true;
}

void* region_malloc(State& s, std::size_t size, int device, const memd_stream& stream) {
  memd_region r{};
  if (!region_for(s, thread_tag, device, &r)) return nullptr;
  void* p = nullptr;
  if (memd_region_allocate_async(s.engine, r, size, stream, &p) != MEMD_OK) {
    std::lock_guard lock(s.mu);
    remember_error(s, "memd_region_allocate_async");
    return nullptr;
  }
  return p;
}

// Every region of `tag` (one per GPU it allocated on), in device order.
std::vector<std::pair<int, memd_region>> regions_of(State& s, const char* tag) {
  std::vector<std::pair<int, memd_region>> out;
  std::lock_guard lock(s.mu);
  for (const auto& [key, region] : s.regions)
    if (key.first == tag) out.emplace_back(key.second, region);
  return out;
}

int no_region(State& s, const char* call, const char* tag) {
  std::lock_guard lock(s.mu);
  s.error = std::string(call) + ": no region '" + (tag ? tag : "(null)") + "' (nothing was allocated under it)";
  return -1;
}

}  // namespace

extern "C" {

// The calling thread's allocations from now on come from region `tag` of
// the GPU they are on (made on first use); NULL or "" returns to the GPU's
// pool. Frees need no tag: memd finds every block's pool.
__attribute__((visibility("default"))) void memd_torch_set_region(const char* tag) {
  thread_tag = tag == nullptr ? "" : tag;
}

// Puts every region of `tag` to sleep (keep_contents 0 drops the contents);
// the caller synchronizes the GPUs first. *seconds (may be NULL): the sum
// over the regions. 0 on success; -1 otherwise (memd_torch_last_error()),
// having slept the regions before the failing one.
__attribute__((visibility("default"))) int memd_torch_sleep(const char* tag, int keep_contents, double* seconds) {
  State& s = state();
  if (seconds != nullptr) *seconds = 0;
  if (tag == nullptr || *tag == '\0') return no_region(s, "memd_torch_sleep", tag);
  const auto regions = regions_of(s, tag);
  if (regions.empty()) return no_region(s, "memd_torch_sleep", tag);
  for (const auto& [device, region] : regions) {
    memd_sleep_report report{};
    if (memd_region_sleep(s.engine, region, keep_contents, &report) != MEMD_OK) {
      std::lock_guard lock(s.mu);
      remember_error(s, "memd_region_sleep");
      return -1;
    }
    if (seconds != nullptr) *seconds += report.seconds;
  }
  return 0;
}

// Wakes every region of `tag` at its old addresses, contents checked.
__attribute__((visibility("default"))) int memd_torch_wake(const char* tag, double* seconds) {
  State& s = state();
  if (seconds != nullptr) *seconds = 0;
  if (tag == nullptr || *tag == '\0') return no_region(s, "memd_torch_wake", tag);
  const auto regions = regions_of(s, tag);
  if (regions.empty()) return no_region(s, "memd_torch_wake", tag);
  for (const auto& [device, region] : regions) {
    memd_wake_report report{};
    if (memd_region_wake(s.engine, region, &report) != MEMD_OK) {
      std::lock_guard lock(s.mu);
      remember_error(s, "memd_region_wake");
      return -1;
    }
    if (seconds != nullptr) *seconds += report.seconds;
  }
  return 0;
}

// The counters of region `tag` on cuda:`device` (reserved_bytes 0 while
// asleep); *asleep (may be NULL) 1 while it sleeps. A tag with no region on
// that device: all zeros.
__attribute__((visibility("default"))) int memd_torch_region_stats(const char* tag, int device,
                                                                   memd_torch_stats_t* out, int* asleep) {
  State& s = state();
  if (out == nullptr || tag == nullptr) return -1;
  *out = {};
  if (asleep != nullptr) *asleep = 0;
  memd_region region{};
  {
    std::lock_guard lock(s.mu);
    auto it = s.regions.find(std::pair{std::string(tag), device});
    if (it == s.regions.end()) return 0;
    region = it->second;
  }
  memd_pool_usage u{};
  if (memd_region_usage(s.engine, region, &u, asleep) != MEMD_OK) {
    std::lock_guard lock(s.mu);
    remember_error(s, "memd_region_usage");
    return -1;
  }
  *out = {u.allocated_bytes, u.reserved_bytes, u.peak_allocated_bytes, u.peak_reserved_bytes, u.live_allocations};
  return 0;
}

}  // extern "C"
