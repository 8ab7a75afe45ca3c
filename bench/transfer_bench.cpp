// transfer_bench — memd's transfer engine against CUDA's own copies, on one
// GPU, in one process (issue 13's bars). A plain program, not Google
// Benchmark: each copy is timed whole, memd and its baseline alternate rep by
// rep (so drift hits both alike), and the figure is the median of --reps
// after one warm-up of each.
//
//   LD_LIBRARY_PATH=.gpu/lib .gpu/bin/memd_transfer_bench [--size 1G] [--reps 7] [--json PATH]
//   LD_LIBRARY_PATH=.gpu/lib .gpu/bin/memd_transfer_bench --sweep-only --json PATH
//   memd_transfer_bench --help                      (every flag)
//
// The bars (GB/s = 10^9 bytes copied per second of wall time, from issuing
// the copy to the host knowing it landed: for memd from TransferEngine::submit
// to the completion hook; for CUDA around the call and a synchronize):
//   h2d_pinned    cpu SharedMemory -> cuda VRAM (engine path device_async)
//                 vs cudaMemcpyAsync from cudaHostAlloc'd memory    >= 0.90
//   d2h_pinned    the reverse                                         >= 0.90
//   h2d_pageable  cpu RAM -> VRAM (engine path staged)
//                 vs the pinned H2D baseline                          >= 0.45
//                 and vs cudaMemcpy from malloc'd, touched memory    > 1
//   d2h_pageable  VRAM -> cpu RAM (staged) vs cudaMemcpy to malloc'd (reported; no bar)
//   d2d           VRAM -> VRAM on one GPU vs cudaMemcpyAsync between two cudaMalloc buffers
//                                                                     >= 0.90
//   staging       StagingBuffers::acquire(1) + release on a warm pool <= 1000 ns
// Every memd copy is checked: its whole destination after the warm-up, and
// after each timed copy 64 samples of 4 KiB that were overwritten with wrong
// bytes just before it, so a copy that skips or garbles work cannot pass.
//
// --sweep (after the bars) or --sweep-only: the staged path over a grid of
// chunk size x window x staging buffers x host copy threads (both
// directions), then the device_async paths over chunk x window, so the
// engine's defaults are chosen by measurement.
//
// --host-sim runs everything but CUDA: host:0 stands in for the GPU (counted
// as device memory, as the transfer tests do) and memcpy stands in for the
// baselines. A dry run of the program's plumbing on a machine without a GPU;
// its numbers mean nothing.
//
// Exit status: 0 measured (whatever the verdicts; the table and the JSON
// carry them) or nothing to measure (no GPU, or built without CUDA);
// 1 a copy failed or wrote wrong bytes; 2 bad flags.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "transfer/staging_buffers.hpp"
#include "transfer/transfer_engine.hpp"
#include "transfer_bench_support.hpp"

namespace memd::transfer_bench {
namespace {

using namespace memd::bench;
using bench::Clock;  // the steady clock, not memd::Clock (allocation records' system clock)
using json = nlohmann::ordered_json;

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

// ---------------------------------------------------------------------------
// Options

struct Options {
  std::uint64_t size = kGiB;
  unsigned reps = 7;
  int device = 0;
  std::string json_path;
  TransferOptions engine;  // the engine measured by the bars
  std::uint64_t staging_iterations = 200'000;
  bool bars = true;   // false with --sweep-only
  bool sweep = false;
  std::uint64_t sweep_size = 0;  // 0: --size
  unsigned sweep_reps = 3;
  std::vector<std::uint64_t> sweep_chunks = {2 * kMiB, 4 * kMiB, 8 * kMiB, 16 * kMiB};
  std::vector<unsigned> sweep_windows = {4, 8, 16};
  std::vector<unsigned> sweep_staging = {2, 4, 8};
  std::vector<unsigned> sweep_threads = {1, 3, 7};
  bool host_sim = false;

  std::uint64_t sweep_bytes() const { return sweep_size ? sweep_size : size; }
  std::uint64_t largest_copy() const { return std::max(bars ? size : 0, sweep ? sweep_bytes() : 0); }
};

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: memd_transfer_bench [flags]\n"
               "  memd's transfer engine against cudaMemcpy on one GPU, in one run.\n"
               "  --size SIZE            bytes per copy (default 1G; K/M/G suffixes are powers of 1024)\n"
               "  --reps N               timed copies per figure, median reported (default 7; one warm-up first)\n"
               "  --device N             the GPU, cuda:N (default 0)\n"
               "  --json PATH            also write the JSON to PATH (it is printed as the last line either way)\n"
               " engine (TransferOptions / CopyLimits) for the bars:\n"
               "  --workers N            transfers running at once (default 4)\n"
               "  --chunk SIZE           CopyLimits::chunk_bytes (default 8M)\n"
               "  --window-chunks N      CopyLimits::window_chunks (default 8)\n"
               "  --staging-buffers N    CopyLimits::staging_buffers (default 4)\n"
               "  --host-copy-threads N  helper threads of the staged path's memcpy (default 3)\n"
               "  --staging-iters N      warm acquire(1)+release pairs timed (default 200000)\n"
               " sweep:\n"
               "  --sweep                after the bars, sweep the engine's limits\n"
               "  --sweep-only           the sweep alone (and the staging figure)\n"
               "  --sweep-size SIZE      bytes per copy in the sweep (default --size)\n"
               "  --sweep-reps N         timed copies per sweep cell (default 3)\n"
               "  --sweep-chunks LIST    chunk sizes (default 2M,4M,8M,16M)\n"
               "  --sweep-windows LIST   window_chunks values (default 4,8,16)\n"
               "  --sweep-staging LIST   staging_buffers values (default 2,4,8)\n"
               "  --sweep-threads LIST   host_copy_threads values (default 1,3,7)\n"
               " other:\n"
               "  --host-sim             dry run without a GPU: host:0 as the device, memcpy as baselines\n"
               "  --help\n");
}

template <typename T, typename Parse>
std::optional<std::vector<T>> parse_list(std::string_view text, Parse parse) {
  std::vector<T> out;
  while (!text.empty()) {
    const auto comma = text.find(',');
    auto item = parse(text.substr(0, comma));
    if (!item) return std::nullopt;
    out.push_back(*item);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
  }
  if (out.empty()) return std::nullopt;
  return out;
}

