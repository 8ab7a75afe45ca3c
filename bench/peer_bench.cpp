// peer_bench — memd between two GPUs of one host (issue 18), in one process,
// each figure beside its same-run CUDA baseline. A plain program: each copy
// is timed whole, memd and its baseline alternate rep by rep, the figure is
// the median of --reps after one warm-up of each.
//
//   LD_LIBRARY_PATH=.gpu/lib .gpu/bin/memd_peer_bench [--from 0 --to 1] [--json PATH]
//   memd_peer_bench --help                            (every flag)
//
// Three parts (--only picks some):
//   peer   cuda:FROM -> cuda:TO through TransferEngine::submit (VRAM to VRAM,
//          path device_async) against cudaMemcpyPeerAsync between two
//          cudaMallocs on the same two GPUs, peer access enabled both ways,
//          for each of --sizes (default 64M,1G,8G). Bar: memd >= 0.90 of the
//          baseline. A size that does not fit twice on both cards (memd's
//          pair and the baseline's, cudaMemGetInfo) is skipped with a message.
//          Every byte of the destination is checked after the warm-up, and
//          after each timed copy 64 samples of 4 KiB that were overwritten
//          with wrong bytes just before it.
//   batch  one submit_batch of --batch-count moves of --batch-size VRAM
//          allocations from FROM to TO (same ids) together with --h2d-count
//          copies of the same size from pinned host memory (cpu SharedMemory)
//          into VRAM on TO: the aggregate rate, bytes of every member over the
//          wall time from submit to the last completion. Baseline: the same
//          bytes by cudaMemcpyPeerAsync on one stream and cudaMemcpyAsync H2D
//          (cudaHostAlloc'd) on another, issued together. After each rep every
//          moved allocation is checked (same id, now on TO, every byte) and so
//          is every H2D destination; then the moves go back, untimed.
//   move   one live allocation of --move-size on FROM, filled with a pattern,
//          moved to TO and back: the id stays, the record names the new
//          device, and every byte read back from the card matches, each way.
//
// GB/s = 10^9 bytes copied per second of wall time (issue to landed).
// --host-sim: host:0 and host:1 stand in for the GPUs (counted as device
// memory, as the transfer tests do) and memcpy for the baselines: a dry run
// of the plumbing on a machine without a GPU; its numbers mean nothing.
//
// Exit status: 0 measured (the verdicts are in the table and the JSON);
// 1 a copy failed or wrote wrong bytes; 2 bad flags; 77 nothing to measure
// (fewer than two GPUs: it prints "skipped: 1 GPU" or "no GPU"; or built
// without CUDA).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "transfer/transfer_engine.hpp"
#include "transfer_bench_support.hpp"

