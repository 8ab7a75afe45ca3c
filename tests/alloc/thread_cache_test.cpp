// Per-thread caches of small slots: a cached slot is free to the user (a
// second free is refused at once, in any thread), statistics and trim see
// cached slots as free, a thread's exit gives its cache back, a pool may go
// before the threads that used it, and stream-ordered frees keep their rules.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "alloc/reclaim_ladder.hpp"
#include "alloc_test_support.hpp"
#include "backends/device_catalog.hpp"

namespace memd {
namespace {

using alloc_test::make_pool;
using alloc_test::PoolEnv;

// n blocks of `size` from this thread (asserting each succeeds).
std::vector<void*> allocate_n(DevicePool& pool, int n, std::uint64_t size) {
  std::vector<void*> blocks;
  for (int i = 0; i < n; ++i) {
    auto p = pool.allocate(size);
    EXPECT_TRUE(p) << p.error().message;
    if (p) blocks.push_back(*p);
  }
  return blocks;
}

// After every block went back: nothing allocated or live, `n` allocations
// and as many frees counted, and the pool valid.
void expect_all_back(DevicePool& pool, std::uint64_t n) {
  MEMD_ASSERT_OK(pool.validate());
  auto s = pool.stats();  // takes cached blocks back
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.total_allocations, n);
  EXPECT_EQ(s.total_frees, n);
  MEMD_ASSERT_OK(pool.validate());
}

// A 256 MiB pool on host:0 and a stream: f(pool, stream), then the pool goes
// before its stream.
template <typename F>
void with_stream(PoolOptions options, F&& f) {
  PoolEnv env = make_pool(256 * kMiB, options);
  ASSERT_TRUE(env.pool);
  auto stream = env.backend->create_stream(DeviceId::host(0));
  ASSERT_TRUE(stream);
  f(*env.pool, *stream);
  env.pool.reset();
  (void)env.backend->destroy_stream(*stream);
}

TEST(ThreadCache, FreedSlotIsReusedAndASecondFreeIsRefusedInAnyThread) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(1000);
  ASSERT_TRUE(a);
  EXPECT_EQ(pool.block_size(*a), 1024u);
  MEMD_ASSERT_OK(pool.deallocate(*a));
  EXPECT_FALSE(pool.block_size(*a)) << "a cached slot is no live block";
  auto again = pool.deallocate(*a);
  ASSERT_FALSE(again) << "double free of a cached slot was accepted";
  EXPECT_EQ(again.error().code, ErrorCode::invalid_argument);
  std::thread other([&] {
    auto r = pool.deallocate(*a);  // the slot sits in the first thread's cache
    EXPECT_FALSE(r);
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    }
  });
  other.join();
  auto b = pool.allocate(1000);
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, *a) << "the thread's cache serves its last freed slot first";
  MEMD_ASSERT_OK(pool.validate());
  MEMD_ASSERT_OK(pool.deallocate(*b));
  expect_all_back(pool, 2);
}

TEST(ThreadCache, SlotFreedByAnotherThreadIsCountedOnce) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::vector<void*> blocks;
  for (int i = 0; i < 500; ++i) {
    auto p = pool.allocate(256 + static_cast<std::uint64_t>(i % 32) * 256);
    ASSERT_TRUE(p);
    blocks.push_back(*p);
  }
  std::thread freer([&] {
    for (void* p : blocks) EXPECT_TRUE(pool.deallocate(p).has_value());
  });
  freer.join();  // its cache went back to the pool at its exit
  MEMD_ASSERT_OK(pool.validate());
  auto s = pool.stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.total_allocations, 500u);
  EXPECT_EQ(s.total_frees, 500u);
  for (void* p : blocks) EXPECT_FALSE(pool.deallocate(p)) << "freed twice across threads";
}

TEST(ThreadCache, TrimReturnsCachedSlotsAndTheirSpans) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::vector<void*> blocks = allocate_n(pool, 2000, 4096);
  ASSERT_EQ(blocks.size(), 2000u);
  for (void* p : blocks) MEMD_ASSERT_OK(pool.deallocate(p));
  // Up to a bin of slots sits in this thread's cache, holding a span; trim
  // takes them back, so every span and page goes.
  pool.trim();
  EXPECT_EQ(pool.reserved_bytes(), 0u);
  auto snap = pool.snapshot();
  for (const auto& seg : snap)
    for (const auto& b : seg.blocks) EXPECT_NE(b.state, "slab") << "a span survived trim";
  MEMD_ASSERT_OK(pool.validate());
}

