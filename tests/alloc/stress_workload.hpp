// The multi-threaded workloads behind stress_test.cpp (short, label unit) and
// long_stress_test.cpp (long, label stress): many threads allocating and
// freeing random sizes on one DevicePool or one MemoryManager, some through
// streams, some handing blocks to other threads to free, every block's bytes
// stamped and checked, while a checker thread takes stats, snapshots, runs
// validate() and trims. validate() after joining.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "alloc/device_pool.hpp"
#include "alloc/memory_manager.hpp"
#include "transfer/transfer_engine.hpp"
#include "alloc_test_support.hpp"

namespace memd::alloc_test {

struct StressConfig {
  std::chrono::milliseconds duration{1000};
  int threads = 6;
  std::uint64_t seed = 1;
};

// MEMD_STRESS_SECONDS overrides the duration (for soak runs by hand).
inline std::chrono::milliseconds stress_duration(std::chrono::milliseconds fallback) {
  if (const char* s = std::getenv("MEMD_STRESS_SECONDS"); s != nullptr && *s != '\0') {
    double seconds = std::strtod(s, nullptr);
    if (seconds > 0) return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
  }
  return fallback;
}

// Records the first failure of any worker; workers stop once one is set.
class FailureLog {
 public:
  void add(std::string what) {
    std::lock_guard lock(mu_);
    if (failures_.size() < 20) failures_.push_back(std::move(what));
    failed_.store(true, std::memory_order_relaxed);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void report() const {
    std::lock_guard lock(mu_);
    for (const auto& f : failures_) ADD_FAILURE() << f;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> failures_;
  std::atomic<bool> failed_{false};
};

// Small (most), medium, large and occasionally huge (>= 16 MiB).
inline std::uint64_t stress_size(std::mt19937_64& rng) {
  auto r = rng() % 1000;
  if (r < 700) return 1 + rng() % (8 * kKiB);
  if (r < 930) return 8 * kKiB + rng() % (1 * kMiB);
  if (r < 995) return 1 * kMiB + rng() % (12 * kMiB);
  return 16 * kMiB + rng() % (24 * kMiB);
}

inline void stamp(void* p, std::uint64_t size, std::uint64_t salt) {
  if (size <= 64 * kKiB) fill_pattern(p, size, salt);
  else stamp_sparse(p, size, salt);
}

inline bool stamped(const void* p, std::uint64_t size, std::uint64_t salt) {
  if (size <= 64 * kKiB) return check_pattern(p, size, salt) < 0;
  return check_sparse(p, size, salt);
}

// ----- DevicePool --------------------------------------------------------------

// Runs cfg.threads workers and one checker for cfg.duration, then stops and
// joins them all (the harness both workloads share).
template <typename Worker, typename Checker>
void run_for(const StressConfig& cfg, Worker& worker, Checker& checker, std::atomic<bool>& stop) {
  std::vector<std::thread> threads;
  for (int t = 0; t < cfg.threads; ++t) threads.emplace_back(worker, t);
  std::thread check(checker);
  std::this_thread::sleep_for(cfg.duration);
  stop.store(true);
  for (auto& th : threads) th.join();
  check.join();
}

inline void run_pool_stress(const StressConfig& cfg) {
  PoolOptions options;
  options.huge_threshold = 16 * kMiB;
  options.stream_batch = 8;  // fence often so events and drains are exercised
  PoolEnv env = make_pool(1 * kGiB, options);
  ASSERT_TRUE(env.pool);
  DevicePool& pool = *env.pool;
  std::vector<Stream> streams;
  for (int i = 0; i < 2; ++i) {
    auto s = env.backend->create_stream(DeviceId::host(0));
    ASSERT_TRUE(s) << s.error().message;
    streams.push_back(*s);
  }

  struct Block {
    void* ptr = nullptr;
    std::uint64_t size = 0;
    std::uint64_t salt = 0;
  };
  std::mutex mailbox_mu;  // blocks allocated by one thread, freed by another
  std::vector<Block> mailbox;
  FailureLog log;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0}, stream_ops{0}, handoffs{0};
  constexpr std::uint64_t kBudget = 80 * kMiB;  // live bytes per thread

  auto check_and_free = [&](const Block& b, const Stream* s, const char* who) -> bool {
    if (!stamped(b.ptr, b.size, b.salt)) {
      log.add(fmt::format("{}: block of {} at {} lost its bytes", who, b.size, b.ptr));
      return false;
    }
    auto r = s ? pool.deallocate(b.ptr, *s) : pool.deallocate(b.ptr);
    if (!r) {
      log.add(fmt::format("{}: deallocate of {} at {}: {}", who, b.size, b.ptr, r.error().message));
      return false;
    }
    return true;
  };

  auto worker = [&](int t) {
    std::mt19937_64 rng(cfg.seed * 1000 + static_cast<std::uint64_t>(t));
    // Mode 0: plain; 1: always on its stream; 2: mixed.
    const int mode = t % 3;
    const Stream* own = mode == 0 ? nullptr : &streams[static_cast<std::size_t>(t) % streams.size()];
    std::vector<Block> live;
    std::uint64_t live_bytes = 0, salt = static_cast<std::uint64_t>(t) << 40;
    auto free_one = [&] {
      std::size_t i = rng() % live.size();
      Block b = live[i];
      live[i] = live.back();
      live.pop_back();
      live_bytes -= b.size;
      const Stream* s = (mode == 1 || (mode == 2 && rng() % 2)) ? own : nullptr;
      if (s) stream_ops.fetch_add(1, std::memory_order_relaxed);
      if (rng() % 8 == 0) {  // hand it to someone else
        std::lock_guard lock(mailbox_mu);
        mailbox.push_back(b);
        handoffs.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      return check_and_free(b, s, "worker");
    };
    while (!stop.load(std::memory_order_relaxed) && !log.failed()) {
      ops.fetch_add(1, std::memory_order_relaxed);
      if (rng() % 16 == 0) {  // free what others handed over
        std::vector<Block> mine;
        {
          std::lock_guard lock(mailbox_mu);
          mine.swap(mailbox);
        }
        for (const auto& b : mine)
          if (!check_and_free(b, nullptr, "mailbox")) return;
      }
      std::uint64_t size = stress_size(rng);
      bool allocate = live.empty() || (live.size() < 200 && rng() % 100 < 55);
      if (allocate && live_bytes + size > kBudget) allocate = false;
      if (!allocate) {
        if (!live.empty() && !free_one()) return;
        continue;
      }
      const Stream* s = (mode == 1 || (mode == 2 && rng() % 2)) ? own : nullptr;
      auto p = s ? pool.allocate(size, *s) : pool.allocate(size);
      if (!p) {
        log.add(fmt::format("thread {}: allocate {}: {}", t, size, p.error().message));
        return;
      }
      if (reinterpret_cast<std::uint64_t>(*p) % 256 != 0) {
        log.add(fmt::format("thread {}: {} is not 256-byte aligned", t, *p));
        return;
      }
      Block b{*p, size, ++salt};
      stamp(b.ptr, b.size, b.salt);
      live.push_back(b);
      live_bytes += size;
    }
    while (!live.empty())
      if (!free_one()) return;
  };

  auto checker = [&] {
    int round = 0;
    while (!stop.load(std::memory_order_relaxed) && !log.failed()) {
      if (auto v = pool.validate(); !v) log.add("validate during the run: " + v.error().message);
      auto st = pool.stats();
      if (st.largest_free_block > st.free_bytes)
        log.add(fmt::format("stats: largest free {} > free {}", st.largest_free_block, st.free_bytes));
      (void)pool.snapshot();
      (void)pool.reserved_bytes();
      if (++round % 8 == 0) pool.trim();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };

  run_for(cfg, worker, checker, stop);
  for (const auto& b : mailbox) (void)check_and_free(b, nullptr, "final mailbox");
  mailbox.clear();
  log.report();

  MEMD_EXPECT_OK(pool.validate());
  auto st = pool.stats();
  EXPECT_EQ(st.live_allocations, 0u);
  EXPECT_EQ(st.allocated_bytes, 0u);
  pool.trim();
  MEMD_EXPECT_OK(pool.validate());
  EXPECT_EQ(pool.reserved_bytes(), 0u) << "trim after the run left memory held";
  EXPECT_GT(ops.load(), 100u) << "the workload hardly ran";
  EXPECT_GT(stream_ops.load(), 0u);
  EXPECT_GT(handoffs.load(), 0u);
  env.pool.reset();
  for (const auto& s : streams) (void)env.backend->destroy_stream(s);
}

// ----- MemoryManager -------------------------------------------------------------

inline void run_manager_stress(const StressConfig& cfg) {
  auto catalog = host_catalog(1 * kGiB);
  ASSERT_TRUE(catalog);
  MemoryManager manager(*catalog);
  // Bytes are read and written through src/transfer, as the service does.
  Backend* host_backend = nullptr;
  for (const auto& b : catalog->backends())
    if (b->name() == "host") host_backend = b.get();
  TransferEngine bytes(manager, *host_backend, TransferOptions{.workers = 1});
  ASSERT_TRUE(manager.set_limits(Limits{.per_owner = {{"limited", 4 * kMiB}}}));

  struct Shared {
    AllocationId id;
    std::uint64_t size = 0;
    std::uint64_t seed = 0;
  };
  std::mutex shared_mu;  // ids every thread may read (and race with their free)
  std::vector<Shared> shared;
  FailureLog log;
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> ops{0}, racing_reads{0}, reclaimed{0};

  // Reclaim frees "cache"-tagged allocations; the workload stays far below the
  // device, so it only runs if something is wrong, but it must be safe.
  manager.add_reclaim_callback([&](DeviceId d, MemoryType, std::uint64_t) -> std::uint64_t {
    std::uint64_t freed = 0;
    for (const auto& r : manager.free_matching({.device = d, .tag = "cache"}, false)) freed += r.size_bytes;
    reclaimed.fetch_add(freed);
    return freed;
  });

  auto head_bytes = [](std::uint64_t size, std::uint64_t seed) {
    std::vector<std::byte> out(std::min<std::uint64_t>(size, 512));
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::byte>(pattern_word(seed, i, 7));
    return out;
  };

  auto worker = [&](int t) {
    std::mt19937_64 rng(cfg.seed * 7919 + static_cast<std::uint64_t>(t));
    const std::string owner = t == 0 ? "limited" : fmt::format("owner-{}", t);
    std::vector<Shared> mine;
    std::uint64_t seed_counter = static_cast<std::uint64_t>(t) << 40;
    auto release = [&](std::size_t i) -> bool {
      Shared s = mine[i];
      mine[i] = mine.back();
      mine.pop_back();
      {
        std::lock_guard lock(shared_mu);
        std::erase_if(shared, [&](const Shared& x) { return x.id == s.id; });
      }
      auto back = bytes.read(s.id, 0, std::min<std::uint64_t>(s.size, 512));
      if (!back) {
        // Reclaim may have taken a cache-tagged one.
        if (back.error().code == ErrorCode::not_found) return true;
        log.add(fmt::format("{}: read before free: {}", owner, back.error().message));
        return false;
      }
      if (*back != head_bytes(s.size, s.seed)) {
        log.add(fmt::format("{}: allocation {} lost its bytes", owner, s.id.to_string()));
        return false;
      }
      auto r = manager.deallocate(s.id);
      if (!r && r.error().code != ErrorCode::not_found) {
        log.add(fmt::format("{}: deallocate: {}", owner, r.error().message));
        return false;
      }
      return true;
    };
    while (!stop.load(std::memory_order_relaxed) && !log.failed()) {
      ops.fetch_add(1, std::memory_order_relaxed);
      auto op = rng() % 100;
      if (op < 45 || mine.empty()) {
        AllocationRequest req;
        req.size_bytes = stress_size(rng) / 2 + 1;
        req.owner = owner;
        req.memory_type = rng() % 4 == 0 ? MemoryType::RAM : MemoryType::VRAM;
        if (rng() % 5 == 0) req.tags = {"cache"};
        if (mine.size() >= 48) {
          if (!release(rng() % mine.size())) return;
          continue;
        }
        auto rec = manager.allocate(req);
        if (!rec) {
          if (rec.error().code == ErrorCode::quota_exceeded && owner == "limited") continue;
          log.add(fmt::format("{}: allocate {}: {}", owner, req.size_bytes, rec.error().message));
          return;
        }
        Shared s{rec->id, req.size_bytes, ++seed_counter};
        auto head = head_bytes(s.size, s.seed);
        if (auto w = bytes.write(s.id, 0, head); !w && w.error().code != ErrorCode::not_found) {
          log.add(fmt::format("{}: write: {}", owner, w.error().message));
          return;
        }
        // A tail write exercises offsets near the end.
        std::vector<std::byte> tail(std::min<std::uint64_t>(s.size, 64), std::byte{0x5C});
        if (s.size > 1024)
          if (auto w = bytes.write(s.id, s.size - tail.size(), tail); !w && w.error().code != ErrorCode::not_found) {
            log.add(fmt::format("{}: tail write: {}", owner, w.error().message));
            return;
          }
        mine.push_back(s);
        std::lock_guard lock(shared_mu);
        shared.push_back(s);
      } else if (op < 80) {
        if (!release(rng() % mine.size())) return;
      } else if (op < 92) {
        // Read someone's allocation while its owner may be freeing it.
        Shared s;
        {
          std::lock_guard lock(shared_mu);
          if (shared.empty()) continue;
          s = shared[rng() % shared.size()];
        }
        racing_reads.fetch_add(1, std::memory_order_relaxed);
        if (auto got = manager.get(s.id)) {
          if (got->id != s.id || got->size_bytes != s.size || got->status == MemoryAllocationStatus::Unknown) {
            log.add(fmt::format("racing get of {} returned a wrong record", s.id.to_string()));
            return;
          }
        } else if (got.error().code != ErrorCode::not_found) {
          log.add(fmt::format("racing get: {}", got.error().message));
          return;
        }
        auto back = bytes.read(s.id, 0, std::min<std::uint64_t>(s.size, 512));
        if (!back) {
          if (back.error().code != ErrorCode::not_found) {
            log.add(fmt::format("racing read: {}", back.error().message));
            return;
          }
        } else if (*back != head_bytes(s.size, s.seed)) {
          // Ids are shared only after their bytes are written, so a live one
          // must read back exactly.
          log.add(fmt::format("racing read of {} saw foreign bytes", s.id.to_string()));
          return;
        }
      } else if (op < 96) {
        (void)manager.list({.owner = owner});
        (void)manager.usage_by_owner();
      } else if (op < 98) {
        if (!mine.empty()) (void)manager.get(mine[rng() % mine.size()].id);
      } else {
        (void)manager.pool_stats();
      }
    }
    while (!mine.empty())
      if (!release(mine.size() - 1)) return;
  };

  auto checker = [&] {
    int round = 0;
    while (!stop.load(std::memory_order_relaxed) && !log.failed()) {
      // Invariants hold at every instant: the manager's (in-flight quota
      // included) and each pool's.
      if (auto v = manager.validate(); !v) log.add("manager validate during the run: " + v.error().message);
      for (auto [device, type] : {std::pair{DeviceId::host(0), MemoryType::VRAM}, std::pair{DeviceId::cpu(), MemoryType::RAM}})
        if (auto pool = manager.pool(device, type))
          if (auto v = (*pool)->validate(); !v) log.add("pool validate during the run: " + v.error().message);
      (void)manager.snapshot();
      if (++round % 10 == 0) manager.trim();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  };

  run_for(cfg, worker, checker, stop);
  log.report();

  MEMD_EXPECT_OK(manager.validate());
  EXPECT_TRUE(manager.list({}).empty()) << "allocations left after every thread freed its own";
  EXPECT_TRUE(manager.usage_by_owner().empty());
  for (const auto& [key, st] : manager.pool_stats()) {
    EXPECT_EQ(st.live_allocations, 0u) << key.device.to_string();
    EXPECT_EQ(st.allocated_bytes, 0u) << key.device.to_string();
  }
  manager.trim();
  MEMD_EXPECT_OK(manager.validate());
  EXPECT_GT(ops.load(), 100u);
  EXPECT_GT(racing_reads.load(), 0u);
}

}  // namespace memd::alloc_test
