// model_switch_bench — the model manager's whole path on one device (issue
// 15's GPU bars), each figure beside its baseline from the same run. A plain
// program.
//
//   memd_model_switch_bench --dir DIR [--file FILE] [--unet-gib 5] [--reps 3]
//                           [--dtype F16|BF16] [--no-switch]
//
//   load      (with --file: a safetensors file, page cache warm) the manager's
//             load of the file as one model on cuda:0, from the request to
//             Loaded: bytes ÷ seconds, median of reps (unloaded between).
//             bench/model_switch_gpu.sh prints load_file(device="cuda") on
//             the same file in the same run. With --dtype the file's F32
//             tensors land narrowed (its rate is also given in file bytes,
//             against load_file + .half() in bench/model_narrow_gpu.sh).
//   restore   the same model sent down to the RAM tier (evict_for), then
//             asked for again: bytes ÷ (request → Loaded in VRAM), against
//             cudaMemcpyAsync of the same bytes from cudaMallocHost memory
//             (goal >= 0.90).
//   switch    two SDXL-shaped diffusers folders written under DIR: their own
//             UNets (--unet-gib each, fp16) sharing text encoders (0.25 and
//             1.39 GB) and a VAE (0.16 GB), same bytes in both folders. A
//             device limit fits one pipeline and half a UNet; the RAM tier
//             (two UNets and 2 GiB) holds the other UNet. Switching: from the load request for the
//             pipeline in RAM until it reads Loaded in VRAM with the other
//             one's UNet in the RAM tier (goal < 0.25 s; A1111's RAM cache:
//             0.28 s). The shared parts are checked to be held once.
// Without a GPU it runs on host:0 (memcpy baselines) and says so.
// Exit status: 0 measured; 1 a step failed; 2 bad flags.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#if defined(MEMD_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

#include <nlohmann/json.hpp>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "models/model_manager.hpp"
#include "monitor/event_bus.hpp"
#include "monitor/monitor.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "model_switch_bench: %s\n", what.c_str());
  std::exit(1);
}

// A safetensors file of F16 tensors of `rows` x 4096 each (8 KiB rows),
// their bytes a cheap pattern of `seed` (two files with one seed are
// identical, so the manager shares them).
void write_part(const fs::path& path, const std::string& prefix, std::uint64_t bytes, std::uint64_t seed) {
  constexpr std::uint64_t kRow = 4096 * 2;
  constexpr std::uint64_t kTensor = 64 * kMiB;
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  std::uint64_t at = 0;
  for (int i = 0; at < bytes; ++i) {
    const std::uint64_t n = std::min(kTensor, bytes - at) / kRow * kRow;
    if (n == 0) break;
    h[prefix + ".blocks." + std::to_string(i) + ".weight"] = {
        {"dtype", "F16"}, {"shape", {n / kRow, 4096}}, {"data_offsets", {at, at + n}}};
    at += n;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::uint64_t len = header.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  std::vector<std::uint64_t> chunk(kMiB / 8);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::uint64_t done = 0; done < at; done += kMiB) {
    for (auto& w : chunk) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      w = x;
    }
    out.write(reinterpret_cast<const char*>(chunk.data()), static_cast<std::streamsize>(std::min(kMiB, at - done)));
  }
  if (!out) die("writing " + path.string());
}

void write_pipeline(const fs::path& dir, std::uint64_t unet_bytes, std::uint64_t unet_seed) {
  write_part(dir / "unet" / "diffusion_pytorch_model.safetensors", "unet", unet_bytes, unet_seed);
  write_part(dir / "text_encoder" / "model.safetensors", "text_model", 246 * kMiB, 1001);
  write_part(dir / "text_encoder_2" / "model.safetensors", "text_model", 1327 * kMiB, 1002);
  write_part(dir / "vae" / "diffusion_pytorch_model.safetensors", "decoder", 160 * kMiB, 1003);
  nlohmann::json index = {{"_class_name", "StableDiffusionXLPipeline"},
                          {"_diffusers_version", "0.30.0"},
                          {"unet", {"diffusers", "UNet2DConditionModel"}},
                          {"vae", {"diffusers", "AutoencoderKL"}},
                          {"text_encoder", {"transformers", "CLIPTextModel"}},
                          {"text_encoder_2", {"transformers", "CLIPTextModelWithProjection"}}};
  for (const auto* part : {"unet", "vae", "text_encoder", "text_encoder_2"}) {
    std::ofstream(dir / part / "config.json") << "{}";
  }
  std::ofstream(dir / "model_index.json") << index.dump(2);
}

