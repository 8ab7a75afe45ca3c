// transfer/host_copy_threads.hpp — memcpy spread over a few threads.
//
// The staged path copies between pageable memory and pinned staging buffers
// on the CPU. One core's memcpy from pageable memory runs at about 10 GB/s,
// well under a PCIe 5 link (55 GB/s pinned on an H100 or H200), so each
// staging chunk is split into parts copied by several threads at once while
// the device copies the previous chunk. Parts are at least kMinPartBytes, so
// a small copy stays on the calling thread.
//
// Thread safety: copy() may be called from any number of threads; each call
// returns when its bytes are copied. The destructor joins the threads (no
// copy may be in flight).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace memd {

class HostCopyThreads {
 public:
  static constexpr std::size_t kMinPartBytes = 1u << 20;

  // threads: helper threads besides the caller (0: every copy is the caller's).
  explicit HostCopyThreads(unsigned threads);
  ~HostCopyThreads();
  HostCopyThreads(const HostCopyThreads&) = delete;
  HostCopyThreads& operator=(const HostCopyThreads&) = delete;

  // Non-overlapping ranges.
  void copy(void* dst, const void* src, std::size_t bytes);
  unsigned helpers() const noexcept { return static_cast<unsigned>(threads_.size()); }

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace memd