namespace memd::peer_bench {
namespace {

using namespace memd::bench;
using bench::Clock;  // the steady clock, not memd::Clock (allocation records' system clock)
using json = nlohmann::ordered_json;

constexpr int kSkipped = 77;  // the automake/ctest "skipped" status

std::string fmt_size(std::uint64_t bytes) {
  if (bytes % kGiB == 0) return fmt::format("{} GiB", bytes / kGiB);
  if (bytes % kMiB == 0) return fmt::format("{} MiB", bytes / kMiB);
  return format_size(bytes);
}

void progress(const std::string& line) {
  std::fprintf(stderr, "[peer_bench] %s\n", line.c_str());
  std::fflush(stderr);
}

// ---------------------------------------------------------------------------
// Options

enum Part : unsigned { kPeer = 1, kBatch = 2, kMove = 4 };

struct Options {
  int from = 0, to = 1;
  std::vector<std::uint64_t> sizes = {64 * kMiB, kGiB, 8 * kGiB};
  unsigned reps = 5;
  unsigned batch_count = 8, h2d_count = 4, batch_reps = 3;
  std::uint64_t batch_size = 256 * kMiB;
  std::uint64_t move_size = kGiB;
  unsigned parts = kPeer | kBatch | kMove;
  TransferOptions engine;
  std::string json_path;
  bool host_sim = false;
};

void usage(std::FILE* to) {
  std::fprintf(to,
               "usage: memd_peer_bench [flags]\n"
               "  memd between two GPUs of one host against CUDA's peer copies, in one run.\n"
               "  --from N --to M       the two GPUs, cuda:N -> cuda:M (default 0 and 1; must differ)\n"
               "  --sizes LIST          peer copy sizes (default 64M,1G,8G; K/M/G are powers of 1024)\n"
               "  --reps N              timed copies per peer size, median reported (default 5)\n"
               "  --batch-count N       allocations the batch moves FROM -> TO (default 8)\n"
               "  --batch-size SIZE     bytes of each batch member (default 256M)\n"
               "  --h2d-count N         pinned host -> TO copies in the same batch (default 4; 0: none)\n"
               "  --batch-reps N        timed batches (default 3)\n"
               "  --move-size SIZE      the live allocation moved FROM -> TO -> FROM (default 1G)\n"
               "  --workers N           the engine's transfers at once (default 4)\n"
               "  --only LIST           some of peer,batch,move (default all)\n"
               "  --json PATH           also write the JSON to PATH (it is printed as the last line either way)\n"
               "  --host-sim            dry run without a GPU: host:0 and host:1 as the GPUs, memcpy as baselines\n"
               "  --help\n");
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
      std::fprintf(stderr, "memd_peer_bench: %.*s: %.*s (--help lists the flags)\n", static_cast<int>(flag.size()),
                   flag.data(), static_cast<int>(why.size()), why.data());
      return 2;
    };
    auto number = [&](unsigned& out, unsigned min, unsigned max) -> bool {
      auto v = value();
      auto n = v ? parse_unsigned(*v) : std::nullopt;
      if (!n || *n < min || *n > max) return false;
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
    // A GPU index: DeviceId's index is an int; no host has 1024 GPUs.
    auto gpu = [&](int& out) -> bool {
      unsigned n = 0;
      if (!number(n, 0, 1023)) return false;
      out = static_cast<int>(n);
      return true;
    };
    if (flag == "--help" || flag == "-h") {
      usage(stdout);
      return 0;
    } else if (flag == "--from") {
      if (!gpu(o.from)) return bad("needs a GPU index 0..1023");
    } else if (flag == "--to") {
      if (!gpu(o.to)) return bad("needs a GPU index 0..1023");
    } else if (flag == "--sizes") {
      auto v = value();
      std::vector<std::uint64_t> list;
      std::string_view text = v ? *v : std::string_view{};
      bool ok = v.has_value() && !text.empty();
      while (ok && !text.empty()) {
        const auto comma = text.find(',');
        auto n = parse_bytes(text.substr(0, comma));
        if (!n) ok = false;
        else list.push_back(*n);
        if (comma == std::string_view::npos) break;
        text = text.substr(comma + 1);
        if (text.empty()) ok = false;  // a trailing comma
      }
      if (!ok) return bad("needs sizes such as 64M,1G,8G");
      o.sizes = std::move(list);
    } else if (flag == "--reps") {
      if (!number(o.reps, 1, 1000)) return bad("needs a count 1..1000");
    } else if (flag == "--batch-count") {
      if (!number(o.batch_count, 1, 1024)) return bad("needs a count 1..1024");
    } else if (flag == "--h2d-count") {
      if (!number(o.h2d_count, 0, 1024)) return bad("needs a count 0..1024");
    } else if (flag == "--batch-reps") {
      if (!number(o.batch_reps, 1, 1000)) return bad("needs a count 1..1000");
    } else if (flag == "--batch-size") {
      if (!bytes(o.batch_size)) return bad("needs a size such as 256M");
    } else if (flag == "--move-size") {
      if (!bytes(o.move_size)) return bad("needs a size such as 1G");
    } else if (flag == "--workers") {
      if (!number(o.engine.workers, 1, 256)) return bad("needs a count 1..256");
    } else if (flag == "--only") {
      auto v = value();
      unsigned parts = 0;
      std::string_view text = v ? *v : std::string_view{};
      bool ok = v.has_value() && !text.empty();
      while (ok) {
        const auto comma = text.find(',');
        const auto item = text.substr(0, comma);
        if (item == "peer") parts |= kPeer;
        else if (item == "batch") parts |= kBatch;
        else if (item == "move") parts |= kMove;
        else ok = false;
        if (comma == std::string_view::npos) break;
        text = text.substr(comma + 1);
      }
      if (!ok) return bad("needs some of peer,batch,move");
      o.parts = parts;
    } else if (flag == "--json") {
      auto v = value();
      if (!v || v->empty()) return bad("needs a path");
      o.json_path = std::string(*v);
    } else if (flag == "--host-sim") {
      o.host_sim = true;
    } else {
      return bad("unknown flag");
    }
  }
  if (o.from == o.to) {
    std::fprintf(stderr, "memd_peer_bench: --from and --to name the same GPU (%d): a peer copy needs two\n", o.from);
    return 2;
  }
  if (o.host_sim && (o.from > 1 || o.to > 1)) {
    std::fprintf(stderr, "memd_peer_bench: --host-sim has two stand-in GPUs, 0 and 1\n");
    return 2;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// memd's side: a catalog with both devices, a manager and an engine.

class Rig {
 public:
  static Result<std::unique_ptr<Rig>> create(const Options& o, std::uint64_t host_sim_bytes) {
    BackendOptions bo;
    auto rig = std::unique_ptr<Rig>(new Rig);
    if (o.host_sim) {
      bo.enable_cuda = false;
      bo.host_device_sizes = {host_sim_bytes, host_sim_bytes};
      rig->from_ = DeviceId::host(o.from);
      rig->to_ = DeviceId::host(o.to);
    } else {
      bo.enable_cuda = true;
      bo.host_device_sizes.clear();
      rig->from_ = DeviceId::cuda(o.from);
      rig->to_ = DeviceId::cuda(o.to);
    }
    auto catalog = DeviceCatalog::discover(bo);
    if (!catalog) return fail(catalog.error());
    for (DeviceId d : {rig->from_, rig->to_}) {
      auto info = (*catalog)->info(d);
      if (!info) return fail(info.error());
      rig->names_.push_back(info->name);
    }
    Backend* host = nullptr;
    for (const auto& b : (*catalog)->backends())
      if (b->name() == "host") host = b.get();
    if (host == nullptr) return fail(ErrorCode::internal, "the catalog has no host backend");
    rig->catalog_ = std::move(*catalog);
    rig->manager_ = std::make_unique<MemoryManager>(*rig->catalog_);
    TransferOptions e = o.engine;
    e.copy.stage_host_devices = o.host_sim;
    rig->engine_ = std::make_unique<TransferEngine>(*rig->manager_, *host, e);
    rig->finished_.attach(*rig->engine_);
    return rig;
  }

  ~Rig() {
    engine_.reset();  // first: it holds allocations while copies run
    for (const auto& id : allocations_) (void)manager_->deallocate(id);
  }

  DeviceId from() const { return from_; }
  DeviceId to() const { return to_; }
  const std::string& name(int i) const { return names_[static_cast<std::size_t>(i)]; }
  PeerAccess peer_access() const { return catalog_->peer_access(from_, to_); }
  MemoryManager& manager() { return *manager_; }

  Result<AllocationRecord> allocate(std::uint64_t bytes, DeviceId device, MemoryType type, std::string name) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = device;
    r.memory_type = type;
    r.owner = "peer_bench";
    r.name = std::move(name);
    auto rec = manager_->allocate(r);
    if (!rec)
      return fail(rec.error().code, "allocating {} of {} on {}: {}", fmt_size(bytes), to_string(type),
                  device.to_string(), rec.error().message);
    allocations_.insert(rec->id);
    if (auto t = bytes_.track(*manager_, *rec); !t) return fail(t.error());
    return rec;
  }

  void free(const AllocationId& id) {
    if (allocations_.erase(id) == 0) return;
    bytes_.forget(id);
    (void)manager_->deallocate(id);
  }

  // The byte pattern in an allocation (PatternBytes).
  Result<void> fill(const AllocationId& a, std::uint64_t seed, std::uint64_t bytes) {
    return bytes_.fill(*engine_, a, seed, bytes);
  }
  Result<void> check_all(const AllocationId& a, std::uint64_t seed, std::uint64_t bytes) {
    return bytes_.check_all(*engine_, a, seed, bytes);
  }
  Result<void> spoil(const AllocationId& a, std::uint64_t seed, const std::vector<std::uint64_t>& offsets,
                     std::uint64_t bytes) {
    return bytes_.spoil(*engine_, a, seed, offsets, bytes);
  }
  Result<void> check_samples(const AllocationId& a, std::uint64_t seed, const std::vector<std::uint64_t>& offsets,
                             std::uint64_t bytes) {
    return bytes_.check_samples(*engine_, a, seed, offsets, bytes);
  }

  // Submits `specs` as one batch (or one transfer when there is one) and
  // waits for every member; the wall time from submit to the last hook.
  Result<std::pair<double, std::vector<TransferReport>>> run(const std::vector<TransferSpec>& specs) {
    std::vector<TransferId> ids;
    const auto t0 = Clock::now();
    if (specs.size() == 1) {
      auto r = engine_->submit("peer_bench", specs.front());
      if (!r) return fail(r.error());
      ids.push_back(r->id);
    } else {
      auto b = engine_->submit_batch("peer_bench", specs);
      if (!b) return fail(b.error());
      for (const auto& t : b->transfers) ids.push_back(t.id);
    }
    auto finished = finished_.take(ids, std::chrono::minutes(5));
    if (!finished) return fail(ErrorCode::internal, "{} transfers did not finish in 5 minutes", ids.size());
    std::vector<TransferReport> reports;
    Clock::time_point last = t0;
    for (auto& f : *finished) {
      last = std::max(last, f.at);
      reports.push_back(std::move(f.report));
    }
    for (const auto& r : reports)
      if (r.status != MemoryTransferStatus::Completed)
        return fail(ErrorCode::internal, "transfer {} ({} -> {}) ended {} after {} of {} bytes: {}",
                    r.id.to_string(), r.source_device.to_string(), r.destination_device.to_string(),
                    to_string(r.status), r.bytes_done, r.size_bytes, r.error ? r.error->message : "no reason given");
    return std::pair{seconds_between(t0, last), std::move(reports)};
  }

  Result<std::pair<double, TransferReport>> copy(const AllocationId& src, const AllocationId& dst,
                                                 std::uint64_t bytes) {
    TransferSpec s;
    s.source = src;
    s.destination = dst;
    s.size = bytes;
    auto r = run({s});
    if (!r) return fail(r.error());
    return std::pair{r->first, std::move(r->second.front())};
  }

 private:
  Rig() = default;

  std::unique_ptr<DeviceCatalog> catalog_;
  std::unique_ptr<MemoryManager> manager_;
  DeviceId from_, to_;
  std::vector<std::string> names_;
  std::set<AllocationId> allocations_;
  PatternBytes bytes_;
  CompletionLog finished_;                  // before the engine: its hook writes here
  std::unique_ptr<TransferEngine> engine_;  // after the manager: destroyed first
};

// ---------------------------------------------------------------------------
// The baselines: the same bytes moved the plain way.

class Baselines {
 public:
  virtual ~Baselines() = default;
  virtual json machine() const = 0;
  virtual std::string peer_what() const = 0;
  virtual std::string batch_what() const = 0;
  // Room for `bytes` on each side of a peer copy (memd's pair and ours).
  virtual bool fits(std::uint64_t bytes, std::string& why) const = 0;
  // Buffers for copies of up to `bytes` (the previous ones go).
  virtual Result<void> prepare_peer(std::uint64_t bytes) = 0;
  virtual Result<double> peer(std::uint64_t bytes) = 0;  // wall seconds
  // `count` peer copies and `h2d` pinned H2D copies of `bytes`, issued
  // together on two streams; wall seconds to both landed.
  virtual Result<void> prepare_batch(unsigned count, unsigned h2d, std::uint64_t bytes) = 0;
  virtual Result<double> batch() = 0;
  virtual void release() = 0;
};

class MemcpyBaselines final : public Baselines {
 public:
  json machine() const override { return {{"gpus", "none (host-sim: host:0 and host:1 stand in)"}}; }
  std::string peer_what() const override { return "memcpy (host-sim)"; }
  std::string batch_what() const override { return "one memcpy of the same bytes (host-sim)"; }
  bool fits(std::uint64_t, std::string&) const override { return true; }
  Result<void> prepare_peer(std::uint64_t bytes) override {
    a_.assign(bytes, std::byte{1});
    b_.assign(bytes, std::byte{2});
    return {};
  }
  Result<double> peer(std::uint64_t bytes) override {
    const auto t0 = Clock::now();
    std::memcpy(b_.data(), a_.data(), bytes);
    return seconds_between(t0, Clock::now());
  }
  Result<void> prepare_batch(unsigned count, unsigned h2d, std::uint64_t bytes) override {
    return prepare_peer(bytes * (count + h2d));
  }
  Result<double> batch() override { return peer(a_.size()); }
  void release() override {
    a_ = {};
    b_ = {};
  }