// Pages the file in (the warm case reads from the page cache).
void warm(const fs::path& path) {
  std::vector<char> buf(16 * kMiB);
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
}
void warm_tree(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) warm(e.path());
}

// Baseline: `bytes` host→device from page-locked memory, one copy (or memcpy).
double pinned_copy_seconds(bool gpu, std::uint64_t bytes) {
#if defined(MEMD_WITH_CUDA)
  if (gpu) {
    void *host = nullptr, *dev = nullptr;
    if (cudaMallocHost(&host, bytes) != cudaSuccess || cudaMalloc(&dev, bytes) != cudaSuccess) return 0;
    std::memset(host, 1, bytes);
    cudaStream_t s;
    (void)cudaStreamCreate(&s);
    (void)cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s);  // warm-up
    (void)cudaStreamSynchronize(s);
    std::vector<double> t;
    for (int i = 0; i < 3; ++i) {
      const auto t0 = Clock::now();
      (void)cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s);
      (void)cudaStreamSynchronize(s);
      t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
    (void)cudaStreamDestroy(s);
    (void)cudaFree(dev);
    (void)cudaFreeHost(host);
    return median(t);
  }
#endif
  (void)gpu;
  std::vector<char> a(bytes, 1), b(bytes);
  const auto t0 = Clock::now();
  std::memcpy(b.data(), a.data(), bytes);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Env {
  std::unique_ptr<DeviceCatalog> catalog;
  std::unique_ptr<MemoryManager> manager;
  std::unique_ptr<TransferEngine> engine;
  std::unique_ptr<EventBus> bus;
  std::unique_ptr<Monitor> monitor;
  std::unique_ptr<ModelManager> models;
  DeviceId device;
  bool gpu = false;

  Env(const fs::path& root, std::uint64_t ram_cache) {
    BackendOptions bo;
    bo.host_device_sizes = {8 * kGiB};  // the stand-in without a GPU
    auto c = DeviceCatalog::discover(bo);
    if (!c) die("discover: " + c.error().message);
    catalog = std::move(*c);
    gpu = catalog->info(DeviceId::cuda(0)).has_value();
    device = gpu ? DeviceId::cuda(0) : DeviceId::host(0);
    ManagerOptions mo;
    mo.pinned_limit_bytes = ram_cache + 4 * kGiB;
    manager = std::make_unique<MemoryManager>(*catalog, mo);
    Backend* backend = nullptr;
    for (const auto& b : catalog->backends())
      if (b->name() == (gpu ? "cuda" : "host")) backend = b.get();
    if (!backend) die("no backend for " + device.to_string());
    engine = std::make_unique<TransferEngine>(*manager, *backend, TransferOptions{});
    bus = std::make_unique<EventBus>();
    MonitorOptions o;
    o.interval = std::chrono::milliseconds(0);
    auto m = Monitor::create(*catalog, *manager, *engine, *bus, o);
    if (!m) die("monitor: " + m.error().message);
    monitor = std::move(*m);
    ModelOptions mopt;
    auto roots = ModelRoots::create({root});
    if (!roots) die("roots: " + roots.error().message);
    mopt.roots = std::move(*roots);
    mopt.ram_cache_bytes = ram_cache;
    mopt.readers = 8;
    models = std::make_unique<ModelManager>(*manager, *engine, *monitor, *bus, std::move(mopt));
  }
  ~Env() {
    models.reset();
    monitor.reset();
    engine.reset();
  }

  // Request → done; the seconds it took and the status.
  std::pair<double, ModelStatus> load(const std::string& name, const std::string& path,
                                      std::optional<Dtype> dtype = std::nullopt) {
    ModelLoadRequest r;
    r.name = name;
    r.path = path;
    r.device = device;
    r.dtype = dtype;
    const auto t0 = Clock::now();
    auto started = models->load(r);
    if (!started) die("load " + name + ": " + started.error().message);
    auto done = models->wait(name);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!done) die("wait " + name + ": " + done.error().message);
    if (done->state != ModelState::Loaded) die("load " + name + ": " + done->error);
    return {s, *done};
  }
};

