// Shared helpers of the transfer tests: a host-only manager with two host
// devices, random byte patterns, and waiting for a condition (the fault
// tests take pattern and wait_until from here too).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd::transfer_test {

inline std::vector<std::byte> pattern(std::uint64_t n, std::uint64_t seed) {
  std::vector<std::byte> out(n);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 0x1234567;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<std::byte>(x >> 24);
  }
  return out;
}

template <typename F>
bool wait_until(F&& done, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// A manager on two host devices and an engine over it (engine goes first).
struct Env {
  std::unique_ptr<DeviceCatalog> catalog;
  std::unique_ptr<MemoryManager> manager;
  std::unique_ptr<TransferEngine> engine;

  explicit Env(TransferOptions options = {}, std::uint64_t device_bytes = 512 * kMiB) {
    BackendOptions bo;
    bo.host_device_sizes = {device_bytes, device_bytes};
    bo.enable_cuda = false;
    auto c = DeviceCatalog::discover(bo);
    EXPECT_TRUE(c) << (c ? "" : c.error().message);
    catalog = std::move(*c);
    ManagerOptions mo;
    mo.pinned_limit_bytes = 256 * kMiB;
    manager = std::make_unique<MemoryManager>(*catalog, mo);
    Backend* host = nullptr;
    for (const auto& b : catalog->backends())
      if (b->name() == "host") host = b.get();
    engine = std::make_unique<TransferEngine>(*manager, *host, options);
  }
  ~Env() {
    engine.reset();
    auto v = manager->validate();
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
    manager.reset();
  }

  AllocationRecord alloc(std::uint64_t bytes, DeviceId device, MemoryType type, std::string owner = "t",
                         bool pinned = false) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = device;
    r.memory_type = type;
    r.owner = std::move(owner);
    r.pinned = pinned;
    auto rec = manager->allocate(r);
    EXPECT_TRUE(rec) << (rec ? "" : rec.error().message);
    return rec ? *rec : AllocationRecord{};
  }
  std::vector<std::byte> fill(const AllocationRecord& rec, std::uint64_t seed) {
    auto bytes = pattern(rec.size_bytes, seed);
    auto w = engine->write(rec.id, 0, bytes);
    EXPECT_TRUE(w) << (w ? "" : w.error().message);
    return bytes;
  }
  std::vector<std::byte> bytes(const AllocationRecord& rec) {
    auto r = engine->read(rec.id, 0, rec.size_bytes);
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? *r : std::vector<std::byte>{};
  }
  TransferReport finished(const TransferId& id) {
    TransferReport last;
    EXPECT_TRUE(wait_until([&] {
      auto s = engine->status(id);
      if (!s) return false;
      last = *s;
      return s->finished();
    })) << "transfer did not finish";
    return last;
  }
};

}  // namespace memd::transfer_test