TEST(ThreadCache, ThreadExitGivesTheCacheBackAndPoolMayGoFirst) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  // A thread that used the pool outlives it: its exit must not touch the pool.
  std::atomic<int> stage{0};
  std::thread survivor([&] {
    auto p = env.pool->allocate(512);
    ASSERT_TRUE(p);
    MEMD_ASSERT_OK(env.pool->deallocate(*p));  // now cached in this thread
    stage = 1;
    while (stage.load() != 2) std::this_thread::yield();
  });
  while (stage.load() != 1) std::this_thread::yield();
  MEMD_ASSERT_OK(env.pool->validate());
  EXPECT_EQ(env.pool->stats().live_allocations, 0u);
  env.pool.reset();
  stage = 2;
  survivor.join();  // under ASan, any touch of the gone pool fails here

  // A new pool on this thread does not inherit the old pool's cache.
  auto fresh = DevicePool::create(*env.backend, PoolOptions{});
  ASSERT_TRUE(fresh);
  auto q = (*fresh)->allocate(512);
  ASSERT_TRUE(q);
  MEMD_ASSERT_OK((*fresh)->deallocate(*q));
  MEMD_ASSERT_OK((*fresh)->validate());
}

TEST(ThreadCache, StreamFreesOfCachedSlotsKeepTheirRules) {
  with_stream({}, [&](DevicePool& pool, const Stream& stream) {
    auto a = pool.allocate(2048);  // through the cache
    ASSERT_TRUE(a);
    MEMD_ASSERT_OK(pool.deallocate(*a, stream));
    EXPECT_FALSE(pool.deallocate(*a)) << "plain free of a pending slot";
    EXPECT_FALSE(pool.deallocate(*a, stream)) << "second stream free";
    auto b = pool.allocate(2048, stream);  // same stream: reused at once
    ASSERT_TRUE(b);
    EXPECT_EQ(*b, *a);
    EXPECT_EQ(pool.block_size(*b), 2048u);
    MEMD_ASSERT_OK(pool.deallocate(*b));  // plain free of a stream-allocated slot
    EXPECT_FALSE(pool.deallocate(*b, stream));
    MEMD_ASSERT_OK(pool.validate());
    EXPECT_EQ(pool.stats().live_allocations, 0u);
  });
}

TEST(ThreadCache, DisabledCacheBehavesTheSame) {
  PoolEnv env = make_pool(256 * kMiB, PoolOptions{.thread_cache = false});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(300);
  ASSERT_TRUE(a);
  MEMD_ASSERT_OK(pool.deallocate(*a));
  EXPECT_FALSE(pool.deallocate(*a));
  MEMD_ASSERT_OK(pool.validate());
  EXPECT_EQ(pool.stats().total_allocations, 1u);
}