 private:
  std::vector<std::byte> a_, b_;
};

#if defined(MEMD_WITH_CUDA)

class CudaBaselines final : public Baselines {
 public:
  static Result<std::unique_ptr<CudaBaselines>> create(int from, int to) {
    auto b = std::unique_ptr<CudaBaselines>(new CudaBaselines(from, to));
    BENCH_CUDA(cudaGetDeviceProperties(&b->props_[0], from));
    BENCH_CUDA(cudaGetDeviceProperties(&b->props_[1], to));
    BENCH_CUDA(cudaDriverGetVersion(&b->driver_));
    BENCH_CUDA(cudaRuntimeGetVersion(&b->runtime_));
    BENCH_CUDA(cudaDeviceCanAccessPeer(&b->can_[0], from, to));
    BENCH_CUDA(cudaDeviceCanAccessPeer(&b->can_[1], to, from));
    // Peer access both ways, as memd's CUDA backend turns it on: the
    // baseline gets the direct link too (already enabled is fine).
    for (auto [dev, peer, can] : {std::tuple{from, to, b->can_[0]}, std::tuple{to, from, b->can_[1]}}) {
      if (!can) continue;
      BENCH_CUDA(cudaSetDevice(dev));
      if (auto e = cudaDeviceEnablePeerAccess(peer, 0); e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled)
        return fail(ErrorCode::backend_error, "cudaDeviceEnablePeerAccess({} -> {}): {}", dev, peer,
                    cudaGetErrorString(e));
      (void)cudaGetLastError();  // clear the already-enabled status
    }
    BENCH_CUDA(cudaSetDevice(from));
    BENCH_CUDA(cudaStreamCreateWithFlags(&b->peer_stream_, cudaStreamNonBlocking));
    BENCH_CUDA(cudaSetDevice(to));
    BENCH_CUDA(cudaStreamCreateWithFlags(&b->h2d_stream_, cudaStreamNonBlocking));
    return b;
  }