// Fills `o`; returns an exit status when the program should stop here.
std::optional<int> parse_options(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string_view flag = argv[i];
    std::optional<std::string_view> inline_value;
    if (const auto eq = flag.find('='); flag.starts_with("--") && eq != std::string_view::npos) {
      inline_value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
    }
    auto value = [&]() -> std::optional<std::string_view> {
      if (inline_value) return inline_value;
      if (i + 1 < argc) return std::string_view(argv[++i]);
      return std::nullopt;
    };
    auto bad = [&](std::string_view why) {
      std::fprintf(stderr, "memd_transfer_bench: %.*s: %.*s (--help lists the flags)\n",
                   static_cast<int>(flag.size()), flag.data(), static_cast<int>(why.size()), why.data());
      return 2;
    };
    // Each flag taking a value: parse it or stop.
    auto number = [&](unsigned& out, unsigned min) -> bool {
      auto v = value();
      auto n = v ? parse_unsigned(*v) : std::nullopt;
      if (!n || *n < min) return false;
      out = *n;
      return true;
    };
    auto bytes = [&](std::uint64_t& out) -> bool {
      auto v = value();
      auto n = v ? parse_bytes(*v) : std::nullopt;
      if (!n) return false;
      out = *n;
      return true;
    };
    auto numbers = [&](std::vector<unsigned>& out, unsigned min) -> bool {
      auto v = value();
      auto l = v ? parse_list<unsigned>(*v, parse_unsigned) : std::nullopt;
      if (!l || std::any_of(l->begin(), l->end(), [&](unsigned x) { return x < min; })) return false;
      out = *l;
      return true;
    };
    if (flag == "--help" || flag == "-h") {
      usage(stdout);
      return 0;
    } else if (flag == "--size") {
      if (!bytes(o.size)) return bad("needs a size such as 1G or 256M");
    } else if (flag == "--reps") {
      if (!number(o.reps, 1)) return bad("needs a count >= 1");
    } else if (flag == "--device") {
      unsigned d = 0;
      if (!number(d, 0)) return bad("needs a GPU index");
      o.device = static_cast<int>(d);
    } else if (flag == "--json") {
      auto v = value();
      if (!v || v->empty()) return bad("needs a path");
      o.json_path = std::string(*v);
    } else if (flag == "--workers") {
      if (!number(o.engine.workers, 1)) return bad("needs a count >= 1");
    } else if (flag == "--chunk") {
      if (!bytes(o.engine.copy.chunk_bytes)) return bad("needs a size such as 8M");
    } else if (flag == "--window-chunks") {
      if (!number(o.engine.copy.window_chunks, 1)) return bad("needs a count >= 1");
    } else if (flag == "--staging-buffers") {
      if (!number(o.engine.copy.staging_buffers, 1)) return bad("needs a count >= 1");
    } else if (flag == "--host-copy-threads") {
      if (!number(o.engine.host_copy_threads, 0)) return bad("needs a count");
    } else if (flag == "--staging-iters") {
      unsigned n = 0;
      if (!number(n, 100)) return bad("needs a count >= 100");
      o.staging_iterations = n;
    } else if (flag == "--sweep") {
      o.sweep = true;
    } else if (flag == "--sweep-only") {
      o.sweep = true;
      o.bars = false;
    } else if (flag == "--sweep-size") {
      if (!bytes(o.sweep_size)) return bad("needs a size such as 1G");
    } else if (flag == "--sweep-reps") {
      if (!number(o.sweep_reps, 1)) return bad("needs a count >= 1");
    } else if (flag == "--sweep-chunks") {
      auto v = value();
      auto l = v ? parse_list<std::uint64_t>(*v, parse_bytes) : std::nullopt;
      if (!l) return bad("needs sizes such as 2M,4M,8M,16M");
      o.sweep_chunks = *l;
    } else if (flag == "--sweep-windows") {
      if (!numbers(o.sweep_windows, 1)) return bad("needs counts >= 1 such as 4,8,16");
    } else if (flag == "--sweep-staging") {
      if (!numbers(o.sweep_staging, 1)) return bad("needs counts >= 1 such as 2,4,8");
    } else if (flag == "--sweep-threads") {
      if (!numbers(o.sweep_threads, 0)) return bad("needs counts such as 1,3,7");
    } else if (flag == "--host-sim") {
      o.host_sim = true;
    } else {
      return bad("unknown flag");
    }
  }
  return std::nullopt;
}

json engine_json(const TransferOptions& e) {
  return {{"workers", e.workers},
          {"chunk_bytes", e.copy.chunk_bytes},
          {"window_chunks", e.copy.window_chunks},
          {"staging_buffers", e.copy.staging_buffers},
          {"host_copy_threads", resolved_copy_threads(e.host_copy_threads)}};
}

// ---------------------------------------------------------------------------
// memd's side: a catalog, a manager, allocations and an engine.

struct Timed {
  double seconds = 0;
  std::optional<CopyPath> path;
};

class MemdRig {
 public:
  static Result<std::unique_ptr<MemdRig>> create(const Options& o) {
    BackendOptions bo;
    DeviceId gpu = DeviceId::cuda(o.device);
    if (o.host_sim) {
      // Two "VRAM" allocations of the largest copy on host:0, and room to spare.
      bo.enable_cuda = false;
      bo.host_device_sizes = {(2 * o.largest_copy() + 256 * kMiB + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB)};
      gpu = DeviceId::host(0);
    } else {
      bo.enable_cuda = true;
      bo.host_device_sizes.clear();
    }
    auto catalog = DeviceCatalog::discover(bo);
    if (!catalog) return fail(catalog.error());
    auto info = (*catalog)->info(gpu);
    if (!info) return fail(info.error());
    Backend* host = nullptr;
    for (const auto& b : (*catalog)->backends())
      if (b->name() == "host") host = b.get();
    if (host == nullptr) return fail(ErrorCode::internal, "the catalog has no host backend");
    auto rig = std::unique_ptr<MemdRig>(new MemdRig);
    rig->catalog_ = std::move(*catalog);
    rig->manager_ = std::make_unique<MemoryManager>(*rig->catalog_);
    rig->host_backend_ = host;
    rig->gpu_ = gpu;
    rig->gpu_name_ = info->name;
    rig->stage_host_devices_ = o.host_sim;
    return rig;
  }

