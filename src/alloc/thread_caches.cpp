// Per-thread caches and their registry; see thread_caches.hpp.
#include "alloc/thread_caches.hpp"

#include <atomic>

namespace memd {
namespace {

std::atomic<std::uint64_t> next_registry_id{1};

// This thread's caches, one per pool it used. Its destructor (thread exit)
// gives each back to its owner.
struct TlsCaches {
  struct Entry {
    std::uint64_t registry_id = 0;
    std::shared_ptr<ThreadCache> cache;
  };
  std::vector<Entry> entries;
  ~TlsCaches() {
    // Thread-local destructors that run after this one may still free (or
    // allocate) pool memory: from now on this thread bypasses the caches.
    thread_cache_detail::gone = true;
    thread_cache_detail::last_id = 0;
    thread_cache_detail::last = nullptr;
    for (auto& e : entries) {
      std::lock_guard g(e.cache->mu);
      if (e.cache->owner != nullptr) e.cache->owner->take_back(*e.cache);
      e.cache->exited = true;
    }
  }
};
thread_local TlsCaches tls_caches;

}  // namespace

ThreadCaches::ThreadCaches(CacheOwner& owner)
    : owner_(owner), id_(next_registry_id.fetch_add(1, std::memory_order_relaxed)) {}

void ThreadCaches::orphan_all() {
  std::lock_guard registry(mu_);
  for (auto& c : caches_) {
    std::lock_guard cache(c->mu);
    c->owner = nullptr;
    c->bins = {};
  }
}

ThreadCache& ThreadCaches::find_mine() {
  auto& t = tls_caches;
  for (auto& e : t.entries)
    if (e.registry_id == id_) {
      thread_cache_detail::last_id = id_;
      thread_cache_detail::last = e.cache.get();
      return *e.cache;
    }
  std::erase_if(t.entries, [](const TlsCaches::Entry& e) {
    std::lock_guard g(e.cache->mu);
    return e.cache->owner == nullptr;
  });
  auto c = std::make_shared<ThreadCache>();
  c->owner = &owner_;
  {
    std::lock_guard registry(mu_);
    std::erase_if(caches_, [](const std::shared_ptr<ThreadCache>& x) {
      std::lock_guard cache(x->mu);
      return x->exited;
    });
    caches_.push_back(c);
  }
  t.entries.push_back({id_, c});
  thread_cache_detail::last_id = id_;
  thread_cache_detail::last = c.get();
  return *c;
}

ThreadCaches::Frozen::Frozen(ThreadCaches& registry) : registry_(registry.mu_), caches_(registry.caches_) {
  for (auto& c : caches_) locks_.emplace_back(c->mu);
}

}  // namespace memd
