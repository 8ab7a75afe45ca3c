// model_load_bench — the component loader's rate from a safetensors file
// (issue 15: >= 20 GB/s from the page cache and >= 4x
// safetensors.torch.load_file(device="cuda"); bench/model_load_gpu.sh runs
// the baseline in the same run). A plain program.
//
//   memd_model_load_bench FILE [--readers 4,8] [--chunk-mib 8,16] [--reps 3] [--cold]
//
// The file's data section (everything after the 8-byte length and the JSON
// header) is one component, loaded as one run into one exportable allocation
// on cuda:0 (host:0 without a GPU, which it says) by load_component: reader
// threads pread into pinned staging and copy asynchronously. Each rep
// allocates, loads and frees; the figure is bytes ÷ the load's wall time
// (median of reps). --cold drops the file from the page cache first
// (posix_fadvise DONTNEED after fdatasync) and also times a plain
// sequential read of the file dropped the same way, in the same run.
// Afterwards 64 sampled KiB of the buffer are read back and compared with
// the file.
//
// Exit status: 0 measured; 1 a load failed or bytes differ; 2 bad flags.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "models/component_loader.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {
namespace {

using Clock = std::chrono::steady_clock;

std::vector<unsigned> parse_list(const char* text) {
  std::vector<unsigned> out;
  std::string s(text);
  std::size_t at = 0;
  while (at <= s.size()) {
    const auto comma = s.find(',', at);
    const auto part = s.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    const int v = std::atoi(part.c_str());
    if (v <= 0) return {};
    out.push_back(static_cast<unsigned>(v));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return out;
}

void drop_cache(const char* path) {
  const int fd = ::open(path, O_RDONLY);
  if (fd < 0) return;
  (void)::fdatasync(fd);
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// A plain sequential read of the whole file in 16 MiB reads: the cold-cache bar.
double sequential_read_gbps(const char* path) {
  const int fd = ::open(path, O_RDONLY);
  if (fd < 0) return 0;
  std::vector<char> buf(16 << 20);
  std::uint64_t total = 0;
  const auto t0 = Clock::now();
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n <= 0) break;
    total += static_cast<std::uint64_t>(n);
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  ::close(fd);
  return static_cast<double>(total) / s / 1e9;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace
}  // namespace memd

int main(int argc, char** argv) {
  using namespace memd;
  if (argc < 2 || std::string(argv[1]) == "--help") {
    std::puts("memd_model_load_bench FILE [--readers 4,8] [--chunk-mib 8,16] [--reps 3] [--cold]");
    return argc < 2 ? 2 : 0;
  }
  const char* path = argv[1];
  std::vector<unsigned> readers = {4, 8}, chunks = {8, 16};
  int reps = 3;
  bool cold = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--readers" && i + 1 < argc) readers = parse_list(argv[++i]);
    else if (a == "--chunk-mib" && i + 1 < argc) chunks = parse_list(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--cold") cold = true;
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (readers.empty() || chunks.empty()) return 2;

  auto file = ModelFile::open(path);
  if (!file) {
    std::fprintf(stderr, "%s\n", file.error().message.c_str());
    return 1;
  }
  std::byte len_bytes[8];
  if (!file->read_at(0, len_bytes)) return 1;
  std::uint64_t header = 0;
  std::memcpy(&header, len_bytes, 8);  // little-endian, as the format says (and x86 is)
  if (header > file->size() - 8) {
    std::fprintf(stderr, "header length %llu past the file\n", static_cast<unsigned long long>(header));
    return 1;
  }
  const std::uint64_t data_offset = 8 + header, data_bytes = file->size() - data_offset;
  std::vector<ModelFile> files;
  files.push_back(std::move(*file));
  const std::vector<CopyRun> runs = {{0, data_offset, 0, data_bytes}};

  BackendOptions bo;
  bo.host_device_sizes = {data_bytes + 64 * kMiB};
  auto catalog = DeviceCatalog::discover(bo);
  if (!catalog) return 1;
  const DeviceId device = (*catalog)->info(DeviceId::cuda(0)) ? DeviceId::cuda(0) : DeviceId::host(0);
  std::printf("file %s: %.2f GiB of tensor data; device %s%s\n", path, static_cast<double>(data_bytes) / kGiB,
              device.to_string().c_str(), device.kind() == DeviceKind::Cuda ? "" : " (no GPU: the host stand-in)");
  if (cold) std::printf("cold: sequential read of the dropped file %.2f GB/s\n", (drop_cache(path), sequential_read_gbps(path)));
  std::printf("%-8s %-10s %12s %12s\n", "readers", "chunk MiB", "GB/s", "reps");
  bool failed = false;
  for (unsigned chunk : chunks) {
    MemoryManager manager(**catalog);
    Backend* host = nullptr;
    for (const auto& b : (*catalog)->backends())
      if (b->name() == "host") host = b.get();
    TransferOptions to;
    to.copy.chunk_bytes = std::uint64_t{chunk} << 20;
    TransferEngine engine(manager, *host, to);
    for (unsigned r : readers) {
      std::vector<double> rates;
      for (int rep = 0; rep < reps; ++rep) {
        AllocationRequest req;
        req.size_bytes = data_bytes;
        req.device = device;
        req.exportable = true;
        req.owner = "bench";
        auto rec = manager.allocate(req);
        if (!rec) {
          std::fprintf(stderr, "allocate: %s\n", rec.error().message.c_str());
          return 1;
        }
        {
          auto hold = manager.hold(rec->id);
          AllocationLocation at;
          {
            std::shared_lock io(hold->entry().io);
            at = hold->location();
          }
          if (cold) drop_cache(path);
          LoadProgress progress;
          LoaderOptions lo;
          lo.readers = r;
          const auto t0 = std::chrono::steady_clock::now();
          auto ok = load_component(files, runs, {at.backend, at.ptr, data_bytes}, device, engine.stream_pool(),
                                   engine.staging_buffers(), progress, lo);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (!ok) {
            std::fprintf(stderr, "load: %s\n", ok.error().message.c_str());
            failed = true;
          } else {
            rates.push_back(static_cast<double>(data_bytes) / s / 1e9);
          }
        }
        if (rep == 0) {
          // Sampled check: 16 pieces of 4 KiB across the buffer against the file.
          for (int k = 0; k < 16 && !failed; ++k) {
            const std::uint64_t off = (data_bytes - 4096) / 15 * static_cast<std::uint64_t>(k);
            auto got = engine.read(rec->id, off, 4096);
            std::vector<std::byte> want(4096);
            if (!got || !files[0].read_at(data_offset + off, want) || *got != want) {
              std::fprintf(stderr, "bytes differ at offset %llu\n", static_cast<unsigned long long>(off));
              failed = true;
            }
          }
        }
        (void)manager.deallocate(rec->id);
      }
      std::printf("%-8u %-10u %12.2f %12d\n", r, chunk, median(rates), reps);
    }
  }
  return failed ? 1 : 0;
}