// Many threads on small and large blocks at once, freeing each other's blocks
// through a shared hand-off, with validate() running concurrently: it must
// hold exactly at every call (it freezes the caches).
void cross_thread_frees_validate_at_every_step(PoolOptions options) {
  PoolEnv env = make_pool(512 * kMiB, options);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  constexpr int kThreads = 4, kOps = 20000;
  std::mutex handoff_mu;
  std::vector<void*> handoff;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread checker([&] {
    // A pause between checks: validate() holds every lock, and back to back
    // it starved the workers (seconds to minutes on two cores).
    while (!stop.load()) {
      if (!pool.validate()) ++failures;
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t)
    workers.emplace_back([&, t] {
      std::uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(t + 1);
      std::vector<void*> mine;
      for (int i = 0; i < kOps; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const std::uint64_t size = x % 8 == 0 ? (x >> 8) % (4 * kMiB) + 1 : (x >> 8) % 8192 + 1;
        auto p = pool.allocate(size);
        if (!p) {
          ++failures;
          continue;
        }
        if (x % 3 == 0) {
          std::lock_guard g(handoff_mu);
          handoff.push_back(*p);
        } else {
          mine.push_back(*p);
        }
        if (mine.size() > 64) {
          if (!pool.deallocate(mine.front())) ++failures;
          mine.erase(mine.begin());
        }
        void* theirs = nullptr;
        {
          std::lock_guard g(handoff_mu);
          if (handoff.size() > 32) {
            theirs = handoff.back();
            handoff.pop_back();
          }
        }
        if (theirs && !pool.deallocate(theirs)) ++failures;
      }
      for (void* p : mine)
        if (!pool.deallocate(p)) ++failures;
    });
  for (auto& w : workers) w.join();
  stop = true;
  checker.join();
  for (void* p : handoff) MEMD_ASSERT_OK(pool.deallocate(p));
  EXPECT_EQ(failures.load(), 0);
  MEMD_ASSERT_OK(pool.validate());
  auto s = pool.stats();
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.total_allocations, s.total_frees);
}

TEST(ThreadCache, ConcurrentCrossThreadFreesValidateAtEveryStep) {
  cross_thread_frees_validate_at_every_step({});
}

TEST(ThreadCache, ConcurrentCrossThreadFreesOfCachedMediumBlocksValidateAtEveryStep) {
  cross_thread_frees_validate_at_every_step({.medium_cache = PoolOptions::MediumCache::Always});
}

// Medium blocks (8 KiB – 2 MiB), cached once the pool lock is contended.

TEST(ThreadCache, MediumBlocksAreCachedByClassAndDoubleFreesRefused) {
  PoolEnv env = make_pool(256 * kMiB, PoolOptions{.medium_cache = PoolOptions::MediumCache::Always});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(9000);
  ASSERT_TRUE(a);
  EXPECT_EQ(pool.block_size(*a), 10240u) << "rounded up to its class";
  MEMD_ASSERT_OK(pool.deallocate(*a));
  EXPECT_FALSE(pool.block_size(*a)) << "a cached block is no live block";
  auto again = pool.deallocate(*a);
  ASSERT_FALSE(again) << "double free of a cached medium block was accepted";
  EXPECT_EQ(again.error().code, ErrorCode::invalid_argument);
  std::thread other([&] {
    auto r = pool.deallocate(*a);
    EXPECT_FALSE(r) << "double free from another thread";
    auto big = pool.allocate(3 * kMiB);  // not medium: never cached
    EXPECT_TRUE(big);
    if (big) {
      EXPECT_TRUE(pool.deallocate(*big));
    }
  });
  other.join();
  MEMD_ASSERT_OK(pool.validate());
  auto b = pool.allocate(9500);  // the same class
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, *a) << "the thread's bin serves its class";
  EXPECT_EQ(pool.block_size(*b), 10240u);
  // Freed by another thread: into that thread's bin, and still refused twice.
  std::thread third([&] {
    EXPECT_TRUE(pool.deallocate(*b));
    EXPECT_FALSE(pool.deallocate(*b));
  });
  third.join();
  EXPECT_FALSE(pool.deallocate(*b));
  EXPECT_FALSE(pool.deallocate(static_cast<char*>(*b) + 256)) << "interior pointer";
  MEMD_ASSERT_OK(pool.validate());
  // An empty class borrows from the next one up, never from further.
  auto c14 = pool.allocate(14000);
  ASSERT_TRUE(c14);
  EXPECT_EQ(pool.block_size(*c14), 14336u);
  MEMD_ASSERT_OK(pool.deallocate(*c14));
  auto c12 = pool.allocate(12000);  // class 12288: empty bin
  ASSERT_TRUE(c12);
  EXPECT_EQ(*c12, *c14);
  EXPECT_EQ(pool.block_size(*c12), 14336u);
  MEMD_ASSERT_OK(pool.deallocate(*c12));
  auto c10 = pool.allocate(9000);  // class 10240: two classes below, a fresh block
  ASSERT_TRUE(c10);
  EXPECT_NE(*c10, *c14);
  EXPECT_EQ(pool.block_size(*c10), 10240u);
  MEMD_ASSERT_OK(pool.deallocate(*c10));
  expect_all_back(pool, 6);
}

TEST(ThreadCache, StreamFreesOfMediumBlocksKeepTheirRules) {
  const PoolOptions medium{.medium_cache = PoolOptions::MediumCache::Always};
  with_stream(medium, [&](DevicePool& pool, const Stream& stream) {
    auto a = pool.allocate(100 * 1024);
    ASSERT_TRUE(a);
    MEMD_ASSERT_OK(pool.deallocate(*a, stream));  // tracked and live: leaves the table
    EXPECT_FALSE(pool.deallocate(*a)) << "plain free of a pending block";
    MEMD_ASSERT_OK(pool.validate());
    auto b = pool.allocate(100 * 1024);
    ASSERT_TRUE(b);
    MEMD_ASSERT_OK(pool.deallocate(*b));  // cached
    EXPECT_FALSE(pool.deallocate(*b, stream)) << "stream free of a cached block";
    MEMD_ASSERT_OK(pool.validate());
    EXPECT_EQ(pool.stats().live_allocations, 0u);
  });
}