  ~MemdRig() {
    engine_.reset();  // first: it holds allocations while copies run
    for (const auto& id : allocations_) (void)manager_->deallocate(id);
  }

  MemoryManager& manager() { return *manager_; }
  DeviceId gpu() const { return gpu_; }
  const std::string& gpu_name() const { return gpu_name_; }

  // A fresh engine with these options (the old one, if any, goes first).
  void start_engine(TransferOptions options) {
    engine_.reset();
    options.copy.stage_host_devices = stage_host_devices_;
    engine_ = std::make_unique<TransferEngine>(*manager_, *host_backend_, options);
    finished_.attach(*engine_);
  }

  Result<AllocationRecord> allocate(std::uint64_t bytes, DeviceId device, MemoryType type, std::string name) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = device;
    r.memory_type = type;
    r.owner = "transfer_bench";
    r.name = std::move(name);
    auto rec = manager_->allocate(r);
    if (!rec) return fail(rec.error());
    allocations_.push_back(rec->id);
    if (auto t = bytes_.track(*manager_, *rec); !t) return fail(t.error());
    return rec;
  }

  // The byte pattern in an allocation (PatternBytes).
  Result<void> fill(const AllocationRecord& a, std::uint64_t seed, std::uint64_t bytes) {
    return bytes_.fill(*engine_, a.id, seed, bytes);
  }
  Result<void> check_all(const AllocationRecord& a, std::uint64_t seed, std::uint64_t bytes) {
    return bytes_.check_all(*engine_, a.id, seed, bytes);
  }
  Result<void> spoil(const AllocationRecord& a, std::uint64_t seed, const std::vector<std::uint64_t>& offsets,
                     std::uint64_t bytes) {
    return bytes_.spoil(*engine_, a.id, seed, offsets, bytes);
  }
  Result<void> check_samples(const AllocationRecord& a, std::uint64_t seed, const std::vector<std::uint64_t>& offsets,
                             std::uint64_t bytes) {
    return bytes_.check_samples(*engine_, a.id, seed, offsets, bytes);
  }

  // One transfer of the first `bytes` of src into dst, through submit() and
  // the completion hook; the time from just before submit to the hook.
  Result<Timed> transfer(const AllocationRecord& src, const AllocationRecord& dst, std::uint64_t bytes) {
    TransferSpec spec;
    spec.source = src.id;
    spec.destination = dst.id;
    spec.size = bytes;
    const auto t0 = Clock::now();
    auto submitted = engine_->submit("transfer_bench", spec);
    if (!submitted) return fail(submitted.error());
    auto finished = finished_.take(std::span(&submitted->id, 1), std::chrono::minutes(5));
    if (!finished)
      return fail(ErrorCode::internal, "transfer {} did not finish in 5 minutes", submitted->id.to_string());
    const Finished& done = finished->front();
    if (done.report.status != MemoryTransferStatus::Completed)
      return fail(ErrorCode::internal, "transfer ended {} after {} of {} bytes: {}", to_string(done.report.status),
                  done.report.bytes_done, done.report.size_bytes,
                  done.report.error ? done.report.error->message : "no reason given");
    return Timed{seconds_between(t0, done.at), done.report.path};
  }

 private:
  MemdRig() = default;

  std::unique_ptr<DeviceCatalog> catalog_;
  std::unique_ptr<MemoryManager> manager_;
  Backend* host_backend_ = nullptr;
  DeviceId gpu_;
  std::string gpu_name_;
  bool stage_host_devices_ = false;
  std::vector<AllocationId> allocations_;
  PatternBytes bytes_;
  CompletionLog finished_;                  // before the engine: its hook writes here
  std::unique_ptr<TransferEngine> engine_;  // after the manager: destroyed first
};

// ---------------------------------------------------------------------------
// The baselines: the same copies done the plain way.

enum class Copy : std::uint8_t { H2DPinned, D2HPinned, H2DPageable, D2HPageable, D2D };
constexpr std::array kCopies = {Copy::H2DPinned, Copy::D2HPinned, Copy::H2DPageable, Copy::D2HPageable, Copy::D2D};

std::string_view name_of(Copy c) {
  switch (c) {
    case Copy::H2DPinned: return "h2d_pinned";
    case Copy::D2HPinned: return "d2h_pinned";
    case Copy::H2DPageable: return "h2d_pageable";
    case Copy::D2HPageable: return "d2h_pageable";
    case Copy::D2D: return "d2d";
  }
  return "?";
}

class Baselines {
 public:
  virtual ~Baselines() = default;
  virtual std::string describe(Copy c) const = 0;
  virtual json machine() const = 0;
  // One copy of `bytes` (at most the size given at creation); wall seconds.
  virtual Result<double> run(Copy c, std::uint64_t bytes) = 0;
  // The device's own time for the last run(), where there is one (cudaEvent).
  virtual std::optional<double> last_device_seconds() const { return std::nullopt; }
};

// host-sim: memcpy between two touched heap buffers, for every copy.
class MemcpyBaselines final : public Baselines {
 public:
  explicit MemcpyBaselines(std::uint64_t bytes) : a_(bytes, std::byte{1}), b_(bytes, std::byte{2}) {}
  std::string describe(Copy) const override { return "memcpy (host-sim)"; }
  json machine() const override { return {{"gpu", "none (host-sim: host:0 stands in)"}}; }
  Result<double> run(Copy c, std::uint64_t bytes) override {
    const bool forward = c == Copy::H2DPinned || c == Copy::H2DPageable || c == Copy::D2D;
    const auto t0 = Clock::now();
    if (forward) std::memcpy(b_.data(), a_.data(), bytes);
    else std::memcpy(a_.data(), b_.data(), bytes);
    return seconds_between(t0, Clock::now());
  }

 private:
  std::vector<std::byte> a_, b_;
};

#if defined(MEMD_WITH_CUDA)

