// FIFO worker thread behind each host stream.
#include "backends/host/stream_worker.hpp"

#include <cstring>

namespace memd {

StreamWorker::StreamWorker() : thread_([this] { run(); }) {}

StreamWorker::~StreamWorker() { stop(); }

void StreamWorker::stop() {
  std::lock_guard join_lock(join_mutex_);
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_ready_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StreamWorker::execute(const Item& item) {
  // memmove, not memcpy: callers may copy between overlapping spans of one
  // segment (compaction does), which CUDA's memcpy also tolerates.
  if (item.src != nullptr)
    std::memmove(item.dst, item.src, static_cast<std::size_t>(item.bytes));
  else
    std::memset(item.dst, item.value, static_cast<std::size_t>(item.bytes));
}

std::uint64_t StreamWorker::enqueue_copy(void* dst, const void* src, std::uint64_t bytes) {
  return push(Item{dst, src, bytes, 0});
}

std::uint64_t StreamWorker::enqueue_fill(void* dst, std::uint8_t value, std::uint64_t bytes) {
  return push(Item{dst, nullptr, bytes, value});
}

std::uint64_t StreamWorker::push(const Item& item) {
  std::unique_lock lock(mutex_);
  if (stopping_) {
    // No thread will pick this up: run it here, after everything before it.
    work_done_.wait(lock, [&] { return completed_ >= enqueued_; });
    const auto sequence = ++enqueued_;
    lock.unlock();
    execute(item);
    lock.lock();
    ++completed_;
    work_done_.notify_all();
    return sequence;
  }
  queue_.push_back(item);
  const auto sequence = ++enqueued_;
  lock.unlock();
  work_ready_.notify_one();
  return sequence;
}

std::uint64_t StreamWorker::last_enqueued() const {
  std::lock_guard lock(mutex_);
  return enqueued_;
}

bool StreamWorker::is_complete(std::uint64_t sequence) const {
  std::lock_guard lock(mutex_);
  return completed_ >= sequence;
}

void StreamWorker::wait_for(std::uint64_t sequence) const {
  std::unique_lock lock(mutex_);
  work_done_.wait(lock, [&] { return completed_ >= sequence; });
}

void StreamWorker::drain() const {
  std::unique_lock lock(mutex_);
  const auto target = enqueued_;
  work_done_.wait(lock, [&] { return completed_ >= target; });
}

void StreamWorker::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // Stop only once the queue is empty: destruction drains, as promised.
    work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;
    const Item item = queue_.front();
    queue_.pop_front();
    lock.unlock();
    execute(item);
    lock.lock();
    ++completed_;
    work_done_.notify_all();
  }
}

}  // namespace memd
