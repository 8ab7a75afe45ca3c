// tests/faults/fault_test_support.hpp — what every fault test shares: the
// seed (MEMD_FAULT_SEED to replay one; printed by every failure), byte
// patterns, and a MemoryService on host devices whose backends are wrapped
// in a FaultBackend the test arms (backends/fault_backend.hpp), with the
// checks made after each injected fault: validate(), bystanders' bytes,
// the device counters back at their baseline, and a fresh allocation that
// works.
//
// Thread safety: one thread drives a FaultService; the service's own
// threads (transfer workers, host streams) run under it.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/fault_backend.hpp"
#include "memd/size.hpp"
#include "service/memory_service.hpp"
#include "transfer/transfer_test_support.hpp"

namespace memd::faults {

// The run's seed: MEMD_FAULT_SEED when set (to replay a failure), else a
// fresh one. Tests put it in a SCOPED_TRACE so every failure prints it.
inline std::uint64_t run_seed() {
  if (const char* s = std::getenv("MEMD_FAULT_SEED"); s != nullptr && *s != '\0') return std::strtoull(s, nullptr, 10);
  return std::random_device{}() * 0x100000001ull ^ std::random_device{}();
}

inline std::string seed_note(std::uint64_t seed) {
  return "fault seed " + std::to_string(seed) + " (rerun with MEMD_FAULT_SEED=" + std::to_string(seed) + ")";
}

// Byte patterns and polling, as the transfer tests have them.
using transfer_test::pattern;
using transfer_test::wait_until;

struct Counters {
  std::uint64_t allocated_bytes = 0, allocations = 0;
  friend bool operator==(const Counters&, const Counters&) = default;
};
inline std::ostream& operator<<(std::ostream& os, const Counters& c) {
  return os << "{allocated " << c.allocated_bytes << " B in " << c.allocations << "}";
}

// An allocation whose bytes the test knows.
struct Known {
  AllocationRecord record;
  std::vector<std::byte> bytes;
};

struct FaultServiceOptions {
  std::vector<std::uint64_t> host_device_sizes = {64 * kMiB, 64 * kMiB};
  std::uint64_t chunk_bytes = 256 * kKiB;
  std::optional<ModelRoots> model_roots;
  std::uint64_t ram_cache_bytes = 0;  // the models' RAM tier; 0: none
};

class FaultService {
 public:
  const DeviceId dev0 = DeviceId::host(0), dev1 = DeviceId::host(1);
  const Caller alice = Caller::as("alice");
  const Caller admin = Caller{"ops", true, std::nullopt};
  std::shared_ptr<FaultPlan> plan = std::make_shared<FaultPlan>();
  std::unique_ptr<MemoryService> service;

  explicit FaultService(FaultServiceOptions o = {}) {
    ServiceOptions options;
    options.backends.host_device_sizes = o.host_device_sizes;
    // Small pages: an allocation maps several, so "the Nth map" lands
    // inside allocations, not only at their first page.
    options.backends.host_granularity = 256 * kKiB;
    options.backends.enable_cuda = false;
    auto p = plan;
    options.backends.wrap = [p](std::unique_ptr<Backend> inner) -> std::unique_ptr<Backend> {
      return std::make_unique<FaultBackend>(std::move(inner), p);
    };
    options.session_sweep_interval = std::chrono::milliseconds(0);
    options.monitor.interval = std::chrono::milliseconds(0);
    options.transfers.copy.chunk_bytes = o.chunk_bytes;
    options.transfers.copy.device_chunk_bytes = o.chunk_bytes;
    options.transfers.copy.window_chunks = 4;
    options.models.preload = false;
    if (o.model_roots) options.models.roots = std::move(*o.model_roots);
    options.models.ram_cache_bytes = o.ram_cache_bytes;
    auto s = MemoryService::create(options);
    EXPECT_TRUE(s) << (s ? "" : s.error().message);
    if (s) service = std::move(*s);
  }
  ~FaultService() {
    if (!service) return;
    plan->disarm_all();
    auto v = service->validate();
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
  }

  Counters counters(DeviceId device) const {
    const auto c = service->manager().device_counters(device);
    return {c.allocated_bytes, c.allocations};
  }
  std::map<DeviceId, Counters> all_counters() const {
    return {{dev0, counters(dev0)}, {dev1, counters(dev1)}, {DeviceId::cpu(), counters(DeviceId::cpu())}};
  }

  Result<AllocationRecord> allocate(std::uint64_t bytes, DeviceId device, MemoryType type = MemoryType::VRAM,
                                    const Caller* who = nullptr) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = device;
    r.memory_type = type;
    return service->allocate(who ? *who : alice, r);
  }
  // Allocated and written with pattern(seed); asserts both worked.
  Known known(std::uint64_t bytes, DeviceId device, std::uint64_t seed, MemoryType type = MemoryType::VRAM) {
    Known k;
    auto rec = allocate(bytes, device, type);
    EXPECT_TRUE(rec) << (rec ? "" : rec.error().message);
    if (!rec) return k;
    k.record = *rec;
    k.bytes = pattern(bytes, seed);
    auto w = service->write(alice, rec->id, 0, k.bytes);
    EXPECT_TRUE(w) << (w ? "" : w.error().message);
    return k;
  }
  std::vector<std::byte> read(const AllocationId& id, std::uint64_t bytes) {
    auto r = service->read(admin, id, 0, bytes);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : std::vector<std::byte>{};
  }
  // The allocation still holds exactly the bytes the test wrote.
  bool intact(const Known& k) {
    auto r = service->read(admin, k.record.id, 0, k.bytes.size());
    return r && *r == k.bytes;
  }
  void free(const AllocationId& id) {
    auto r = service->deallocate(admin, id);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
  }

  // After a fault: the books are sound, the service still allocates,
  // writes and reads (on both devices), and gives that memory back.
  void expect_serving() {
    auto v = service->validate();
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
    for (DeviceId d : {dev0, dev1}) {
      auto before = counters(d);
      auto fresh = known(768 * kKiB, d, 0xF4E5);
      EXPECT_TRUE(intact(fresh)) << "a fresh allocation on " << d.to_string() << " does not read back";
      free(fresh.record.id);
      EXPECT_EQ(counters(d), before);
    }
  }
};

// Allocations nobody's fault touches, on both devices and in RAM, whose
// bytes must survive every fault.
struct Bystanders {
  std::vector<Known> all;
  explicit Bystanders(FaultService& env) {
    all.push_back(env.known(300 * kKiB, env.dev0, 1));
    all.push_back(env.known(3 * kMiB + 4096, env.dev0, 2));
    all.push_back(env.known(kMiB, env.dev1, 3));
    all.push_back(env.known(2 * kMiB, DeviceId::cpu(), 4, MemoryType::RAM));
  }
  void expect_intact(FaultService& env) {
    for (const auto& k : all)
      EXPECT_TRUE(env.intact(k)) << "bystander " << k.record.id.to_string() << " on " << k.record.device.to_string()
                                 << " changed";
  }
};

}  // namespace memd::faults