  ~CudaBaselines() override {
    release();
    if (peer_stream_) (void)cudaStreamDestroy(peer_stream_);
    if (h2d_stream_) (void)cudaStreamDestroy(h2d_stream_);
  }

  json machine() const override {
    auto gpu = [](const cudaDeviceProp& p, int index) {
      return json{{"device", fmt::format("cuda:{}", index)},
                  {"name", p.name},
                  {"pci_bus", p.pciBusID},
                  {"total_bytes", p.totalGlobalMem}};
    };
    return {{"gpus", json::array({gpu(props_[0], from_), gpu(props_[1], to_)})},
            {"cuda_can_access_peer", {{fmt::format("{}->{}", from_, to_), can_[0] != 0},
                                      {fmt::format("{}->{}", to_, from_), can_[1] != 0}}},
            {"cuda_driver", driver_},
            {"cuda_runtime", runtime_}};
  }

  std::string peer_what() const override {
    return fmt::format("cudaMemcpyPeerAsync cuda:{} -> cuda:{}{}", from_, to_,
                       can_[0] && can_[1] ? " (peer access on)" : " (no peer access: through the host)");
  }

  std::string batch_what() const override {
    return "cudaMemcpyPeerAsync + cudaMemcpyAsync H2D (cudaHostAlloc'd) on two streams, issued together";
  }

  bool fits(std::uint64_t bytes, std::string& why) const override {
    constexpr std::uint64_t kSlack = 512 * kMiB;
    for (int dev : {from_, to_}) {
      std::size_t free = 0, total = 0;
      if (cudaSetDevice(dev) != cudaSuccess || cudaMemGetInfo(&free, &total) != cudaSuccess) {
        why = fmt::format("cudaMemGetInfo on cuda:{} failed", dev);
        return false;
      }
      if (free < 2 * bytes + kSlack) {
        why = fmt::format("cuda:{} has {} free, the copy needs 2 x {} + {} there (memd's side and the baseline's)",
                          dev, fmt_size(free), fmt_size(bytes), fmt_size(kSlack));
        return false;
      }
    }
    return true;
  }

  Result<void> prepare_peer(std::uint64_t bytes) override {
    release();
    BENCH_CUDA(cudaSetDevice(from_));
    src_.push_back(nullptr);
    BENCH_CUDA(cudaMalloc(&src_.back(), bytes));
    BENCH_CUDA(cudaMemset(src_.back(), 0x3c, bytes));
    BENCH_CUDA(cudaSetDevice(to_));
    dst_.push_back(nullptr);
    BENCH_CUDA(cudaMalloc(&dst_.back(), bytes));
    BENCH_CUDA(cudaMemset(dst_.back(), 0xc3, bytes));
    BENCH_CUDA(cudaDeviceSynchronize());
    return {};
  }

