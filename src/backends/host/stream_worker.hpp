// backends/host/stream_worker.hpp — one host "stream": a thread draining a FIFO.
//
// The host backend's copies and fills are real asynchronous work, so code
// written against CUDA streams (enqueue, record, wait) behaves the same on a
// machine without a GPU. Each enqueued item gets the next sequence number; an
// event is just a sequence number on a worker and is complete once the worker
// has finished that item. Items run strictly in order on the worker thread.
//
// Thread safety: all methods may be called from any thread. stop() (and the
// destructor) drains the queue and joins the thread; the object stays usable
// afterwards so events recorded on a destroyed stream still answer, and work
// pushed after stop() (a caller racing destroy_stream) runs inline rather than
// being lost or hanging a waiter.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

namespace memd {

class StreamWorker {
 public:
  StreamWorker();
  ~StreamWorker();
  StreamWorker(const StreamWorker&) = delete;
  StreamWorker& operator=(const StreamWorker&) = delete;

  // Each returns the sequence number of the enqueued item.
  std::uint64_t enqueue_copy(void* dst, const void* src, std::uint64_t bytes);
  std::uint64_t enqueue_fill(void* dst, std::uint8_t value, std::uint64_t bytes);

  // Sequence number of the last item enqueued so far (0 before any): an event
  // recorded now completes when that item has run.
  std::uint64_t last_enqueued() const;
  bool is_complete(std::uint64_t sequence) const;
  void wait_for(std::uint64_t sequence) const;
  // Waits until everything enqueued before the call has run.
  void drain() const;
  // Drains, then joins the thread. Idempotent.
  void stop();

 private:
  struct Item {
    void* dst;
    const void* src;  // nullptr for a fill
    std::uint64_t bytes;
    std::uint8_t value;
  };

  std::uint64_t push(const Item& item);
  static void execute(const Item& item);
  void run();

  mutable std::mutex mutex_;
  mutable std::condition_variable work_ready_;
  mutable std::condition_variable work_done_;
  std::deque<Item> queue_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t completed_ = 0;
  bool stopping_ = false;
  std::mutex join_mutex_;  // serialises stop() callers around join()
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace memd
