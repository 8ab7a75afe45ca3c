// StagingBuffers: leases of pinned pool blocks.
#include "transfer/staging_buffers.hpp"

#include <utility>

namespace memd {

StagingBuffers::StagingBuffers(MemoryManager& manager, std::uint64_t buffer_bytes)
    : manager_(manager), buffer_bytes_(buffer_bytes) {}

Result<DevicePool*> StagingBuffers::pool() {
  std::lock_guard lock(pool_mutex_);
  if (!pool_) {
    auto p = manager_.pool(DeviceId::cpu(), MemoryType::SharedMemory);
    if (!p) return fail(p.error());
    pool_ = *p;
  }
  return pool_;
}

StagingBuffers::~StagingBuffers() { (void)trim(); }

std::uint64_t StagingBuffers::trim() {
  std::vector<std::byte*> idle;
  DevicePool* pool = nullptr;
  {
    std::lock_guard lock(pool_mutex_);
    idle.swap(idle_);
    pool = pool_;
  }
  for (auto* b : idle) (void)pool->deallocate(b);
  return idle.size() * buffer_bytes_;
}

Result<StagingBuffers::Lease> StagingBuffers::acquire(unsigned count) {
  Lease lease;
  lease.owner_ = this;
  {
    std::lock_guard lock(pool_mutex_);
    while (lease.buffers_.size() < count && !idle_.empty()) {
      lease.buffers_.push_back(idle_.back());
      idle_.pop_back();
    }
  }
  auto p = pool();
  if (!p) return fail(p.error());
  Error last{ErrorCode::out_of_memory, "no pinned staging buffer"};
  for (unsigned i = static_cast<unsigned>(lease.buffers_.size()); i < count; ++i) {
    auto block = (*p)->allocate(buffer_bytes_);
    if (!block) {
      last = block.error();
      break;
    }
    lease.buffers_.push_back(static_cast<std::byte*>(*block));
  }
  if (lease.buffers_.empty()) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    lease.owner_ = nullptr;
    return fail(ErrorCode::out_of_memory, "no pinned staging buffer of {} bytes is free under the pinned limit: {}",
                buffer_bytes_, last.message);
  }
  in_use_.fetch_add(lease.buffers_.size(), std::memory_order_relaxed);
  leases_.fetch_add(1, std::memory_order_relaxed);
  if (lease.buffers_.size() < count) short_.fetch_add(1, std::memory_order_relaxed);
  return lease;
}

StagingStats StagingBuffers::stats() const {
  StagingStats s;
  s.buffer_bytes = buffer_bytes_;
  s.buffers_in_use = in_use_.load(std::memory_order_relaxed);
  s.bytes_in_use = s.buffers_in_use * buffer_bytes_;
  s.leases = leases_.load(std::memory_order_relaxed);
  s.short_leases = short_.load(std::memory_order_relaxed);
  s.refused = refused_.load(std::memory_order_relaxed);
  std::lock_guard lock(pool_mutex_);
  s.idle_buffers = idle_.size();
  return s;
}

StagingBuffers::Lease::Lease(Lease&& o) noexcept
    : owner_(std::exchange(o.owner_, nullptr)), buffers_(std::move(o.buffers_)) {}

StagingBuffers::Lease& StagingBuffers::Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = std::exchange(o.owner_, nullptr);
    buffers_ = std::move(o.buffers_);
  }
  return *this;
}

void StagingBuffers::Lease::release() noexcept {
  if (!owner_) return;
  std::vector<std::byte*> surplus;
  {
    std::lock_guard lock(owner_->pool_mutex_);
    for (auto* b : buffers_) {
      if (owner_->idle_.size() < kIdleBuffers) owner_->idle_.push_back(b);
      else surplus.push_back(b);
    }
  }
  for (auto* b : surplus) (void)owner_->pool_->deallocate(b);
  owner_->in_use_.fetch_sub(buffers_.size(), std::memory_order_relaxed);
  buffers_.clear();
  owner_ = nullptr;
}

}  // namespace memd