// Review finding of session 4: a plain free (lock-free, into the caller's
// bin) racing a stream free of the same tracked block (under the pool lock)
// could both succeed, counting the block freed twice and later freeing it
// while pending. Exactly one of the two frees may succeed, in every round.
TEST(ThreadCache, RacingPlainAndStreamFreesOfOneMediumBlockNeverBothSucceed) {
  const PoolOptions medium{.medium_cache = PoolOptions::MediumCache::Always};
  with_stream(medium, [&](DevicePool& pool, const Stream& stream) {
    constexpr int kRounds = 20000;
    std::atomic<void*> target{nullptr};
    std::atomic<int> round{0}, done{0}, both{0}, neither{0};
    std::atomic<bool> plain_ok{false};
    auto spin = [](int n) {
      std::atomic<int> i{0};  // a delay the compiler keeps
      while (i.load(std::memory_order_relaxed) < n) i.fetch_add(1, std::memory_order_relaxed);
    };
    std::thread other([&] {
      for (int r = 1; r <= kRounds; ++r) {
        while (round.load(std::memory_order_acquire) != r) {
        }
        spin(r % 64);
        plain_ok.store(pool.deallocate(target.load()).has_value());
        done.store(r, std::memory_order_release);
      }
    });
    for (int r = 1; r <= kRounds; ++r) {
      auto p = pool.allocate(100 * 1024);
      ASSERT_TRUE(p) << p.error().message;
      target.store(*p);
      round.store(r, std::memory_order_release);
      spin((r / 64) % 64);
      const bool stream_ok = pool.deallocate(*p, stream).has_value();
      while (done.load(std::memory_order_acquire) != r) {
      }
      if (stream_ok && plain_ok.load()) ++both;
      if (!stream_ok && !plain_ok.load()) ++neither;
    }
    other.join();
    EXPECT_EQ(both.load(), 0) << "one block freed twice, both frees accepted";
    EXPECT_EQ(neither.load(), 0) << "a live block's free refused";
    MEMD_ASSERT_OK(pool.validate());
    (void)pool.trim();  // waits for the pending frees
    auto s = pool.stats();
    EXPECT_EQ(s.allocated_bytes, 0u);
    EXPECT_EQ(s.live_allocations, 0u);
    MEMD_ASSERT_OK(pool.validate());
  });
}

// Review finding of session 4: with huge_threshold at or below 2 MiB a
// medium class can be a huge range, which the cached path tracked at the
// class size while the pool counted the page-rounded range. Such sizes stay
// out of the caches. (The hole makes the huge range land above the arena,
// where the old code tracked it.)
TEST(ThreadCache, MediumSizesAtTheHugeThresholdAreNotCached) {
  auto catalog = alloc_test::host_catalog(256 * kMiB);
  ASSERT_TRUE(catalog);
  PoolOptions opt{.huge_threshold = 1 * kMiB, .medium_cache = PoolOptions::MediumCache::Always};
  auto backend = catalog->backend_for(opt.device, opt.memory_type);
  ASSERT_TRUE(backend);
  void* hole = ::mmap(nullptr, 512 * kMiB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(hole, MAP_FAILED);
  auto made = DevicePool::create(**backend, opt);
  ASSERT_TRUE(made);
  auto pool = std::move(*made);
  ::munmap(hole, 512 * kMiB);
  auto p = pool->allocate(1000 * 1024);  // class 1 MiB >= huge_threshold
  ASSERT_TRUE(p);
  EXPECT_EQ(pool->block_size(*p), 1000u * 1024) << "its exact size: not rounded to a class, not cached";
  MEMD_ASSERT_OK(pool->validate());
  auto q = pool->allocate(600 * 1024);  // class 640 KiB: cached as usual
  ASSERT_TRUE(q);
  EXPECT_EQ(pool->block_size(*q), 640u * 1024);
  MEMD_ASSERT_OK(pool->deallocate(*p));
  MEMD_ASSERT_OK(pool->deallocate(*q));
  MEMD_ASSERT_OK(pool->validate());
  auto s = pool->stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.live_allocations, 0u);
}

// Blocks parked in thread caches are given back before an allocation fails
// for want of memory: 64 MiB device, medium blocks freed into this thread's
// bins (and other threads' slots), then one block of nearly all of it. The
// pool answers out of memory once; the ladder's trim drains the caches.
TEST(ThreadCache, CachedBlocksGoBackBeforeOutOfMemory) {
  PoolEnv env = make_pool(64 * kMiB, PoolOptions{.medium_cache = PoolOptions::MediumCache::Always});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::vector<void*> blocks = allocate_n(pool, 12, 1900 * 1024);  // class 2 MiB
  for (void* p : blocks) MEMD_ASSERT_OK(pool.deallocate(p));
  std::thread other([&] {
    auto small = allocate_n(pool, 64, 4096);
    for (void* p : small) EXPECT_TRUE(pool.deallocate(p));
  });
  other.join();
  ReclaimLadder ladder;
  auto big = ladder.allocate(pool, 56 * kMiB);
  ASSERT_TRUE(big) << big.error().message;
  EXPECT_EQ(ladder.counts().trim_retries, 1u);
  MEMD_ASSERT_OK(pool.validate());
  MEMD_ASSERT_OK(pool.deallocate(*big));
  MEMD_ASSERT_OK(pool.validate());
}

