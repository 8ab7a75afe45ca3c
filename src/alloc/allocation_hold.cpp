// AllocationHold: a counted claim on a registry entry, given back through
// the manager so a deferred free can land.
#include "alloc/allocation_hold.hpp"

#include <utility>

#include "alloc/device_pool.hpp"
#include "alloc/memory_manager.hpp"

namespace memd {

AllocationHold::AllocationHold(AllocationHold&& other) noexcept
    : manager_(std::exchange(other.manager_, nullptr)), entry_(std::move(other.entry_)) {}

AllocationHold& AllocationHold::operator=(AllocationHold&& other) noexcept {
  if (this != &other) {
    release();
    manager_ = std::exchange(other.manager_, nullptr);
    entry_ = std::move(other.entry_);
  }
  return *this;
}

AllocationLocation AllocationHold::location() const {
  const auto& e = *entry_;
  return AllocationLocation{e.backend, e.pool, e.record.device, e.record.memory_type,
                            static_cast<std::byte*>(e.ptr), e.record.size_bytes};
}

void AllocationHold::release() noexcept {
  if (!entry_) return;
  auto entry = std::move(entry_);
  entry_.reset();
  if (manager_) manager_->unhold(*entry);
  manager_ = nullptr;
}

}  // namespace memd
