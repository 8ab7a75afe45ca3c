// ThreadCaches, built without a DevicePool: a recording CacheOwner stands in
// for the pool. Which cache a thread gets, what its exit hands back, what
// orphaning and freezing do. Threads meet through atomics (wait/notify), and
// nothing asserts on timing: a "still blocked" check can only fail if the
// lock was not held.
#include "alloc/thread_caches.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>

namespace memd {
namespace {

class RecordingOwner final : public CacheOwner {
 public:
  std::atomic<int> calls{0};
  std::atomic<ThreadCache*> last{nullptr};
  std::atomic<bool> lock_held{true};   // every take_back ran under the cache's lock
  std::atomic<bool> owner_was_me{true};

  void take_back(ThreadCache& cache) override {
    if (cache.mu.try_lock()) {
      lock_held = false;
      cache.mu.unlock();
    }
    if (cache.owner != this) owner_was_me = false;
    cache.bins = {};
    last = &cache;
    ++calls;
  }
};

void wait_for(std::atomic<int>& phase, int value) {
  for (int now = phase.load(); now < value; now = phase.load()) phase.wait(now);
}
void set_phase(std::atomic<int>& phase, int value) {
  phase = value;
  phase.notify_all();
}

TEST(ThreadCaches, MineIsOneCachePerThreadAndRegistry) {
  RecordingOwner owner;
  ThreadCaches a(owner), b(owner);
  ThreadCache* a1 = &a.mine();
  EXPECT_EQ(&a.mine(), a1);
  EXPECT_EQ(a1->owner, &owner);
  ThreadCache* b1 = &b.mine();
  EXPECT_NE(a1, b1);
  // Alternating registries (each switch misses the last-used slot).
  EXPECT_EQ(&a.mine(), a1);
  EXPECT_EQ(&b.mine(), b1);
  EXPECT_EQ(&a.mine(), a1);
  {
    ThreadCaches c(owner);  // a registry made later is never confused with a or b
    EXPECT_NE(&c.mine(), a1);
    EXPECT_NE(&c.mine(), b1);
  }
  EXPECT_EQ(&a.mine(), a1);

  ThreadCache* other = nullptr;
  bool stable = false;
  std::thread t([&] {
    other = &a.mine();
    stable = &a.mine() == other;
  });
  t.join();
  EXPECT_TRUE(stable);
  EXPECT_NE(other, a1);
  EXPECT_NE(other, b1);
  EXPECT_FALSE(a1->exited);
}

TEST(ThreadCaches, ThreadExitTakesBackEachCacheOnceUnderItsLock) {
  RecordingOwner oa, ob;
  ThreadCaches a(oa), b(ob);
  ThreadCache *ca = nullptr, *cb = nullptr;
  std::thread t([&] {
    ca = &a.mine();
    cb = &b.mine();
    ca->bins[0].count = 1;  // something to give back
    (void)a.mine();
    EXPECT_EQ(oa.calls, 0) << "nothing is taken back while the thread lives";
  });
  t.join();
  EXPECT_EQ(oa.calls, 1);
  EXPECT_EQ(ob.calls, 1);
  EXPECT_EQ(oa.last, ca);
  EXPECT_EQ(ob.last, cb);
  EXPECT_TRUE(oa.lock_held);
  EXPECT_TRUE(ob.lock_held);
  EXPECT_TRUE(oa.owner_was_me);
  auto frozen = a.freeze();
  ASSERT_EQ(frozen.caches().size(), 1u);
  EXPECT_EQ(frozen.caches()[0].get(), ca) << "the registry still lists it";
  EXPECT_TRUE(ca->exited);
  EXPECT_EQ(ca->bins[0].count, 0u);
}

TEST(ThreadCaches, OrphanedCachesAreNotTakenBack) {
  RecordingOwner owner;
  ThreadCaches a(owner);
  std::atomic<int> phase{0};
  ThreadCache* c = nullptr;
  std::thread t([&] {
    c = &a.mine();
    {
      std::lock_guard g(c->mu);
      c->bins[3].count = 2;
    }
    set_phase(phase, 1);
    wait_for(phase, 2);
    // The thread still finds its cache (now ownerless) until it exits.
    EXPECT_EQ(&a.mine(), c);
  });
  wait_for(phase, 1);
  a.orphan_all();
  {
    std::lock_guard g(c->mu);
    EXPECT_EQ(c->owner, nullptr);
    EXPECT_EQ(c->bins[3].count, 0u) << "an orphaned cache loses its contents";
  }
  int visited = 0;
  a.for_each([&](ThreadCache&) { ++visited; });
  EXPECT_EQ(visited, 0) << "for_each skips orphaned caches";
  set_phase(phase, 2);
  t.join();
  EXPECT_EQ(owner.calls, 0);
}

TEST(ThreadCaches, RegistryMayGoFirst) {
  RecordingOwner owner;
  auto a = std::make_unique<ThreadCaches>(owner);
  std::atomic<int> phase{0};
  std::thread t([&] {
    (void)a->mine();
    set_phase(phase, 1);
    wait_for(phase, 2);
  });
  wait_for(phase, 1);
  a.reset();  // orphans the thread's cache
  set_phase(phase, 2);
  t.join();
  EXPECT_EQ(owner.calls, 0);
  // A registry made after it works in a thread that held the old one's cache.
  ThreadCaches b(owner);
  std::thread u([&] { (void)b.mine(); });
  u.join();
  EXPECT_EQ(owner.calls, 1);
}

TEST(ThreadCaches, ExitedCachesAreForgottenAtTheNextRegistration) {
  RecordingOwner owner;
  ThreadCaches a(owner);
  std::thread t1([&] { (void)a.mine(); });
  t1.join();
  {
    auto frozen = a.freeze();
    ASSERT_EQ(frozen.caches().size(), 1u);
    EXPECT_TRUE(frozen.caches()[0]->exited);
  }
  std::size_t listed = 0;
  ThreadCache* first = nullptr;
  bool mine_listed = false;
  std::thread t2([&] {
    ThreadCache* mine = &a.mine();
    auto frozen = a.freeze();
    listed = frozen.caches().size();
    first = frozen.caches().empty() ? nullptr : frozen.caches()[0].get();
    mine_listed = first == mine && !mine->exited;
  });
  t2.join();
  EXPECT_EQ(listed, 1u);
  EXPECT_TRUE(mine_listed);
  EXPECT_EQ(owner.calls, 2);
}

TEST(ThreadCaches, FreezeHoldsTheRegistryAndEveryCacheLock) {
  RecordingOwner owner;
  ThreadCaches a(owner);
  std::atomic<int> phase{0};
  std::atomic<bool> try_locked{true}, acquired{false};
  ThreadCache* c = nullptr;
  std::thread t([&] {
    c = &a.mine();
    set_phase(phase, 1);
    wait_for(phase, 2);
    ThreadCache& again = a.mine();  // lock-free: works while frozen
    const bool got = again.mu.try_lock();
    if (got) again.mu.unlock();
    try_locked = got;
    set_phase(phase, 3);
    wait_for(phase, 4);
    again.mu.lock();  // blocks until the Frozen goes
    acquired = true;
    again.mu.unlock();
  });
  wait_for(phase, 1);
  ThreadCache* newcomer = nullptr;
  std::atomic<bool> newcomer_done{false};
  std::thread late;
  {
    auto frozen = a.freeze();
    ASSERT_EQ(frozen.caches().size(), 1u);
    EXPECT_EQ(frozen.caches()[0].get(), c);
    if (c->mu.try_lock()) {
      c->mu.unlock();
      ADD_FAILURE() << "the cache lock is not held by the Frozen";
    }
    set_phase(phase, 2);
    wait_for(phase, 3);
    EXPECT_FALSE(try_locked) << "the owning thread could take its cache's lock while frozen";
    set_phase(phase, 4);
    // A thread new to the registry needs its lock to register.
    late = std::thread([&] {
      newcomer = &a.mine();
      newcomer_done = true;
    });
    EXPECT_FALSE(acquired);
    EXPECT_FALSE(newcomer_done);
  }
  t.join();
  late.join();
  EXPECT_TRUE(acquired);
  EXPECT_TRUE(newcomer_done);
  // (c itself may be gone now: the newcomer's registration forgets exited caches.)
  EXPECT_NE(newcomer, c);
}

TEST(ThreadCaches, ForEachVisitsOwnedCachesWithTheirLockHeld) {
  RecordingOwner owner;
  ThreadCaches a(owner);
  ThreadCache* mine = &a.mine();
  int visited = 0;
  bool locked = true;
  a.for_each([&](ThreadCache& cache) {
    ++visited;
    EXPECT_EQ(&cache, mine);
    if (cache.mu.try_lock()) {
      locked = false;
      cache.mu.unlock();
    }
  });
  EXPECT_EQ(visited, 1);
  EXPECT_TRUE(locked);
}

struct LateProbe {
  std::atomic<int>* out = nullptr;
  ~LateProbe() {
    if (out) out->store(ThreadCaches::thread_exiting() ? 1 : 2);
  }
};

TEST(ThreadCaches, ThreadExitingOnlyAfterTheCachesWereGivenBack) {
  EXPECT_FALSE(ThreadCaches::thread_exiting());
  RecordingOwner owner;
  ThreadCaches a(owner);
  (void)a.mine();
  EXPECT_FALSE(ThreadCaches::thread_exiting());
  std::atomic<int> late{0};
  bool during = true;
  std::thread t([&] {
    // Constructed before the thread's caches, so destroyed after them.
    thread_local LateProbe probe;
    probe.out = &late;
    during = ThreadCaches::thread_exiting();
    (void)a.mine();
    during = during || ThreadCaches::thread_exiting();
  });
  t.join();
  EXPECT_FALSE(during);
  EXPECT_EQ(late, 1) << "a thread_local destroyed after the caches must see thread_exiting()";
  EXPECT_EQ(owner.calls, 1);
  std::thread plain([&] { during = ThreadCaches::thread_exiting(); });
  plain.join();
  EXPECT_FALSE(during);
  EXPECT_FALSE(ThreadCaches::thread_exiting());
}

}  // namespace
}  // namespace memd