class CudaBaselines final : public Baselines {
 public:
  static Result<std::unique_ptr<CudaBaselines>> create(int device, std::uint64_t bytes) {
    auto b = std::unique_ptr<CudaBaselines>(new CudaBaselines(device, bytes));
    BENCH_CUDA(cudaSetDevice(device));
    BENCH_CUDA(cudaGetDeviceProperties(&b->props_, device));
    BENCH_CUDA(cudaDriverGetVersion(&b->driver_));
    BENCH_CUDA(cudaRuntimeGetVersion(&b->runtime_));
    BENCH_CUDA(cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking));
    BENCH_CUDA(cudaEventCreate(&b->start_));
    BENCH_CUDA(cudaEventCreate(&b->stop_));
    BENCH_CUDA(cudaHostAlloc(&b->pinned_, bytes, cudaHostAllocDefault));
    b->pageable_ = std::malloc(bytes);
    if (b->pageable_ == nullptr) return fail(ErrorCode::out_of_memory, "malloc({}) failed", bytes);
    std::memset(b->pageable_, 0x5a, bytes);  // every page touched before it is timed
    std::memset(b->pinned_, 0xa5, bytes);
    BENCH_CUDA(cudaMalloc(&b->device_a_, bytes));
    BENCH_CUDA(cudaMalloc(&b->device_b_, bytes));
    BENCH_CUDA(cudaMemset(b->device_a_, 0x3c, bytes));
    BENCH_CUDA(cudaMemset(b->device_b_, 0xc3, bytes));
    BENCH_CUDA(cudaDeviceSynchronize());
    return b;
  }

  ~CudaBaselines() override {
    (void)cudaSetDevice(device_);
    (void)cudaDeviceSynchronize();
    if (device_b_) (void)cudaFree(device_b_);
    if (device_a_) (void)cudaFree(device_a_);
    if (pinned_) (void)cudaFreeHost(pinned_);
    std::free(pageable_);
    if (stop_) (void)cudaEventDestroy(stop_);
    if (start_) (void)cudaEventDestroy(start_);
    if (stream_) (void)cudaStreamDestroy(stream_);
  }

  std::string describe(Copy c) const override {
    switch (c) {
      case Copy::H2DPinned: return "cudaMemcpyAsync H2D, cudaHostAlloc'd";
      case Copy::D2HPinned: return "cudaMemcpyAsync D2H, cudaHostAlloc'd";
      case Copy::H2DPageable: return "cudaMemcpy H2D, malloc'd (pageable)";
      case Copy::D2HPageable: return "cudaMemcpy D2H, malloc'd (pageable)";
      case Copy::D2D: return "cudaMemcpyAsync D2D, two cudaMallocs";
    }
    return "?";
  }

  json machine() const override {
    return {{"gpu", props_.name},
            {"device", fmt::format("cuda:{}", device_)},
            {"pci_bus", props_.pciBusID},
            {"cuda_driver", driver_},
            {"cuda_runtime", runtime_}};
  }

  Result<double> run(Copy c, std::uint64_t bytes) override {
    if (bytes > bytes_) return fail(ErrorCode::invalid_argument, "baseline copy of {} > {} bytes", bytes, bytes_);
    BENCH_CUDA(cudaSetDevice(device_));
    switch (c) {
      case Copy::H2DPinned: return async(device_a_, pinned_, bytes, cudaMemcpyHostToDevice);
      case Copy::D2HPinned: return async(pinned_, device_a_, bytes, cudaMemcpyDeviceToHost);
      case Copy::H2DPageable: return blocking(device_a_, pageable_, bytes, cudaMemcpyHostToDevice);
      case Copy::D2HPageable: return blocking(pageable_, device_a_, bytes, cudaMemcpyDeviceToHost);
      case Copy::D2D: return async(device_b_, device_a_, bytes, cudaMemcpyDeviceToDevice);
    }
    return fail(ErrorCode::internal, "unknown copy");
  }

  std::optional<double> last_device_seconds() const override { return device_seconds_; }

 private:
  CudaBaselines(int device, std::uint64_t bytes) : device_(device), bytes_(bytes) {}

  // On its own stream; wall time around the call and the stream's
  // synchronize, and the events' time between them.
  Result<double> async(void* dst, const void* src, std::uint64_t bytes, cudaMemcpyKind kind) {
    device_seconds_.reset();
    BENCH_CUDA(cudaEventRecord(start_, stream_));
    const auto t0 = Clock::now();
    BENCH_CUDA(cudaMemcpyAsync(dst, src, bytes, kind, stream_));
    BENCH_CUDA(cudaEventRecord(stop_, stream_));
    BENCH_CUDA(cudaStreamSynchronize(stream_));
    const auto t1 = Clock::now();
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start_, stop_));
    device_seconds_ = ms / 1e3;
    return seconds_between(t0, t1);
  }

  // cudaMemcpy on pageable memory may return before the DMA of its last
  // piece lands (H2D): the device synchronize is inside the time.
  Result<double> blocking(void* dst, const void* src, std::uint64_t bytes, cudaMemcpyKind kind) {
    device_seconds_.reset();
    const auto t0 = Clock::now();
    BENCH_CUDA(cudaMemcpy(dst, src, bytes, kind));
    BENCH_CUDA(cudaDeviceSynchronize());
    return seconds_between(t0, Clock::now());
  }

  const int device_;
  const std::uint64_t bytes_;
  cudaDeviceProp props_{};
  int driver_ = 0, runtime_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  void* pinned_ = nullptr;
  void* pageable_ = nullptr;
  void* device_a_ = nullptr;
  void* device_b_ = nullptr;
  std::optional<double> device_seconds_;
};

#endif  // MEMD_WITH_CUDA

// ---------------------------------------------------------------------------
// Measuring one copy

// What a memd copy reads and writes: the source holds pattern `seed`.
struct Leg {
  Copy copy;
  const AllocationRecord* source;
  const AllocationRecord* destination;
  CopyPath expected;
  std::uint64_t seed;
};

struct Measured {
  Copy copy = Copy::H2DPinned;
  std::uint64_t bytes = 0;
  std::vector<double> memd_seconds, base_seconds, base_device_seconds;
  std::string memd_path;  // as the transfer reported it
  std::string error;      // the copy failed, took another path, or wrote wrong bytes
  double memd_gbps() const { return gbps(bytes, median(memd_seconds)); }
  double base_gbps() const { return gbps(bytes, median(base_seconds)); }
};

void progress(const std::string& line) {
  std::fprintf(stderr, "[transfer_bench] %s\n", line.c_str());
  std::fflush(stderr);
}