  Result<double> peer(std::uint64_t bytes) override {
    BENCH_CUDA(cudaSetDevice(from_));
    const auto t0 = Clock::now();
    BENCH_CUDA(cudaMemcpyPeerAsync(dst_.front(), to_, src_.front(), from_, bytes, peer_stream_));
    BENCH_CUDA(cudaStreamSynchronize(peer_stream_));
    return seconds_between(t0, Clock::now());
  }

  Result<void> prepare_batch(unsigned count, unsigned h2d, std::uint64_t bytes) override {
    release();
    bytes_ = bytes;
    BENCH_CUDA(cudaSetDevice(from_));
    for (unsigned i = 0; i < count; ++i) {
      src_.push_back(nullptr);
      BENCH_CUDA(cudaMalloc(&src_.back(), bytes));
      BENCH_CUDA(cudaMemset(src_.back(), 0x3c, bytes));
    }
    BENCH_CUDA(cudaSetDevice(to_));
    for (unsigned i = 0; i < count + h2d; ++i) {
      dst_.push_back(nullptr);
      BENCH_CUDA(cudaMalloc(&dst_.back(), bytes));
    }
    for (unsigned i = 0; i < h2d; ++i) {
      pinned_.push_back(nullptr);
      BENCH_CUDA(cudaHostAlloc(&pinned_.back(), bytes, cudaHostAllocDefault));
      std::memset(pinned_.back(), 0xa5, bytes);
    }
    BENCH_CUDA(cudaDeviceSynchronize());
    return {};
  }

  Result<double> batch() override {
    const auto t0 = Clock::now();
    BENCH_CUDA(cudaSetDevice(to_));
    for (std::size_t i = 0; i < pinned_.size(); ++i)
      BENCH_CUDA(cudaMemcpyAsync(dst_[src_.size() + i], pinned_[i], bytes_, cudaMemcpyHostToDevice, h2d_stream_));
    BENCH_CUDA(cudaSetDevice(from_));
    for (std::size_t i = 0; i < src_.size(); ++i)
      BENCH_CUDA(cudaMemcpyPeerAsync(dst_[i], to_, src_[i], from_, bytes_, peer_stream_));
    BENCH_CUDA(cudaStreamSynchronize(peer_stream_));
    BENCH_CUDA(cudaStreamSynchronize(h2d_stream_));
    return seconds_between(t0, Clock::now());
  }

  void release() override {
    for (void* p : src_) (void)cudaFree(p);
    for (void* p : dst_) (void)cudaFree(p);
    for (void* p : pinned_) (void)cudaFreeHost(p);
    src_.clear();
    dst_.clear();
    pinned_.clear();
  }

