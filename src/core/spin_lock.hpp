// core/spin_lock.hpp — the pool lock: test-and-test-and-set with backoff.
//
// Why not std::mutex: the critical sections it guards last tens of
// nanoseconds, and a futex-based mutex under contention puts threads to sleep
// and wakes them, which measured many times slower than uncontended on four
// threads. Spinning briefly then yielding keeps the lock handed over in
// cache-line time, while a holder doing a rare slow operation (mapping pages)
// does not burn other cores for long. Meets BasicLockable, so std::lock_guard
// works. Exponential backoff after a lost race cut the time per pool
// operation of four threads on an H200 host; flat combining (the holder runs
// the waiters' operations) was tried and measured worse, since each
// handed-over operation still crosses cores (docs/benchmarks.md, "The pool
// lock").
//
// Thread safety: that is its purpose.
#pragma once

#include <atomic>
#include <thread>

namespace memd {

class SpinLock {
 public:
  void lock() noexcept {
    // Test-and-test-and-set with exponential backoff: after losing a race for
    // the lock, wait 2^k pauses (capped) before looking again, so waiters do
    // not all pounce on the line the moment it is released (the storm that
    // made four threads slower in total than one; docs/benchmarks.md, "The
    // pool lock").
    unsigned backoff = 1;
    for (unsigned rounds = 0;; ++rounds) {
      if (!locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire)) return;
      if (rounds < 64) {
        for (unsigned i = 0; i < backoff; ++i) pause();
        backoff = backoff < 256 ? backoff * 2 : backoff;
      } else {
        std::this_thread::yield();  // the holder is doing something slow (mapping pages)
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) && !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  std::atomic<bool> locked_{false};
};

}  // namespace memd