// memd's copy of `leg`: a warm-up (then, if `check_whole`, every byte of the
// destination checked), then `reps` timed copies, each with its samples
// spoiled before and checked after. `paired` (the baseline), when given,
// runs right before each copy, the warm-up included. The source must hold
// its pattern already.
void measure(MemdRig& rig, const Leg& leg, std::uint64_t bytes, unsigned reps, bool check_whole, Measured& m,
             const std::function<Result<void>()>& paired = {}) {
  m.copy = leg.copy;
  m.bytes = bytes;
  auto stop = [&](std::string_view when, const Error& e) { m.error = fmt::format("{}: {}", when, e.message); };
  if (paired)
    if (auto b = paired(); !b) return stop("baseline warm-up", b.error());
  auto warm = rig.transfer(*leg.source, *leg.destination, bytes);
  if (!warm) return stop("memd warm-up", warm.error());
  m.memd_path = warm->path ? std::string(to_string(*warm->path)) : "none";
  if (warm->path != leg.expected) {
    m.error = fmt::format("the engine took path {}, not {}", m.memd_path, to_string(leg.expected));
    return;
  }
  if (check_whole)
    if (auto c = rig.check_all(*leg.destination, leg.seed, bytes); !c) return stop("after the warm-up", c.error());
  for (unsigned rep = 0; rep < reps; ++rep) {
    if (paired)
      if (auto b = paired(); !b) return stop(fmt::format("baseline rep {}", rep), b.error());
    const auto samples = sample_offsets(bytes, rep);
    if (auto s = rig.spoil(*leg.destination, leg.seed, samples, bytes); !s) return stop("spoiling samples", s.error());
    auto t = rig.transfer(*leg.source, *leg.destination, bytes);
    if (!t) return stop(fmt::format("memd rep {}", rep), t.error());
    m.memd_seconds.push_back(t->seconds);
    if (auto c = rig.check_samples(*leg.destination, leg.seed, samples, bytes); !c)
      return stop(fmt::format("after memd rep {}", rep), c.error());
  }
}

// memd's copy with its baseline interleaved.
Measured measure_with_baseline(MemdRig& rig, Baselines& base, const Leg& leg, std::uint64_t bytes, unsigned reps) {
  Measured m;
  bool warmed = false;
  measure(rig, leg, bytes, reps, /*check_whole=*/true, m, [&]() -> Result<void> {
    auto s = base.run(leg.copy, bytes);
    if (!s) return fail(s.error());
    if (!warmed) {  // the warm-up is not kept
      warmed = true;
      return {};
    }
    m.base_seconds.push_back(*s);
    if (auto d = base.last_device_seconds()) m.base_device_seconds.push_back(*d);
    return {};
  });
  return m;
}

// Baseline alone: the median of `reps` after a warm-up.
Result<double> baseline_seconds(Baselines& base, Copy c, std::uint64_t bytes, unsigned reps) {
  if (auto w = base.run(c, bytes); !w) return fail(w.error());
  std::vector<double> s;
  for (unsigned i = 0; i < reps; ++i) {
    auto r = base.run(c, bytes);
    if (!r) return fail(r.error());
    s.push_back(*r);
  }
  return median(s);
}

// ---------------------------------------------------------------------------
// Staging buffers: one acquire(1) + release on a warm pool.

struct StagingFigure {
  std::uint64_t buffer_bytes = 0;
  double cold_us = 0;       // the first acquisition: the pinned pool grows
  double warm_ns = 0;       // median over batches, per acquire+release
  double warm_p99_ns = 0;
  std::uint64_t pairs = 0;  // timed pairs
  std::string error;
  bool pass() const { return error.empty() && warm_ns <= 1000.0; }
};

StagingFigure measure_staging(MemoryManager& manager, std::uint64_t buffer_bytes, std::uint64_t iterations) {
  StagingFigure f;
  f.buffer_bytes = buffer_bytes;
  StagingBuffers staging(manager, buffer_bytes);
  const auto t0 = Clock::now();
  auto first = staging.acquire(1);
  f.cold_us = seconds_between(t0, Clock::now()) * 1e6;
  if (!first) {
    f.error = first.error().message;
    return f;
  }
  first->release();
  for (int i = 0; i < 1000; ++i) {  // warm
    auto lease = staging.acquire(1);
    if (!lease) {
      f.error = lease.error().message;
      return f;
    }
  }
  constexpr std::uint64_t kBatch = 100;
  std::vector<double> per_pair;
  for (std::uint64_t b = 0; b < std::max<std::uint64_t>(1, iterations / kBatch); ++b) {
    const auto start = Clock::now();
    for (std::uint64_t i = 0; i < kBatch; ++i) {
      auto lease = staging.acquire(1);
      if (!lease) [[unlikely]] {
        f.error = lease.error().message;
        return f;
      }
      lease->release();
    }
    per_pair.push_back(seconds_between(start, Clock::now()) * 1e9 / kBatch);
    f.pairs += kBatch;
  }
  f.warm_ns = median(per_pair);
  f.warm_p99_ns = percentile(per_pair, 0.99);
  return f;
}

// ---------------------------------------------------------------------------
// The run

struct Allocations {
  AllocationRecord pinned, pageable_in, pageable_out, vram_a, vram_b;
};

Result<Allocations> allocate_all(MemdRig& rig, std::uint64_t bytes) {
  Allocations a;
  struct Want {
    AllocationRecord* out;
    DeviceId device;
    MemoryType type;
    const char* name;
  };
  const Want wants[] = {
      {&a.pinned, DeviceId::cpu(), MemoryType::SharedMemory, "pinned"},
      {&a.pageable_in, DeviceId::cpu(), MemoryType::RAM, "pageable_in"},
      {&a.pageable_out, DeviceId::cpu(), MemoryType::RAM, "pageable_out"},
      {&a.vram_a, rig.gpu(), MemoryType::VRAM, "vram_a"},
      {&a.vram_b, rig.gpu(), MemoryType::VRAM, "vram_b"},
  };
  for (const auto& w : wants) {
    auto r = rig.allocate(bytes, w.device, w.type, w.name);
    if (!r)
      return fail(r.error().code, "allocating {} ({} {} on {}): {}", w.name, format_size(bytes),
                  to_string(w.type), w.device.to_string(), r.error().message);
    *w.out = *r;
  }
  return a;
}

