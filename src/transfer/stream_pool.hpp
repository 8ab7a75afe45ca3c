// transfer/stream_pool.hpp — streams the transfer engine reuses.
//
// Creating a stream costs a thread on the host backend and a driver call on
// CUDA, so copies borrow one per (backend, device) and give it back; a pool
// grows to the number of copies that ran at once and no further.
//
// Thread safety: acquire/release from any thread. The pool must outlive
// every lease; its destructor destroys the streams.
#pragma once

#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "backends/backend.hpp"

namespace memd {

class StreamPool {
 public:
  StreamPool() = default;
  ~StreamPool();
  StreamPool(const StreamPool&) = delete;
  StreamPool& operator=(const StreamPool&) = delete;

  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), backend_(o.backend_), stream_(o.stream_) {}
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease() {
      if (pool_) pool_->release(*backend_, stream_);
    }
    const Stream& stream() const noexcept { return stream_; }

   private:
    friend class StreamPool;
    Lease(StreamPool* pool, Backend* backend, Stream stream) : pool_(pool), backend_(backend), stream_(stream) {}
    StreamPool* pool_ = nullptr;
    Backend* backend_ = nullptr;
    Stream stream_;
  };

  Result<Lease> acquire(Backend& backend, DeviceId device);
  // Streams created so far (idle and lent).
  std::size_t created() const;

 private:
  void release(Backend& backend, const Stream& stream);

  mutable std::mutex mutex_;
  std::map<std::pair<Backend*, DeviceId>, std::vector<Stream>> idle_;
  std::size_t created_ = 0;
};

}  // namespace memd
