// alloc/thread_caches.hpp — one ThreadCache per (thread, pool), found
// without a lock.
//
// A thread keeps its caches in thread-local storage, one per pool it used;
// pool ids are never reused, so the entry of a pool that is gone is never
// matched again (it is dropped when the thread next meets a new pool). The
// last cache a thread used sits in trivially destructible thread-locals,
// defined inline here so the fast path reads them with no TLS
// initialisation check. At thread exit every cache goes back to its owner,
// and from then on the thread bypasses caches (thread_exiting()): its
// remaining thread_local destructors may still allocate or free.
//
// The registry (one per pool) lists every cache, for draining (statistics,
// trim), freezing (validate) and orphaning (the pool goes away first).
//
// Thread safety: mine() is per thread; everything else takes the registry
// lock. Lock order: registry, then a cache's lock, then the pool's.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "alloc/thread_cache.hpp"
#include "core/spin_lock.hpp"

namespace memd {

namespace thread_cache_detail {
inline thread_local std::uint64_t last_id = 0;
inline thread_local ThreadCache* last = nullptr;
inline thread_local bool gone = false;  // this thread's caches were given back (it is exiting)
}  // namespace thread_cache_detail

class ThreadCaches {
 public:
  explicit ThreadCaches(CacheOwner& owner);
  ~ThreadCaches() { orphan_all(); }
  // Every cache loses its owner and contents: threads that still hold one
  // find no owner (their pool is going away).
  void orphan_all();
  ThreadCaches(const ThreadCaches&) = delete;
  ThreadCaches& operator=(const ThreadCaches&) = delete;

  // This thread's cache of this pool, created on first use.
  ThreadCache& mine() {
    if (thread_cache_detail::last_id == id_) return *thread_cache_detail::last;
    return find_mine();
  }
  static bool thread_exiting() noexcept { return thread_cache_detail::gone; }

  // f(cache) for every cache still owned, its lock held (and the registry's).
  template <typename F>
  void for_each(F&& f) {
    std::lock_guard registry(mu_);
    for (auto& c : caches_) {
      std::lock_guard cache(c->mu);
      if (c->owner != nullptr) f(*c);
    }
  }

  // Holds the registry and every cache lock while it lives, so a check sees
  // the caches frozen; caches() lists them.
  class Frozen {
   public:
    const std::vector<std::shared_ptr<ThreadCache>>& caches() const noexcept { return caches_; }

   private:
    friend class ThreadCaches;
    explicit Frozen(ThreadCaches& registry);
    std::unique_lock<std::mutex> registry_;
    std::vector<std::unique_lock<SpinLock>> locks_;
    const std::vector<std::shared_ptr<ThreadCache>>& caches_;
  };
  Frozen freeze() { return Frozen(*this); }

 private:
  ThreadCache& find_mine();

  CacheOwner& owner_;
  const std::uint64_t id_;
  std::mutex mu_;
  std::vector<std::shared_ptr<ThreadCache>> caches_;
};

}  // namespace memd