// The legs of the bars, each with its own pattern.
std::vector<Leg> bar_legs(const Allocations& a) {
  return {
      {Copy::H2DPinned, &a.pinned, &a.vram_a, CopyPath::DeviceAsync, 101},
      {Copy::D2HPinned, &a.vram_b, &a.pinned, CopyPath::DeviceAsync, 102},
      {Copy::H2DPageable, &a.pageable_in, &a.vram_a, CopyPath::Staged, 103},
      {Copy::D2HPageable, &a.vram_b, &a.pageable_out, CopyPath::Staged, 104},
      {Copy::D2D, &a.vram_a, &a.vram_b, CopyPath::DeviceAsync, 105},
  };
}

struct Bar {
  std::string_view name;
  Copy memd, baseline;
  double ratio;         // memd GB/s / baseline GB/s must reach this ...
  bool strict = false;  // ... or exceed it
  bool report_only = false;
};

constexpr std::array<Bar, 7> kBars = {{
    {"h2d_pinned", Copy::H2DPinned, Copy::H2DPinned, 0.90},
    {"d2h_pinned", Copy::D2HPinned, Copy::D2HPinned, 0.90},
    {"h2d_pageable_vs_pinned", Copy::H2DPageable, Copy::H2DPinned, 0.45},
    {"h2d_pageable_vs_pageable", Copy::H2DPageable, Copy::H2DPageable, 1.0, true},
    {"d2h_pageable_vs_pageable", Copy::D2HPageable, Copy::D2HPageable, 1.0, true, true},
    {"d2h_pageable_vs_pinned", Copy::D2HPageable, Copy::D2HPinned, 0.45, false, true},
    {"d2d", Copy::D2D, Copy::D2D, 0.90},
}};

std::string fmt_size(std::uint64_t bytes) {
  if (bytes % kGiB == 0) return fmt::format("{} GiB", bytes / kGiB);
  if (bytes % kMiB == 0) return fmt::format("{} MiB", bytes / kMiB);
  return format_size(bytes);
}

std::string fmt_engine(const TransferOptions& e) {
  return fmt::format("workers {}, chunk {}, window {} chunks, staging {} x chunk, host copy threads {}", e.workers,
                     fmt_size(e.copy.chunk_bytes), e.copy.window_chunks, e.copy.staging_buffers, resolved_copy_threads(e.host_copy_threads));
}

// Runs the bars; fills `out` ("copies", "bars"); false when a copy failed.
bool run_bars(const Options& o, MemdRig& rig, Baselines& base, const Allocations& a, json& out, bool& all_pass) {
  rig.start_engine(o.engine);
  std::array<Measured, kCopies.size()> measured{};
  bool ok = true;
  for (const auto& leg : bar_legs(a)) {
    progress(fmt::format("{}: filling the source, warm-up, {} reps", name_of(leg.copy), o.reps));
    Measured& m = measured[static_cast<std::size_t>(leg.copy)];
    if (auto f = rig.fill(*leg.source, leg.seed, o.size); !f) {
      m.copy = leg.copy;
      m.error = "filling the source: " + f.error().message;
    } else {
      m = measure_with_baseline(rig, base, leg, o.size, o.reps);
    }
    if (!m.error.empty()) {
      ok = false;
      progress(fmt::format("{}: ERROR {}", name_of(leg.copy), m.error));
    }
  }

  std::printf("\n%-26s %-13s %10s  %-38s %10s %7s  %-7s %s\n", "bar", "memd path", "memd GB/s", "baseline",
              "base GB/s", "ratio", "needs", "verdict");
  json bars = json::array();
  for (const auto& bar : kBars) {
    const Measured& m = measured[static_cast<std::size_t>(bar.memd)];
    const Measured& b = measured[static_cast<std::size_t>(bar.baseline)];
    const double ratio = b.base_gbps() > 0 ? m.memd_gbps() / b.base_gbps() : 0.0;
    const bool error = !m.error.empty() || !b.error.empty();
    const bool pass = !error && (bar.strict ? ratio > bar.ratio : ratio >= bar.ratio);
    std::string verdict = error ? "ERROR" : bar.report_only ? (pass ? "info (met)" : "info (not met)")
                                                            : (pass ? "PASS" : "FAIL");
    if (!bar.report_only) all_pass = all_pass && pass;
    const std::string needs = fmt::format("{}{:.2f}", bar.strict ? "> " : ">= ", bar.ratio);
    std::printf("%-26.*s %-13s %10.2f  %-38s %10.2f %7.3f  %-7s %s\n", static_cast<int>(bar.name.size()),
                bar.name.data(), m.memd_path.c_str(), m.memd_gbps(), base.describe(bar.baseline).c_str(),
                b.base_gbps(), ratio, needs.c_str(), verdict.c_str());
    bars.push_back({{"name", bar.name},
                    {"memd", name_of(bar.memd)},
                    {"baseline", name_of(bar.baseline)},
                    {"ratio", ratio},
                    {"needs", bar.ratio},
                    {"strict", bar.strict},
                    {"report_only", bar.report_only},
                    {"pass", pass},
                    {"verdict", verdict}});
  }
  json copies = json::object();
  for (const auto& m : measured) {
    json c = {{"bytes", m.bytes},
              {"memd_path", m.memd_path},
              {"memd_gbps", m.memd_gbps()},
              {"memd_seconds", m.memd_seconds},
              {"verified", m.error.empty()},
              {"baseline", base.describe(m.copy)},
              {"baseline_gbps", m.base_gbps()},
              {"baseline_seconds", m.base_seconds}};
    if (!m.base_device_seconds.empty())
      c["baseline_event_gbps"] = gbps(m.bytes, median(m.base_device_seconds));
    if (!m.error.empty()) c["error"] = m.error;
    copies[std::string(name_of(m.copy))] = std::move(c);
  }
  out["copies"] = std::move(copies);
  out["bars"] = std::move(bars);
  return ok;
}