TEST(ThreadCache, ThreadExitGivesMediumBlocksBack) {
  PoolEnv env = make_pool(256 * kMiB, PoolOptions{.medium_cache = PoolOptions::MediumCache::Always});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::thread t([&] {
    // More than the bins hold: bins of a class flush, and the per-thread
    // byte bound flushes other classes.
    std::vector<void*> blocks;
    for (int i = 0; i < 48; ++i) {
      auto p = pool.allocate(static_cast<std::uint64_t>(16 + (i % 12) * 160) * 1024);
      ASSERT_TRUE(p);
      blocks.push_back(*p);
    }
    for (void* p : blocks) EXPECT_TRUE(pool.deallocate(p));
    EXPECT_TRUE(pool.validate());
  });
  t.join();
  MEMD_ASSERT_OK(pool.validate());
  auto s = pool.stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.total_allocations, s.total_frees);
  EXPECT_EQ(s.active_bytes, 0u) << "every medium block is back in TLSF";
}

TEST(ThreadCache, OneThreadKeepsExactSizesAndContentionTurnsMediumCachingOn) {
  PoolEnv env = make_pool(512 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  for (int i = 0; i < 20000; ++i) {
    auto p = pool.allocate(9000);
    ASSERT_TRUE(p);
    ASSERT_EQ(pool.block_size(*p), 9216u) << "one thread: exact (256-byte) sizes";
    MEMD_ASSERT_OK(pool.deallocate(*p));
  }
  // Four threads on the pool lock (large blocks, never cached) until the
  // lock has been found held often enough; on any machine with threads
  // that takes milliseconds, the bound is seconds.
  std::atomic<bool> stop{false};
  std::vector<std::thread> hammer;
  for (int t = 0; t < 4; ++t)
    hammer.emplace_back([&] {
      while (!stop.load())
        if (auto p = pool.allocate(3 * kMiB)) (void)pool.deallocate(*p);
    });
  bool rounded = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!rounded && std::chrono::steady_clock::now() < until) {
    auto p = pool.allocate(9000);
    ASSERT_TRUE(p);
    rounded = pool.block_size(*p) == 10240u;
    MEMD_ASSERT_OK(pool.deallocate(*p));
  }
  stop = true;
  for (auto& h : hammer) h.join();
  EXPECT_TRUE(rounded) << "medium caching never turned on under contention";
  MEMD_ASSERT_OK(pool.validate());
}

// Medium bins by bytes and the per-thread byte limit that grows when it
// pays (issue 11, step 5).

// counters() leaves out what sits in caches until a cache next takes the
// pool lock (it folds then): equal counts before and after some operations
// mean they took no pool lock.
std::pair<std::uint64_t, std::uint64_t> folded_counts(const DevicePool& pool) {
  const auto s = pool.counters();
  return {s.total_allocations, s.total_frees};
}

TEST(ThreadCache, MediumBinCapacitiesFollowTheirBytes) {
  static_assert(ThreadCache::medium_bytes(0) == 10 * 1024);
  EXPECT_EQ(ThreadCache::medium_capacity(0), ThreadCache::kMaxPerBin) << "10 KiB: as many as a slab bin";
  EXPECT_EQ(ThreadCache::medium_capacity(ThreadCache::medium_class(64 * 1024)), 8u);
  EXPECT_EQ(ThreadCache::medium_capacity(ThreadCache::medium_class(128 * 1024)), ThreadCache::kMediumMinPerBin);
  EXPECT_EQ(ThreadCache::medium_capacity(ThreadCache::kMediumClasses - 1), ThreadCache::kMediumMinPerBin);
  for (int cls = 0; cls < ThreadCache::kMediumClasses; ++cls) {
    const std::uint64_t bin = ThreadCache::medium_capacity(cls) * ThreadCache::medium_bytes(cls);
    EXPECT_LE(bin, std::max(ThreadCache::kMediumBinBytes, ThreadCache::kMediumMinPerBin * ThreadCache::medium_bytes(cls)))
        << "class " << cls;
    EXPECT_GE(ThreadCache::medium_capacity(cls), ThreadCache::kMediumMinPerBin);
  }
}