 private:
  CudaBaselines(int from, int to) : from_(from), to_(to) {}
  const int from_, to_;
  cudaDeviceProp props_[2]{};
  int can_[2]{};
  int driver_ = 0, runtime_ = 0;
  cudaStream_t peer_stream_ = nullptr, h2d_stream_ = nullptr;
  std::vector<void*> src_, dst_, pinned_;
  std::uint64_t bytes_ = 0;
};

#endif  // MEMD_WITH_CUDA

// ---------------------------------------------------------------------------
// The parts

constexpr double kPeerBar = 0.90;

// One peer size: warm-up of both, every byte checked, then `reps` rounds of
// baseline + memd (samples spoiled before, checked after). Fills `row`.
bool peer_size(Rig& rig, Baselines& base, std::uint64_t bytes, unsigned reps, json& row) {
  row = {{"bytes", bytes}, {"size", fmt_size(bytes)}};
  std::string why;
  if (!base.fits(bytes, why)) {
    row["skipped"] = why;
    std::printf("%-8s skipped: %s\n", fmt_size(bytes).c_str(), why.c_str());
    return true;
  }
  const std::uint64_t seed = 1000 + bytes / kMiB;
  std::optional<AllocationId> src_id, dst_id;
  auto error = [&](const std::string& e) {
    row["error"] = e;
    progress(fmt::format("peer {}: ERROR {}", fmt_size(bytes), e));
    if (src_id) rig.free(*src_id);
    if (dst_id) rig.free(*dst_id);
    base.release();
    return false;
  };
  progress(fmt::format("peer {}: allocating, filling, warm-up, {} reps", fmt_size(bytes), reps));
  auto src = rig.allocate(bytes, rig.from(), MemoryType::VRAM, "peer_src");
  if (!src) return error(src.error().message);
  src_id = src->id;
  auto dst = rig.allocate(bytes, rig.to(), MemoryType::VRAM, "peer_dst");
  if (!dst) return error(dst.error().message);
  dst_id = dst->id;
  if (auto p = base.prepare_peer(bytes); !p) return error("baseline: " + p.error().message);
  if (auto f = rig.fill(src->id, seed, bytes); !f) return error("filling the source: " + f.error().message);
  if (auto w = base.peer(bytes); !w) return error("baseline warm-up: " + w.error().message);
  auto warm = rig.copy(src->id, dst->id, bytes);
  if (!warm) return error("memd warm-up: " + warm.error().message);
  const std::string path = warm->second.path ? std::string(to_string(*warm->second.path)) : "none";
  if (auto c = rig.check_all(dst->id, seed, bytes); !c) return error("after the warm-up: " + c.error().message);
  std::vector<double> memd_s, base_s;
  for (unsigned rep = 0; rep < reps; ++rep) {
    auto b = base.peer(bytes);
    if (!b) return error(fmt::format("baseline rep {}: {}", rep, b.error().message));
    base_s.push_back(*b);
    const auto samples = sample_offsets(bytes, rep, 8);  // on 8-byte boundaries, as this program has them
    if (auto s = rig.spoil(dst->id, seed, samples, bytes); !s) return error("spoiling: " + s.error().message);
    auto t = rig.copy(src->id, dst->id, bytes);
    if (!t) return error(fmt::format("memd rep {}: {}", rep, t.error().message));
    memd_s.push_back(t->first);
    if (auto c = rig.check_samples(dst->id, seed, samples, bytes); !c)
      return error(fmt::format("after memd rep {}: {}", rep, c.error().message));
  }
  rig.free(src->id);
  rig.free(dst->id);
  base.release();
  const double m = gbps(bytes, median(memd_s)), bl = gbps(bytes, median(base_s));
  const double ratio = bl > 0 ? m / bl : 0;
  const bool pass = ratio >= kPeerBar;
  row["memd_path"] = path;
  row["memd_gbps"] = m;
  row["memd_seconds"] = memd_s;
  row["baseline_gbps"] = bl;
  row["baseline_seconds"] = base_s;
  row["ratio"] = ratio;
  row["needs"] = kPeerBar;
  row["verified"] = true;
  row["pass"] = pass;
  std::printf("%-8s %-13s %10.2f %10.2f %7.3f  >= %.2f  %s\n", fmt_size(bytes).c_str(), path.c_str(), m, bl, ratio,
              kPeerBar, pass ? "PASS" : "FAIL");
  std::fflush(stdout);
  return true;
}

bool run_peer(const Options& o, Rig& rig, Baselines& base, json& out, bool& all_pass) {
  std::printf("\npeer copies %s -> %s through the transfer engine vs %s; median of %u after a warm-up\n",
              rig.from().to_string().c_str(), rig.to().to_string().c_str(), base.peer_what().c_str(), o.reps);
  std::printf("%-8s %-13s %10s %10s %7s  %-7s %s\n", "size", "memd path", "memd GB/s", "base GB/s", "ratio", "needs",
              "verdict");
  bool ok = true;
  json rows = json::array();
  for (auto bytes : o.sizes) {
    json row;
    if (!peer_size(rig, base, bytes, o.reps, row)) {
      ok = false;
      std::printf("%-8s ERROR %s\n", fmt_size(bytes).c_str(), row["error"].get<std::string>().c_str());
    }
    if (!row.value("pass", false) && !row.contains("skipped")) all_pass = false;
    rows.push_back(std::move(row));
  }
  out["peer"] = std::move(rows);
  return ok;
}

// The batch: moves FROM -> TO with pinned H2D copies into TO, one submit.
bool run_batch(const Options& o, Rig& rig, Baselines& base, json& out) {
  const std::uint64_t bs = o.batch_size;
  const std::uint64_t total = bs * (o.batch_count + o.h2d_count);
  json j = {{"moves", o.batch_count},
            {"h2d_copies", o.h2d_count},
            {"member_bytes", bs},
            {"total_bytes", total},
            {"reps", o.batch_reps},
            {"workers", o.engine.workers}};
  std::printf("\nbatch: %u moves of %s %s -> %s and %u pinned host -> %s copies of %s in one submit_batch "
              "(%s in all); median of %u\n",
              o.batch_count, fmt_size(bs).c_str(), rig.from().to_string().c_str(), rig.to().to_string().c_str(),
              o.h2d_count, rig.to().to_string().c_str(), fmt_size(bs).c_str(), fmt_size(total).c_str(),
              o.batch_reps);
  std::string why;
  // Room: memd's members on both sides during a move, the baseline's copies.
  if (!base.fits(bs * (o.batch_count + o.h2d_count), why)) {
    j["skipped"] = why;
    std::printf("batch skipped: %s\n", why.c_str());
    out["batch"] = std::move(j);
    return true;
  }
  std::vector<AllocationRecord> moved, pinned, h2d_dst;
  auto cleanup = [&] {
    for (const auto* list : {&moved, &pinned, &h2d_dst})
      for (const auto& a : *list) rig.free(a.id);
    base.release();
  };
  auto error = [&](const std::string& e) {
    j["error"] = e;
    out["batch"] = j;
    progress("batch: ERROR " + e);
    std::printf("batch ERROR %s\n", e.c_str());
    cleanup();
    return false;
  };
  progress("batch: allocating and filling");
  for (unsigned i = 0; i < o.batch_count; ++i) {
    auto a = rig.allocate(bs, rig.from(), MemoryType::VRAM, fmt::format("batch_{}", i));
    if (!a) return error(a.error().message);
    moved.push_back(*a);
    if (auto f = rig.fill(a->id, 2000 + i, bs); !f) return error("filling: " + f.error().message);
  }
  for (unsigned i = 0; i < o.h2d_count; ++i) {
    auto p = rig.allocate(bs, DeviceId::cpu(), MemoryType::SharedMemory, fmt::format("h2d_src_{}", i));
    if (!p) return error(p.error().message);
    pinned.push_back(*p);
    if (auto f = rig.fill(p->id, 3000 + i, bs); !f) return error("filling: " + f.error().message);
    auto d = rig.allocate(bs, rig.to(), MemoryType::VRAM, fmt::format("h2d_dst_{}", i));
    if (!d) return error(d.error().message);
    h2d_dst.push_back(*d);
  }
  if (auto p = base.prepare_batch(o.batch_count, o.h2d_count, bs); !p) return error("baseline: " + p.error().message);
  auto specs_to = [&](DeviceId where, bool with_h2d) {
    std::vector<TransferSpec> specs;
    for (const auto& a : moved) {
      TransferSpec s;
      s.source = a.id;
      s.to_device = where;
      specs.push_back(s);
    }
    if (with_h2d)
      for (std::size_t i = 0; i < pinned.size(); ++i) {
        TransferSpec s;
        s.source = pinned[i].id;
        s.destination = h2d_dst[i].id;
        specs.push_back(s);
      }
    return specs;
  };
  // Every moved allocation: same id, on `where`, every byte; every H2D
  // destination too (once it was written).
  auto verify = [&](DeviceId where, bool h2d) -> Result<void> {
    for (std::size_t i = 0; i < moved.size(); ++i) {
      auto rec = rig.manager().get(moved[i].id);
      if (!rec) return fail(rec.error().code, "moved allocation {}: {}", moved[i].id.to_string(), rec.error().message);
      if (rec->device != where)
        return fail(ErrorCode::internal, "allocation {} is on {} after its move to {}", moved[i].id.to_string(),
                    rec->device.to_string(), where.to_string());
      if (auto c = rig.check_all(moved[i].id, 2000 + i, bs); !c)
        return fail(c.error().code, "moved allocation {}: {}", i, c.error().message);
    }
    if (h2d)
      for (std::size_t i = 0; i < h2d_dst.size(); ++i)
        if (auto c = rig.check_all(h2d_dst[i].id, 3000 + i, bs); !c)
          return fail(c.error().code, "h2d destination {}: {}", i, c.error().message);
    return {};
  };
  std::vector<double> memd_s, base_s;
  std::string paths;
  for (unsigned rep = 0; rep <= o.batch_reps; ++rep) {  // rep 0: the warm-up
    progress(fmt::format("batch: {} {}", rep == 0 ? "warm-up" : "rep", rep));
    auto b = base.batch();
    if (!b) return error("baseline: " + b.error().message);
    auto m = rig.run(specs_to(rig.to(), true));
    if (!m) return error(fmt::format("memd rep {}: {}", rep, m.error().message));
    for (const auto& r : m->second)
      if (r.kind == TransferKind::Move && r.destination != r.source)
        return error(fmt::format("move {} reported destination {}", r.source.to_string(), r.destination.to_string()));
    if (rep == 0) {
      std::set<std::string> seen;
      for (const auto& r : m->second) seen.insert(r.path ? std::string(to_string(*r.path)) : "none");
      for (const auto& p : seen) paths += (paths.empty() ? "" : ",") + p;
    } else {
      memd_s.push_back(m->first);
      base_s.push_back(*b);
    }
    if (auto v = verify(rig.to(), true); !v) return error(fmt::format("after rep {}: {}", rep, v.error().message));
    auto back = rig.run(specs_to(rig.from(), false));
    if (!back) return error(fmt::format("moving back after rep {}: {}", rep, back.error().message));
    if (auto v = verify(rig.from(), false); !v)
      return error(fmt::format("after moving back (rep {}): {}", rep, v.error().message));
  }
  cleanup();
  const double m = gbps(total, median(memd_s)), bl = gbps(total, median(base_s));
  j["memd_paths"] = paths;
  j["memd_aggregate_gbps"] = m;
  j["memd_seconds"] = memd_s;
  j["baseline"] = base.batch_what();
  j["baseline_aggregate_gbps"] = bl;
  j["baseline_seconds"] = base_s;
  j["ratio"] = bl > 0 ? m / bl : 0;
  j["verified"] = true;
  std::printf("batch aggregate: memd %.2f GB/s (paths %s), baseline %.2f GB/s, ratio %.3f (reported; every member "
              "checked)\n",
              m, paths.c_str(), bl, bl > 0 ? m / bl : 0);
  out["batch"] = std::move(j);
  return true;
}

// A live allocation moved FROM -> TO -> FROM: id, device and every byte.
bool run_move(const Options& o, Rig& rig, Baselines& base, json& out) {
  const std::uint64_t bytes = o.move_size;
  json j = {{"bytes", bytes}};
  std::printf("\nmove: a live %s allocation %s -> %s -> %s\n", fmt_size(bytes).c_str(), rig.from().to_string().c_str(),
              rig.to().to_string().c_str(), rig.from().to_string().c_str());
  std::string why;
  if (!base.fits(bytes / 2 + 1, why)) {  // memd alone: the allocation on each side during a move
    j["skipped"] = why;
    std::printf("move skipped: %s\n", why.c_str());
    out["move"] = std::move(j);
    return true;
  }
  auto a = rig.allocate(bytes, rig.from(), MemoryType::VRAM, "live");
  if (!a) {
    j["error"] = a.error().message;
    out["move"] = std::move(j);
    std::printf("move ERROR %s\n", a.error().message.c_str());
    return false;
  }
  const AllocationId id = a->id;
  j["id"] = id.to_string();
  constexpr std::uint64_t kSeed = 4242;
  json legs = json::array();
  bool ok = true;
  auto leg = [&](DeviceId where) {
    json l = {{"to", where.to_string()}};
    TransferSpec s;
    s.source = id;
    s.to_device = where;
    auto r = rig.run({s});
    if (!r) {
      l["error"] = r.error().message;
      return l;
    }
    const TransferReport& rep = r->second.front();
    auto rec = rig.manager().get(id);
    l["seconds"] = r->first;
    l["gbps"] = gbps(bytes, r->first);
    l["path"] = rep.path ? std::string(to_string(*rep.path)) : "none";
    l["reported_destination"] = rep.destination.to_string();
    l["same_id"] = rep.destination == id && rec.has_value();
    l["record_device"] = rec ? rec->device.to_string() : rec.error().message;
    l["record_bytes"] = rec ? rec->size_bytes : 0;
    if (!rec || rec->device != where || rec->size_bytes != bytes || rep.destination != id) {
      l["error"] = "the record does not name the moved allocation on its new device";
      return l;
    }
    if (auto c = rig.check_all(id, kSeed, bytes); !c) {
      l["error"] = "bytes after the move: " + c.error().message;
      return l;
    }
    l["bytes_checked"] = bytes;
    return l;
  };
  if (auto f = rig.fill(id, kSeed, bytes); !f) {
    ok = false;
    j["error"] = "filling: " + f.error().message;
  } else {
    for (DeviceId where : {rig.to(), rig.from()}) {
      json l = leg(where);
      const bool good = !l.contains("error");
      std::printf("  -> %-8s %s  id %s, record on %s, %s\n", where.to_string().c_str(), good ? "PASS" : "FAIL",
                  l.value("same_id", false) ? "kept" : "CHANGED", l.value("record_device", std::string("?")).c_str(),
                  good ? fmt::format("every byte of {} matches; {:.2f} GB/s, path {}", fmt_size(bytes),
                                     l.value("gbps", 0.0), l.value("path", std::string("?")))
                             .c_str()
                       : l.value("error", std::string("?")).c_str());
      ok = ok && good;
      legs.push_back(std::move(l));
      if (!good) break;
    }
  }
  rig.free(id);
  j["legs"] = std::move(legs);
  j["pass"] = ok;
  out["move"] = std::move(j);
  return ok;
}

int run(const Options& o) {
  std::unique_ptr<Baselines> base;
  std::uint64_t host_sim_bytes = 0;
  if (o.host_sim) {
    std::uint64_t need = std::max({o.sizes.empty() ? 0 : *std::max_element(o.sizes.begin(), o.sizes.end()),
                                   o.batch_size * (o.batch_count + o.h2d_count), o.move_size});
    host_sim_bytes = (2 * need + 256 * kMiB + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
    base = std::make_unique<MemcpyBaselines>();
  } else {
#if defined(MEMD_WITH_CUDA)
    int count = 0;
    const auto e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      std::printf("memd_peer_bench: no GPU (%s); nothing measured\n",
                  e != cudaSuccess ? cudaGetErrorString(e) : "0 CUDA devices");
      return kSkipped;
    }
    if (count < 2) {
      std::printf("skipped: 1 GPU (memd_peer_bench needs two GPUs; cuda:0 alone)\n");
      return kSkipped;
    }
    if (o.from >= count || o.to >= count) {
      std::fprintf(stderr, "memd_peer_bench: cuda:%d or cuda:%d is not among the %d GPUs\n", o.from, o.to, count);
      return 2;
    }
    auto cuda = CudaBaselines::create(o.from, o.to);
    if (!cuda) {
      std::fprintf(stderr, "memd_peer_bench: baselines: %s\n", cuda.error().message.c_str());
      return 1;
    }
    base = std::move(*cuda);
#else
    std::printf("memd_peer_bench: built without CUDA (MEMD_WITH_CUDA off); nothing measured (--host-sim runs a "
                "dry run on host memory)\n");
    return kSkipped;
#endif
  }
  auto created = Rig::create(o, host_sim_bytes);
  if (!created) {
    std::fprintf(stderr, "memd_peer_bench: memd: %s\n", created.error().message.c_str());
    return 1;
  }
  Rig& rig = **created;
  const char* access = rig.peer_access() == PeerAccess::Direct ? "direct" : "staged";
  json out = {{"bench", "memd_peer_bench"},
              {"mode", o.host_sim ? "host-sim" : "cuda"},
              {"machine", base->machine()},
              {"from", rig.from().to_string()},
              {"to", rig.to().to_string()},
              {"from_name", rig.name(0)},
              {"to_name", rig.name(1)},
              {"memd_peer_access", access},
              {"engine_workers", o.engine.workers}};
  std::printf("memd_peer_bench: %s (%s) -> %s (%s); memd's catalog: peer access %s%s\n",
              rig.from().to_string().c_str(), rig.name(0).c_str(), rig.to().to_string().c_str(), rig.name(1).c_str(),
              access, o.host_sim ? " -- HOST-SIM: a dry run, the numbers mean nothing" : "");
  bool ok = true, all_pass = true;
  if (o.parts & kPeer) ok = run_peer(o, rig, *base, out, all_pass) && ok;
  if (o.parts & kBatch) ok = run_batch(o, rig, *base, out) && ok;
  if (o.parts & kMove) ok = run_move(o, rig, *base, out) && ok;
  out["pass"] = all_pass && ok;
  out["errors"] = !ok;
  std::printf("\noverall: %s%s\n", all_pass && ok ? "PASS" : "FAIL",
              ok ? "" : " (a copy or a move failed or wrote wrong bytes: see ERROR / FAIL above)");
  if (!emit_json(out, o.json_path, "memd_peer_bench")) return 1;
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace memd::peer_bench

int main(int argc, char** argv) {
  memd::peer_bench::Options options;
  if (auto stop = memd::peer_bench::parse_options(argc, argv, options)) return *stop;
  return memd::peer_bench::run(options);
}