// The sweep: the staged path over chunk x window x ring x threads, then the
// device_async paths over chunk x window. Fills out["sweep"].
bool run_sweep(const Options& o, MemdRig& rig, Baselines& base, const Allocations& a, json& out) {
  const std::uint64_t bytes = o.sweep_bytes();
  const unsigned reps = o.sweep_reps;
  bool ok = true;
  json sweep = {{"bytes", bytes}, {"reps", reps}};

  progress("sweep: baselines");
  json baselines = json::object();
  std::array<double, kCopies.size()> base_gbps{};
  for (Copy c : kCopies) {
    auto s = baseline_seconds(base, c, bytes, reps);
    if (!s) {
      progress(fmt::format("sweep: baseline {} failed: {}", name_of(c), s.error().message));
      return false;
    }
    base_gbps[static_cast<std::size_t>(c)] = gbps(bytes, *s);
    baselines[std::string(name_of(c))] = {{"what", base.describe(c)}, {"gbps", gbps(bytes, *s)}};
  }
  sweep["baselines"] = baselines;
  auto base_of = [&](Copy c) { return base_gbps[static_cast<std::size_t>(c)]; };

  // Sources hold their patterns for the whole sweep; destinations are only written.
  rig.start_engine(o.engine);
  const Leg h2d{Copy::H2DPageable, &a.pageable_in, &a.vram_a, CopyPath::Staged, 201};
  const Leg d2h{Copy::D2HPageable, &a.vram_b, &a.pageable_out, CopyPath::Staged, 202};
  // pinned is h2d_pinned's source and d2h_pinned's destination: both carry
  // vram_b's pattern 202, so a d2h_pinned copy leaves h2d_pinned's source as
  // it was. d2d reads vram_b too.
  const Leg h2d_pinned{Copy::H2DPinned, &a.pinned, &a.vram_a, CopyPath::DeviceAsync, 202};
  const Leg d2h_pinned{Copy::D2HPinned, &a.vram_b, &a.pinned, CopyPath::DeviceAsync, 202};
  const Leg d2d{Copy::D2D, &a.vram_b, &a.vram_a, CopyPath::DeviceAsync, 202};
  for (const Leg* leg : {&h2d, &d2h, &h2d_pinned})
    if (auto f = rig.fill(*leg->source, leg->seed, bytes); !f) {
      progress("sweep: filling a source failed: " + f.error().message);
      return false;
    }

  // One cell: the engine rebuilt with `e`, each leg measured; GB/s or 0 with the error kept.
  auto cell = [&](const TransferOptions& e, std::initializer_list<const Leg*> legs, json& row) {
    rig.start_engine(e);
    row["engine"] = engine_json(e);
    std::vector<double> out_gbps;
    for (const Leg* leg : legs) {
      Measured m;
      measure(rig, *leg, bytes, reps, /*check_whole=*/false, m);
      const std::string key(name_of(leg->copy));
      if (!m.error.empty()) {
        ok = false;
        row[key] = {{"error", m.error}};
        progress(fmt::format("sweep: {} with {}: ERROR {}", key, fmt_engine(e), m.error));
        out_gbps.push_back(0);
        continue;
      }
      row[key] = {{"gbps", m.memd_gbps()}, {"seconds", m.memd_seconds}};
      out_gbps.push_back(m.memd_gbps());
    }
    return out_gbps;
  };

  // Staged path.
  const std::size_t cells = o.sweep_chunks.size() * o.sweep_windows.size() * o.sweep_staging.size() *
                            o.sweep_threads.size();
  std::printf("\nstaged path sweep: cpu RAM <-> %s, %s a copy, median of %u after a warm-up\n",
              rig.gpu().to_string().c_str(), fmt_size(bytes).c_str(), reps);
  std::printf("baselines: pinned H2D %.2f / D2H %.2f GB/s, pageable cudaMemcpy H2D %.2f / D2H %.2f GB/s\n",
              base_of(Copy::H2DPinned), base_of(Copy::D2HPinned), base_of(Copy::H2DPageable),
              base_of(Copy::D2HPageable));
  std::printf("%8s %6s %7s %7s  %9s %8s  %9s %8s\n", "chunk", "window", "staging", "threads", "H2D GB/s",
              "/pinned", "D2H GB/s", "/pinned");
  json staged = json::array();
  struct Best {
    double score = -1;
    std::string what;
  } best_h2d, best_d2h, best_both;
  std::size_t done = 0;
  for (auto chunk : o.sweep_chunks)
    for (auto window : o.sweep_windows)
      for (auto ring : o.sweep_staging)
        for (auto threads : o.sweep_threads) {
          progress(fmt::format("sweep: staged cell {}/{}", ++done, cells));
          TransferOptions e = o.engine;
          e.copy.chunk_bytes = chunk;
          e.copy.window_chunks = window;
          e.copy.staging_buffers = ring;
          e.host_copy_threads = threads;
          json row;
          const auto g = cell(e, {&h2d, &d2h}, row);
          const double rh = g[0] / base_of(Copy::H2DPinned), rd = g[1] / base_of(Copy::D2HPinned);
          row["h2d_pageable"]["ratio_to_pinned"] = rh;
          row["d2h_pageable"]["ratio_to_pinned"] = rd;
          staged.push_back(row);
          std::printf("%8s %6u %7u %7u  %9.2f %8.3f  %9.2f %8.3f\n", fmt_size(chunk).c_str(), window, ring, threads,
                      g[0], rh, g[1], rd);
          std::fflush(stdout);
          const std::string what = fmt::format("chunk {}, window {}, staging {}, threads {}", fmt_size(chunk), window,
                                               ring, threads);
          if (g[0] > best_h2d.score) best_h2d = {g[0], what};
          if (g[1] > best_d2h.score) best_d2h = {g[1], what};
          if (std::min(rh, rd) > best_both.score) best_both = {std::min(rh, rd), what};
        }
  std::printf("best H2D:  %s: %.2f GB/s (%.3f of pinned)\n", best_h2d.what.c_str(), best_h2d.score,
              best_h2d.score / base_of(Copy::H2DPinned));
  std::printf("best D2H:  %s: %.2f GB/s (%.3f of pinned)\n", best_d2h.what.c_str(), best_d2h.score,
              best_d2h.score / base_of(Copy::D2HPinned));
  std::printf("best both: %s: the slower direction at %.3f of pinned\n", best_both.what.c_str(), best_both.score);
  sweep["staged"] = std::move(staged);
  sweep["best"] = {{"h2d_pageable", best_h2d.what}, {"d2h_pageable", best_d2h.what}, {"both", best_both.what}};

  // device_async paths: the chunk size is shared with them.
  std::printf("\ndevice_async sweep: pinned cpu <-> %s and %s -> itself, %s a copy, median of %u\n",
              rig.gpu().to_string().c_str(), rig.gpu().to_string().c_str(), fmt_size(bytes).c_str(), reps);
  std::printf("%8s %6s  %9s %7s  %9s %7s  %10s %7s\n", "chunk", "window", "H2D GB/s", "/base", "D2H GB/s", "/base",
              "D2D GB/s", "/base");
  json device_async = json::array();
  for (auto chunk : o.sweep_chunks)
    for (auto window : o.sweep_windows) {
      TransferOptions e = o.engine;
      e.copy.chunk_bytes = chunk;
      e.copy.window_chunks = window;
      json row;
      const auto g = cell(e, {&h2d_pinned, &d2h_pinned, &d2d}, row);
      const double r0 = g[0] / base_of(Copy::H2DPinned), r1 = g[1] / base_of(Copy::D2HPinned),
                   r2 = g[2] / base_of(Copy::D2D);
      row["h2d_pinned"]["ratio_to_pinned"] = r0;
      row["d2h_pinned"]["ratio_to_pinned"] = r1;
      row["d2d"]["ratio_to_baseline"] = r2;
      device_async.push_back(row);
      std::printf("%8s %6u  %9.2f %7.3f  %9.2f %7.3f  %10.2f %7.3f\n", fmt_size(chunk).c_str(), window, g[0], r0,
                  g[1], r1, g[2], r2);
      std::fflush(stdout);
    }
  sweep["device_async"] = std::move(device_async);
  out["sweep"] = std::move(sweep);
  return ok;
}