// The limit's bookkeeping, on a cache alone: only misses of classes the
// limit flushed count, kGrowAfter of them within a window double it, never
// past kMediumBytesMax; a drain starts over.
TEST(ThreadCache, MediumLimitGrowsOnlyOnMissesItCaused) {
  auto c = std::make_unique<ThreadCache>();
  MEMD_ASSERT_OK(c->validate());
  EXPECT_EQ(c->medium_limit, ThreadCache::kMediumBytes);
  for (std::uint32_t i = 0; i < 4 * ThreadCache::kGrowAfter; ++i) EXPECT_FALSE(c->note_medium_miss(3, 4));
  EXPECT_EQ(c->medium_limit, ThreadCache::kMediumBytes) << "misses of classes the limit never flushed";
  for (std::uint32_t i = 0; i + 1 < ThreadCache::kGrowAfter; ++i) {
    c->note_limit_flush(7);
    EXPECT_FALSE(c->note_medium_miss(6, 7)) << "the class it may borrow from counts too";
    EXPECT_FALSE(c->note_medium_miss(6, 7)) << "one flush, one counted miss";
  }
  // A window of hits forgets the misses counted so far.
  for (std::uint32_t i = 0; i < ThreadCache::kGrowWindow; ++i) c->note_medium_hit();
  c->note_limit_flush(7);
  EXPECT_FALSE(c->note_medium_miss(7, 8));
  EXPECT_EQ(c->medium_limit, ThreadCache::kMediumBytes);
  bool grew = false;
  for (std::uint32_t i = 1; i < ThreadCache::kGrowAfter; ++i) {
    c->note_limit_flush(31);
    grew = c->note_medium_miss(31, 31);
    MEMD_ASSERT_OK(c->validate());
  }
  EXPECT_TRUE(grew);
  EXPECT_EQ(c->medium_limit, 2 * ThreadCache::kMediumBytes);
  for (std::uint32_t i = 0; i < 8 * ThreadCache::kGrowAfter; ++i) {
    c->note_limit_flush(31);
    (void)c->note_medium_miss(31, 31);
    MEMD_ASSERT_OK(c->validate());
  }
  EXPECT_EQ(c->medium_limit, ThreadCache::kMediumBytesMax);
  c->reset_medium_limit();
  EXPECT_EQ(c->medium_limit, ThreadCache::kMediumBytes);
  MEMD_ASSERT_OK(c->validate());
}

// A burst of small medium blocks stays in one bin (it held 4 of a class,
// and went to the pool lock every 2 frees), and each cached block is still
// refused a second free, from any thread.
TEST(ThreadCache, SmallMediumClassesCacheABurstWithoutThePoolLock) {
  PoolEnv env = make_pool(256 * kMiB, PoolOptions{.medium_cache = PoolOptions::MediumCache::Always});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  constexpr int kBurst = 24;
  static_assert(kBurst <= ThreadCache::kMaxPerBin);
  std::vector<void*> blocks = allocate_n(pool, kBurst, 10 * 1024);
  ASSERT_EQ(blocks.size(), static_cast<std::size_t>(kBurst));
  const auto before = folded_counts(pool);
  for (void* p : blocks) MEMD_ASSERT_OK(pool.deallocate(p));
  EXPECT_EQ(folded_counts(pool), before) << "a free of the burst took the pool lock";
  for (void* p : blocks) EXPECT_FALSE(pool.deallocate(p)) << "double free of a cached block";
  std::thread other([&] {
    for (void* p : blocks) EXPECT_FALSE(pool.deallocate(p)) << "double free from another thread";
  });
  other.join();
  MEMD_ASSERT_OK(pool.validate());  // folds the caches' counts in
  const auto folded = folded_counts(pool);
  std::vector<void*> again = allocate_n(pool, kBurst, 10 * 1024);
  EXPECT_EQ(folded_counts(pool), folded) << "the burst came back from the bin";
  EXPECT_EQ(std::set<void*>(again.begin(), again.end()), std::set<void*>(blocks.begin(), blocks.end()));
  for (void* p : again) MEMD_ASSERT_OK(pool.deallocate(p));
  expect_all_back(pool, 2 * kBurst);
}

// One allocation and one free of each of `sizes`, in this thread.
void cycle(DevicePool& pool, const std::vector<std::uint64_t>& sizes, std::vector<void*>* kept = nullptr) {
  std::vector<void*> blocks;
  for (auto size : sizes) {
    auto p = pool.allocate(size);
    ASSERT_TRUE(p) << p.error().message;
    blocks.push_back(*p);
  }
  for (void* p : blocks) MEMD_ASSERT_OK(pool.deallocate(p));
  if (kept) *kept = blocks;
}

