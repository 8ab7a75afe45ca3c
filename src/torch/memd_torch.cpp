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
// Thread safety: PyTorch calls from any thread; the stream map is behind a
// mutex, the engine is thread-safe.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "memd/memd.h"

namespace {

struct State {
  std::mutex mu;
  memd_engine* engine = nullptr;
  bool open_failed = false;
  // Client mode, set before the engine opens (empty: in-process).
  std::string socket, token, owner = "torch";
  std::unordered_map<std::uint64_t, memd_stream> streams;  // (device << 48) ^ stream address
  std::string error;
};

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