int run(const Options& o) {
  const std::uint64_t bytes = o.largest_copy();
  std::unique_ptr<Baselines> base;
  if (o.host_sim) {
    base = std::make_unique<MemcpyBaselines>(bytes);
  } else {
#if defined(MEMD_WITH_CUDA)
    int count = 0;
    if (const auto e = cudaGetDeviceCount(&count); e != cudaSuccess || count <= o.device) {
      std::printf("memd_transfer_bench: no CUDA device cuda:%d (%s); nothing measured\n", o.device,
                  e != cudaSuccess ? cudaGetErrorString(e) : fmt::format("{} found", count).c_str());
      return 0;
    }
    // First: the CUDA context exists before memd's first pinned block, so
    // the staging figure's cold acquisition is memd's own cost.
    auto cuda = CudaBaselines::create(o.device, bytes);
    if (!cuda) {
      std::fprintf(stderr, "memd_transfer_bench: baselines: %s\n", cuda.error().message.c_str());
      return 1;
    }
    base = std::move(*cuda);
#else
    std::printf(
        "memd_transfer_bench: built without CUDA (MEMD_WITH_CUDA off): it needs a CUDA build to measure "
        "anything; nothing measured (--host-sim runs a dry run on host memory)\n");
    return 0;
#endif
  }

  auto created = MemdRig::create(o);
  if (!created) {
    std::fprintf(stderr, "memd_transfer_bench: memd: %s\n", created.error().message.c_str());
    return 1;
  }
  MemdRig& rig = **created;

  json out = {{"bench", "memd_transfer_bench"},
              {"mode", o.host_sim ? "host-sim" : "cuda"},
              {"machine", base->machine()},
              {"memd_device", rig.gpu().to_string()},
              {"memd_device_name", rig.gpu_name()},
              {"engine", engine_json(o.engine)}};
  if (o.bars) {
    out["size_bytes"] = o.size;
    out["reps"] = o.reps;
  }
  std::printf("memd_transfer_bench on %s (%s)%s\n", rig.gpu_name().c_str(), rig.gpu().to_string().c_str(),
              o.host_sim ? " -- HOST-SIM: a dry run, the numbers mean nothing" : "");
  if (o.bars)
    std::printf("%s a copy, median of %u after a warm-up; GB/s = 10^9 bytes/s, wall time from issue to landed\n",
                fmt_size(o.size).c_str(), o.reps);
  std::printf("engine: %s\n", fmt_engine(o.engine).c_str());

  // Staging buffers first: the pinned pool is cold only before anything else uses it.
  progress("staging buffers: acquire(1) + release");
  const auto staging = measure_staging(rig.manager(), o.engine.copy.chunk_bytes, o.staging_iterations);
  bool all_pass = staging.pass();
  out["staging"] = {{"buffer_bytes", staging.buffer_bytes},
                    {"cold_acquire_us", staging.cold_us},
                    {"warm_pair_ns", staging.warm_ns},
                    {"warm_pair_p99_ns", staging.warm_p99_ns},
                    {"pairs", staging.pairs},
                    {"needs_ns", 1000},
                    {"pass", staging.pass()}};
  if (!staging.error.empty()) out["staging"]["error"] = staging.error;

  bool ok = staging.error.empty();
  progress(fmt::format("allocating 5 x {} (pinned, 2 x pageable, 2 x VRAM)", fmt_size(bytes)));
  auto allocs = allocate_all(rig, bytes);
  if (!allocs) {
    std::fprintf(stderr, "memd_transfer_bench: %s\n", allocs.error().message.c_str());
    return 1;
  }
  if (o.bars) ok = run_bars(o, rig, *base, *allocs, out, all_pass) && ok;
  std::printf("%-26s acquire(1)+release on a warm pool: %.0f ns (median of %llu batches of 100; p99 %.0f ns); "
              "first (cold) %.1f us; buffer %s   needs <= 1000 ns  %s\n",
              "staging", staging.warm_ns, static_cast<unsigned long long>(staging.pairs / 100), staging.warm_p99_ns,
              staging.cold_us, fmt_size(staging.buffer_bytes).c_str(),
              !staging.error.empty() ? ("ERROR " + staging.error).c_str() : staging.pass() ? "PASS" : "FAIL");
  if (o.bars)
    std::printf("(GB/s counts each byte copied once; ANCHORS.md's device-to-device figure counts read + write, "
                "twice this)\n");
  if (o.sweep) ok = run_sweep(o, rig, *base, *allocs, out) && ok;

  out["pass"] = all_pass && ok;
  out["errors"] = !ok;
  if (o.bars)
    std::printf("\noverall: %s%s\n", all_pass && ok ? "PASS" : "FAIL",
                ok ? "" : " (a copy failed or wrote wrong bytes: see ERROR above)");
  if (!emit_json(out, o.json_path, "memd_transfer_bench")) return 1;
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace memd::transfer_bench

int main(int argc, char** argv) {
  memd::transfer_bench::Options options;
  if (auto stop = memd::transfer_bench::parse_options(argc, argv, options)) return *stop;
  return memd::transfer_bench::run(options);
}