// A thread whose working set is above kMediumBytes (three blocks of each
// class from 1.25 to 2 MiB: 19.5 MiB) misses what the limit flushed, the
// limit grows, and then a whole round of it takes no pool lock. Blocks
// cached above the first limit are still refused a second free in any
// thread. A drain (statistics) starts the limit over.
TEST(ThreadCache, MediumLimitGrowsToAWorkingSetThatMissesBecauseOfIt) {
  PoolEnv env = make_pool(512 * kMiB, PoolOptions{.medium_cache = PoolOptions::MediumCache::Always});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::vector<std::uint64_t> sizes;
  for (int cls = ThreadCache::kMediumClasses - 4; cls < ThreadCache::kMediumClasses; ++cls)
    for (int k = 0; k < 3; ++k) sizes.push_back(ThreadCache::medium_bytes(cls));
  std::uint64_t total = 0;
  for (auto s : sizes) total += s;
  ASSERT_GT(total, ThreadCache::kMediumBytes);
  ASSERT_LE(total, ThreadCache::kMediumBytesMax);
  int rounds_locked = 0, round = 0;
  bool quiet = false;
  std::vector<void*> cached;
  for (; round < 4 * static_cast<int>(ThreadCache::kGrowAfter) && !quiet; ++round) {
    const auto before = folded_counts(pool);
    cycle(pool, sizes, &cached);
    quiet = folded_counts(pool) == before;
    if (!quiet) ++rounds_locked;
  }
  EXPECT_TRUE(quiet) << "the working set never stopped missing (" << round << " rounds)";
  EXPECT_GT(rounds_locked, 1) << "the first limit should have been too small";
  MEMD_ASSERT_OK(pool.validate());
  for (void* p : cached) EXPECT_FALSE(pool.deallocate(p)) << "double free of a cached block";
  std::thread other([&] {
    for (void* p : cached) EXPECT_FALSE(pool.deallocate(p)) << "double free from another thread";
  });
  other.join();
  (void)pool.stats();  // drains: the limit starts over
  cycle(pool, sizes);    // misses every class (the bins were emptied)
  const auto before = folded_counts(pool);
  cycle(pool, sizes);
  EXPECT_NE(folded_counts(pool), before) << "the grown limit survived a drain";
  const auto s = pool.stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.total_allocations, s.total_frees);
  EXPECT_EQ(s.active_bytes, 0u);
  MEMD_ASSERT_OK(pool.validate());
}

// Threads whose working sets grow their limits, freeing each other's blocks,
// with validate() and statistics (which reset the limits) running meanwhile.
TEST(ThreadCache, GrowingMediumLimitsValidateUnderThreads) {
  PoolEnv env = make_pool(1 * kGiB, PoolOptions{.medium_cache = PoolOptions::MediumCache::Always});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  constexpr int kThreads = 4, kOps = 4000;
  std::mutex handoff_mu;
  std::vector<void*> handoff;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread checker([&] {
    for (int i = 0; !stop.load(); ++i) {
      if (!pool.validate()) ++failures;
      if (i % 8 == 7) (void)pool.stats();
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t)
    workers.emplace_back([&, t] {
      std::uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(t + 1);
      std::vector<void*> mine(8, nullptr);
      for (int i = 0; i < kOps; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        // 8 KiB – 2 MiB, every octave alike: ~21 MiB of classes a thread.
        const int shift = 13 + static_cast<int>(x % 8);
        const std::uint64_t size = (std::uint64_t{1} << shift) + (x >> 8) % (std::uint64_t{1} << shift);
        auto& slot = mine[static_cast<std::size_t>(i) & 7];
        if (slot && !pool.deallocate(slot)) ++failures;
        auto p = pool.allocate(size);
        slot = p ? *p : nullptr;
        if (!p) ++failures;
        if (slot && x % 16 == 0) {  // another thread frees it
          std::lock_guard g(handoff_mu);
          handoff.push_back(slot);
          slot = nullptr;
        }
        void* theirs = nullptr;
        {
          std::lock_guard g(handoff_mu);
          if (handoff.size() > 8) {
            theirs = handoff.back();
            handoff.pop_back();
          }
        }
        if (theirs && !pool.deallocate(theirs)) ++failures;
      }
      for (void* p : mine)
        if (p && !pool.deallocate(p)) ++failures;
    });
  for (auto& w : workers) w.join();
  stop = true;
  checker.join();
  for (void* p : handoff) MEMD_ASSERT_OK(pool.deallocate(p));
  EXPECT_EQ(failures.load(), 0);
  MEMD_ASSERT_OK(pool.validate());
  const auto s = pool.stats();
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.total_allocations, s.total_frees);
}

// Review findings of session 3, each a test that failed before its fix.

// Counts served from a cache reach the peaks (they once read 256 B / 1 block
// after 17 blocks were live at once).
TEST(ThreadCache, PeaksCountBlocksServedFromTheCache) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::vector<void*> blocks = allocate_n(pool, 17, 256);
  ASSERT_EQ(blocks.size(), 17u);
  for (void* p : blocks) MEMD_ASSERT_OK(pool.deallocate(p));
  auto s = pool.stats();
  EXPECT_EQ(s.peak_allocated_bytes, 17u * 256);
  EXPECT_EQ(s.peak_live_allocations, 17u);
}

