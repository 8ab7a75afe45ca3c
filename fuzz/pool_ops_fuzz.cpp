// libFuzzer target: the allocator under an arbitrary sequence of operations
// (issue 17, item 1): a DevicePool over a 64 MiB host:0, driven by the
// input three bytes at a time — allocate (sizes from 1 byte to 12 MiB),
// free, allocate and free in stream order on two streams (the first is the
// pool's home), trim, defragmentation's picture, validate.
//
// Invariants: nothing crashes; every refusal is out_of_memory or
// invalid_argument (a bad free); validate() holds after every operation;
// every live block keeps the words written into it (a block handed out
// twice, or overwritten by a neighbour, reads back wrong); at the end every
// block is freed and the pool holds nothing live.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "alloc/device_pool.hpp"
#include "backends/device_catalog.hpp"

namespace {

using namespace memd;

struct Live {
  std::uint64_t address = 0;
  std::uint64_t size = 0;
  std::uint64_t salt = 0;
  int stream = -1;  // -1: allocated without a stream
};

std::uint64_t word(std::uint64_t address, std::uint64_t salt) {
  std::uint64_t x = address ^ (salt * 0x9E3779B97F4A7C15ull);
  x ^= x >> 29;
  x *= 0xBF58476D1CE4E5B9ull;
  return x ^ (x >> 32);
}

// The first and last 8 bytes; a block under 16 bytes: its first (up to 8).
void stamp(const Live& l) {
  const std::uint64_t w = word(l.address, l.salt);
  const std::size_t n = l.size < 8 ? l.size : 8;
  std::memcpy(reinterpret_cast<void*>(l.address), &w, n);
  if (l.size >= 16) std::memcpy(reinterpret_cast<void*>(l.address + l.size - 8), &w, 8);
}

bool intact(const Live& l) {
  const std::uint64_t w = word(l.address, l.salt);
  const std::size_t n = l.size < 8 ? l.size : 8;
  return std::memcmp(reinterpret_cast<void*>(l.address), &w, n) == 0 &&
         (l.size < 16 || std::memcmp(reinterpret_cast<void*>(l.address + l.size - 8), &w, 8) == 0);
}

std::uint64_t size_from(std::uint8_t a, std::uint8_t b) {
  switch (a & 3) {
    case 0: return 1 + b;                                       // tiny
    case 1: return 256 + (static_cast<std::uint64_t>(b) << 6);  // slab classes
    case 2: return 8192 + (static_cast<std::uint64_t>(b) << 13);  // medium, up to ~2 MiB
    default: return (1 + (b % 12)) * (1ull << 20) + (a >> 2);     // large, up to 12 MiB
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::unique_ptr<DeviceCatalog> catalog = [] {
    BackendOptions o;
    o.host_device_sizes = {64ull << 20};
    o.enable_cuda = false;
    auto c = DeviceCatalog::discover(o);
    if (!c) std::abort();
    return std::move(*c);
  }();
  auto backend = catalog->backend_for(DeviceId::host(0), MemoryType::VRAM);
  if (!backend) std::abort();
  PoolOptions options;
  options.device = DeviceId::host(0);
  options.stream_batch = 4;
  auto made = DevicePool::create(**backend, options);
  if (!made) std::abort();
  auto pool = std::move(*made);
  Stream streams[2] = {*(*backend)->create_stream(DeviceId::host(0)), *(*backend)->create_stream(DeviceId::host(0))};
  std::vector<Live> live;
  std::uint64_t salt = 0;
  auto check = [&] {
    if (!pool->validate()) std::abort();
    for (const auto& l : live)
      if (!intact(l)) std::abort();
  };
  for (std::size_t i = 0; i + 3 <= size && i < 3 * 2000; i += 3) {
    const std::uint8_t op = data[i], a = data[i + 1], b = data[i + 2];
    switch (op % 8) {
      case 0:
      case 1:
      case 2: {  // allocate, with or without a stream
        const int s = op % 8 == 0 ? -1 : (op >> 3) & 1;
        const std::uint64_t n = size_from(a, b);
        auto r = s < 0 ? pool->allocate(n) : pool->allocate(n, streams[s]);
        if (!r) {
          if (r.error().code != ErrorCode::out_of_memory) std::abort();
          break;
        }
        Live l{reinterpret_cast<std::uint64_t>(*r), n, ++salt, s};
        for (const auto& other : live)
          if (l.address < other.address + other.size && other.address < l.address + l.size) std::abort();
        stamp(l);
        live.push_back(l);
        break;
      }
      case 3:
      case 4: {  // free one, on its stream or another, or without
        if (live.empty()) break;
        const std::size_t k = (static_cast<std::size_t>(a) << 8 | b) % live.size();
        const Live l = live[k];
        if (!intact(l)) std::abort();
        const int s = op % 8 == 3 ? -1 : (op >> 3) & 1;
        auto r = s < 0 ? pool->deallocate(reinterpret_cast<void*>(l.address))
                       : pool->deallocate(reinterpret_cast<void*>(l.address), streams[s]);
        if (!r) std::abort();  // a live block always frees
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
        // A second free of it is refused, whatever the path took it.
        if ((a & 7) == 0) {
          auto again = pool->deallocate(reinterpret_cast<void*>(l.address));
          if (again || again.error().code != ErrorCode::invalid_argument) std::abort();
        }
        break;
      }
      case 5:
        (void)pool->trim();
        break;
      case 6:
        (void)pool->defrag_space();
        break;
      default:
        break;
    }
    check();
  }
  for (const auto& l : live)
    if (!pool->deallocate(reinterpret_cast<void*>(l.address))) std::abort();
  live.clear();
  (void)pool->trim();
  check();
  if (pool->counters().allocated_bytes != 0 || pool->counters().live_allocations != 0) std::abort();
  pool.reset();
  (void)(*backend)->destroy_stream(streams[0]);
  (void)(*backend)->destroy_stream(streams[1]);
  return 0;
}