std::string tier_of(const ModelStatus& s, const std::string& component) {
  for (const auto& c : s.components)
    if (c.name == component) return std::string(to_string(c.tier));
  return "?";
}

}  // namespace
}  // namespace memd

int main(int argc, char** argv) {
  using namespace memd;
  std::string dir, file;
  double unet_gib = 5;
  std::optional<Dtype> dtype;
  bool do_switch = true;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--file" && i + 1 < argc) file = argv[++i];
    else if (a == "--unet-gib" && i + 1 < argc) unet_gib = std::atof(argv[++i]);
    else if (a == "--dtype" && i + 1 < argc) {
      dtype = parse_dtype(argv[++i]);
      if (!dtype) return 2;
    } else if (a == "--no-switch") do_switch = false;
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: memd_model_switch_bench --dir DIR [--file FILE] [--unet-gib 5] [--reps 3] [--dtype F16|BF16] [--no-switch]\n");
      return 2;
    }
  }
  if (dir.empty() || unet_gib <= 0) return 2;
  fs::create_directories(dir);
  const fs::path root = fs::canonical(dir);

  // 1 and 2: a single file through the manager, then back from the RAM tier.
  if (!file.empty()) {
    const fs::path src = fs::canonical(file);
    const fs::path link = root / "single.safetensors";
    std::error_code ec;
    fs::remove(link, ec);
    fs::create_hard_link(src, link, ec);
    if (ec) fs::copy_file(src, link, fs::copy_options::overwrite_existing);
    warm(link);
    Env e(root, 16 * kGiB);
    std::printf("device %s%s\n", e.device.to_string().c_str(), e.gpu ? "" : " (no GPU: host stand-in)");
    std::vector<double> load_rate, restore_rate, base_rate;
    std::uint64_t bytes = 0;
    for (int rep = 0; rep < reps; ++rep) {
      auto [secs, s] = e.load("single", "single.safetensors", dtype);
      bytes = s.bytes;
      load_rate.push_back(static_cast<double>(bytes) / secs / 1e9);
      // Down to the RAM tier, then asked for again.
      const auto freed = e.models->evict_for(e.device, bytes);
      auto down = e.models->status("single");
      if (freed < bytes || !down || down->tier != ModelTier::RAM) die("the model did not go down to the RAM tier");
      auto [rsecs, r] = e.load("single", "single.safetensors", dtype);
      if (r.tier != ModelTier::VRAM) die("restore did not reach VRAM");
      restore_rate.push_back(static_cast<double>(bytes) / rsecs / 1e9);
      if (rep == reps - 1) {
        std::printf("restore  stages (last rep, %.1f ms request -> Loaded):", rsecs * 1e3);
        for (const auto& [stage, stage_secs] : r.stage_seconds) std::printf(" %s %.2f ms;", stage.c_str(), stage_secs * 1e3);
        std::printf("\n");
      }
      base_rate.push_back(static_cast<double>(bytes) / pinned_copy_seconds(e.gpu, bytes) / 1e9);
      if (auto u = e.models->unload("single"); !u) die("unload: " + u.error().message);
    }
    // What the restore's time holds besides the copy: allocating its
    // exportable buffer (its units mapped), right after the same bytes
    // were freed, as the restore does after evict_for.
    std::vector<double> alloc_ms;
    for (int rep = 0; rep < reps; ++rep) {
      AllocationRequest ar;
      ar.size_bytes = bytes;
      ar.device = e.device;
      ar.memory_type = MemoryType::VRAM;
      ar.exportable = true;
      ar.allocation_type = MemoryAllocationType::Model;
      const auto t0 = std::chrono::steady_clock::now();
      auto rec = e.manager->allocate(ar);
      alloc_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      if (!rec) die("allocate the restore's buffer: " + rec.error().message);
      (void)e.manager->deallocate(rec->id);
    }
    // The transfer engine alone on the restore's path: the same bytes from
    // a cpu SharedMemory allocation (what the RAM tier holds) into an
    // exportable VRAM one, timed around TransferEngine::copy only.
    std::vector<double> engine_rate, engine_fresh_rate;
    {
      AllocationRequest host;
      host.size_bytes = bytes;
      host.device = DeviceId::cpu();
      host.memory_type = MemoryType::SharedMemory;
      AllocationRequest vram;
      vram.size_bytes = bytes;
      vram.device = e.device;
      vram.memory_type = MemoryType::VRAM;
      vram.exportable = true;
      auto src_rec = e.manager->allocate(host);
      if (!src_rec) die("allocating the engine copy's source");
      // Into a reused destination, then into a fresh one each time (as a
      // restore does: its buffer was just made).
      auto dst_rec = e.manager->allocate(vram);
      if (!dst_rec) die("allocating the engine copy's destination");
      auto time_copy = [&](const AllocationId& to) {
        TransferSpec spec;
        spec.source = src_rec->id;
        spec.destination = to;
        const auto t0 = std::chrono::steady_clock::now();
        auto copied = e.engine->copy(spec);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (!copied) die("engine copy: " + copied.error().message);
        return static_cast<double>(bytes) / secs / 1e9;
      };
      for (int rep = 0; rep < reps + 1; ++rep) {
        const double rate = time_copy(dst_rec->id);
        if (rep > 0) engine_rate.push_back(rate);  // the first touches the destination
      }
      (void)e.manager->deallocate(dst_rec->id);
      for (int rep = 0; rep < reps; ++rep) {
        auto fresh = e.manager->allocate(vram);
        if (!fresh) die("allocating a fresh destination");
        engine_fresh_rate.push_back(time_copy(fresh->id));
        (void)e.manager->deallocate(fresh->id);
      }
      (void)e.manager->deallocate(src_rec->id);
    }
    const double l = median(load_rate), r = median(restore_rate), b = median(base_rate);
    std::printf("load     %.2f GiB via the manager: %8.2f GB/s (median of %d; page cache warm)\n",
                static_cast<double>(bytes) / static_cast<double>(kGiB), l, reps);
    if (dtype) {
      // Narrowed: the file holds more bytes than land; its rate is what a
      // reader of the file (load_file + .half()) is compared with.
      const double file_bytes = static_cast<double>(fs::file_size(src));
      std::printf("         narrowed to %s: file %.2f GiB read at %8.2f GB/s\n", std::string(to_string(*dtype)).c_str(),
                  file_bytes / static_cast<double>(kGiB), l * file_bytes / static_cast<double>(bytes));
    }
    std::printf("restore  from the RAM tier:        %8.2f GB/s vs pinned copy %8.2f GB/s: %.2f%s\n", r, b,
                b > 0 ? r / b : 0.0, e.gpu ? (r / b >= 0.9 ? "  (goal >= 0.90: met)" : "  (goal >= 0.90: MISSED)") : "");
    const double am = median(alloc_ms);
    const double copy_only = r > 0 ? static_cast<double>(bytes) / (static_cast<double>(bytes) / r / 1e9 - am / 1e3) / 1e9 : 0;
    std::printf("         of which allocating its buffer (exportable): %.2f ms; the rest %8.2f GB/s (%.2f)\n", am,
                copy_only, b > 0 ? copy_only / b : 0.0);
    const double er = median(engine_rate), ef = median(engine_fresh_rate);
    std::printf("         the transfer engine alone, SharedMemory -> VRAM: %8.2f GB/s (%.2f); into a fresh buffer "
                "each time %8.2f GB/s (%.2f)\n",
                er, b > 0 ? er / b : 0.0, ef, b > 0 ? ef / b : 0.0);
    fs::remove(link, ec);
  }

  if (!do_switch) return 0;
  // 3: the SDXL-shaped switch.
  const std::uint64_t unet = static_cast<std::uint64_t>(unet_gib * static_cast<double>(kGiB)) / kMiB * kMiB;
  const fs::path a = root / "sdxl-a", b = root / "sdxl-b";
  if (!fs::exists(a / "model_index.json")) write_pipeline(a, unet, 1);
  if (!fs::exists(b / "model_index.json")) write_pipeline(b, unet, 2);
  warm_tree(a);
  warm_tree(b);
  // The RAM tier holds both UNets: the one coming up keeps its RAM copy
  // (a cache) while the one going down lands beside it. Smaller, the one
  // going down falls through to Disk (seen on the H200, session 11).
  Env e(root, 2 * unet + 2 * kGiB);
  const std::uint64_t shared = (246 + 1327 + 160) * kMiB;
  Limits limits;
  limits.per_device[e.device] = unet + shared + unet / 2;
  if (auto ok = e.manager->set_limits(limits); !ok) die("limits: " + ok.error().message);
  // B first, then A: B's UNet goes down to the RAM tier to make room.
  (void)e.load("b", "sdxl-b");
  (void)e.load("a", "sdxl-a");
  std::vector<double> switches;
  std::string on = "a", off = "b";
  for (int rep = 0; rep < reps + 1; ++rep) {
    std::swap(on, off);  // bring `on` (in RAM) up, `off` goes down
    auto [secs, s] = e.load(on, on == "a" ? "sdxl-a" : "sdxl-b");
    auto other = e.models->status(off);
    if (s.tier != ModelTier::VRAM || !other || tier_of(*other, "unet") != "RAM")
      die("after the switch: " + on + " is " + std::string(to_string(s.tier)) + ", " + off + "'s unet is " +
          (other ? tier_of(*other, "unet") : "?"));
    if (s.shared_bytes < shared) die("the encoders and VAE are not shared");
    std::printf("switch %d: %s up from RAM, %s's unet down: %.3f s\n", rep, on.c_str(), off.c_str(), secs);
    if (rep > 0) switches.push_back(secs);  // the first pays one-time costs (staging, streams)
  }
  const double sw = median(switches);
  std::printf("switch   SDXL-shaped (unet %.2f GiB, shared %.2f GiB held once): median %.3f s%s\n",
              static_cast<double>(unet) / static_cast<double>(kGiB), static_cast<double>(shared) / static_cast<double>(kGiB),
              sw, e.gpu ? (sw < 0.25 ? "  (goal < 0.25 s: met)" : "  (goal < 0.25 s: MISSED)") : "");
  // A switch is a restore from the RAM tier that makes its own room (the
  // UNet going down already has its RAM copy and gives its VRAM buffer to
  // the one coming up): the UNet's bytes over the switch time, against a
  // pinned copy of the same bytes.
  const double base = pinned_copy_seconds(e.gpu, unet);
  const double rate = static_cast<double>(unet) / sw / 1e9, base_rate = static_cast<double>(unet) / base / 1e9;
  std::printf("restore  within the switch (unet bytes / switch time): %8.2f GB/s vs pinned copy %8.2f GB/s: %.2f%s\n",
              rate, base_rate, base_rate > 0 ? rate / base_rate : 0.0,
              e.gpu ? (rate / base_rate >= 0.9 ? "  (goal >= 0.90: met)" : "  (goal >= 0.90: MISSED)") : "");
  return 0;
}