// Another thread freeing what this one's cache handed out makes the pool's
// count dip below zero for a moment; that moment must not become the peak
// (it read 2^64 - 3584 bytes).
TEST(ThreadCache, PeaksSurviveCrossThreadFrees) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::vector<void*> blocks = allocate_n(pool, 17, 256);
  ASSERT_EQ(blocks.size(), 17u);
  std::thread other([&] {
    for (void* p : blocks) EXPECT_TRUE(pool.deallocate(p).has_value());
    auto q = pool.allocate(512);
    ASSERT_TRUE(q);
    EXPECT_TRUE(pool.deallocate(*q).has_value());
  });
  other.join();
  auto s = pool.stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_LE(s.peak_allocated_bytes, 17u * 256 + 512);
  EXPECT_LE(s.peak_live_allocations, 18u);
}

// A thread_local destructor that runs after the thread's caches are gone
// still frees correctly (the block was once pushed into a dead cache and
// lost, or into freed memory).
struct LateFree {
  DevicePool* pool = nullptr;
  void* block = nullptr;
  std::atomic<int>* stage = nullptr;
  ~LateFree() {
    if (block == nullptr) return;
    if (stage != nullptr) {  // let another thread drop the exited cache first
      stage->store(1);
      while (stage->load() != 2) std::this_thread::yield();
    }
    EXPECT_TRUE(pool->deallocate(block).has_value());
  }
};
thread_local LateFree late_free;

TEST(ThreadCache, FreeFromALateThreadLocalDestructorIsCounted) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::atomic<int> stage{0};
  std::thread t([&] {
    late_free.pool = &pool;  // constructed before the pool's thread state: destroyed after it
    late_free.stage = &stage;
    auto p = pool.allocate(512);
    ASSERT_TRUE(p);
    late_free.block = *p;
  });
  while (stage.load() != 1) std::this_thread::yield();
  // Meeting the pool from a new thread prunes exited caches from the registry.
  std::thread([&] {
    auto q = pool.allocate(256);
    ASSERT_TRUE(q);
    EXPECT_TRUE(pool.deallocate(*q).has_value());
  }).join();
  stage = 2;
  t.join();
  auto s = pool.stats();
  EXPECT_EQ(s.allocated_bytes, 0u);
  EXPECT_EQ(s.live_allocations, 0u);
  MEMD_ASSERT_OK(pool.validate());
}

// An arena whose base is not 64 KiB-aligned (a 4 KiB-granular host device):
// the live-slot table once split spans across two entries and refused
// allocations as "handed out twice".
TEST(ThreadCache, ArenaOfFineGranularityServesSmallBlocks) {
  for (int attempt = 0; attempt < 8; ++attempt) {  // several arenas: several base alignments
    BackendOptions options;
    options.host_device_sizes = {64 * kMiB};
    options.host_granularity = 4096;
    options.enable_cuda = false;
    auto catalog = DeviceCatalog::discover(options);
    ASSERT_TRUE(catalog);
    auto backend = (*catalog)->backend_for(DeviceId::host(0), MemoryType::VRAM);
    ASSERT_TRUE(backend);
    auto pool = DevicePool::create(**backend, PoolOptions{});
    ASSERT_TRUE(pool) << pool.error().message;
    std::vector<void*> blocks;
    for (int i = 0; i < 600; ++i) {
      auto p = (*pool)->allocate(256 + static_cast<std::uint64_t>(i % 4) * 256);
      ASSERT_TRUE(p) << p.error().message;
      blocks.push_back(*p);
    }
    for (void* p : blocks) MEMD_ASSERT_OK((*pool)->deallocate(p));
    MEMD_ASSERT_OK((*pool)->validate());
    EXPECT_EQ((*pool)->stats().live_allocations, 0u);
  }
}

}  // namespace
}  // namespace memd
