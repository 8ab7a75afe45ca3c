// HostCopyThreads: parts of one memcpy handed to helper threads.
#include "transfer/host_copy_threads.hpp"

#include <algorithm>
#include <cstring>
#include <latch>

namespace memd {

HostCopyThreads::HostCopyThreads(unsigned threads) {
  threads_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

HostCopyThreads::~HostCopyThreads() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& t : threads_) t.join();
}

void HostCopyThreads::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

void HostCopyThreads::copy(void* dst, const void* src, std::size_t bytes) {
  const std::size_t most = std::max<std::size_t>(1, bytes / kMinPartBytes);
  const std::size_t parts = std::min<std::size_t>(threads_.size() + 1, most);
  if (parts <= 1) {
    std::memcpy(dst, src, bytes);
    return;
  }
  // Parts on 4 KiB boundaries, so no two threads write one page.
  const std::size_t step = (bytes / parts + 4095) & ~std::size_t{4095};
  auto* d = static_cast<std::byte*>(dst);
  const auto* s = static_cast<const std::byte*>(src);
  std::latch done(static_cast<std::ptrdiff_t>(parts - 1));
  {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 1; i < parts; ++i) {
      const std::size_t at = std::min(bytes, i * step);
      const std::size_t n = std::min(bytes, at + step) - at;
      tasks_.emplace_back([d, s, at, n, &done] {
        std::memcpy(d + at, s + at, n);
        done.count_down();
      });
    }
  }
  ready_.notify_all();
  std::memcpy(d, s, std::min(bytes, step));
  done.wait();
}

}  // namespace memd
