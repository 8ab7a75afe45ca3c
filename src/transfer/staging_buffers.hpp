// transfer/staging_buffers.hpp — pinned staging buffers from the pinned pool.
//
// Pinned host memory is slow to create (cudaMallocHost of 1 GiB: 387 ms on
// an H100; ../shared/ANCHORS.md) and fast to reuse, so staging buffers are
// blocks of the pinned pool — the pool of cpu SharedMemory, which also
// serves SharedMemory allocations and is capped by the pinned limit
// (ManagerOptions::pinned_limit_bytes). Buffers given back stay in a short
// idle list (at most kIdleBuffers), so a warm acquire is a mutex and a pop,
// not a pool call; trim() hands the idle ones back to the pool (optimize and
// clear call it). Buffers come in leases of up to N; under the limit a lease
// gets fewer (at least one) rather than failing.
//
// Thread safety: acquire() from any thread; a Lease is one thread's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "alloc/memory_manager.hpp"

namespace memd {

struct StagingStats {
  std::uint64_t buffer_bytes = 0;
  std::uint64_t buffers_in_use = 0;
  std::uint64_t bytes_in_use = 0;
  std::uint64_t idle_buffers = 0;     // kept for the next lease (pinned, counted in the pool)
  std::uint64_t leases = 0;          // leases granted since start
  std::uint64_t short_leases = 0;    // granted fewer buffers than asked (pinned limit)
  std::uint64_t refused = 0;         // no buffer at all
};

class StagingBuffers {
 public:
  static constexpr std::size_t kIdleBuffers = 16;

  StagingBuffers(MemoryManager& manager, std::uint64_t buffer_bytes);
  ~StagingBuffers();

  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& o) noexcept;
    Lease& operator=(Lease&& o) noexcept;
    ~Lease() { release(); }
    std::size_t size() const noexcept { return buffers_.size(); }
    std::byte* operator[](std::size_t i) const noexcept { return buffers_[i]; }
    std::uint64_t buffer_bytes() const noexcept { return owner_ ? owner_->buffer_bytes_ : 0; }
    void release() noexcept;

   private:
    friend class StagingBuffers;
    StagingBuffers* owner_ = nullptr;
    std::vector<std::byte*> buffers_;
  };

  // Up to `count` buffers, at least one; out_of_memory when none is left.
  Result<Lease> acquire(unsigned count);
  std::uint64_t buffer_bytes() const noexcept { return buffer_bytes_; }
  StagingStats stats() const;
  // Gives the idle buffers back to the pinned pool; returns the bytes.
  std::uint64_t trim();

 private:
  Result<DevicePool*> pool();

  MemoryManager& manager_;
  const std::uint64_t buffer_bytes_;
  mutable std::mutex pool_mutex_;
  DevicePool* pool_ = nullptr;
  std::vector<std::byte*> idle_;  // guarded by pool_mutex_
  std::atomic<std::uint64_t> in_use_{0}, leases_{0}, short_{0}, refused_{0};
};

}  // namespace memd
