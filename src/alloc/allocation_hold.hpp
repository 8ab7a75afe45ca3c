// alloc/allocation_hold.hpp — a claim that keeps an allocation's memory alive.
//
// Work that spans many copies (a transfer, a move, an export) holds the
// allocations it touches. While a hold exists the memory is never handed to
// anyone: a free meanwhile marks the allocation Freeing and returns at once,
// and the memory goes back when the last hold is released
// (alloc/allocation_registry.hpp). Between its copies, work asks freeing()
// and stops early.
//
// Byte access under a hold: readers lock entry().io shared, writers
// entry().write_gate shared and then entry().io exclusively, for the length of
// one copy, and read the location with location() while it is held: a move
// can change it only between copies.
//
// Thread safety: a hold is owned by one thread at a time (move-only); the
// methods that read the entry are safe alongside any other thread's use of
// the same allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "alloc/allocation_registry.hpp"
#include "backends/backend.hpp"

namespace memd {

class MemoryManager;

// Where an allocation's bytes are. Valid while its io lock is held.
struct AllocationLocation {
  Backend* backend = nullptr;
  DevicePool* pool = nullptr;
  DeviceId device;
  MemoryType type = MemoryType::Unknown;
  std::byte* ptr = nullptr;
  std::uint64_t size = 0;
};

class AllocationHold {
 public:
  AllocationHold() = default;
  AllocationHold(AllocationHold&& other) noexcept;
  AllocationHold& operator=(AllocationHold&& other) noexcept;
  AllocationHold(const AllocationHold&) = delete;
  AllocationHold& operator=(const AllocationHold&) = delete;
  ~AllocationHold() { release(); }

  explicit operator bool() const noexcept { return entry_ != nullptr; }
  // These never change while the allocation lives.
  const AllocationId& id() const noexcept { return entry_->record.id; }
  const std::string& owner() const noexcept { return entry_->record.owner; }
  std::uint64_t size() const noexcept { return entry_->record.size_bytes; }
  bool same_allocation(const AllocationHold& other) const noexcept { return entry_ == other.entry_; }
  // True once the allocation's owner freed it (the hold still keeps it).
  bool freeing() const noexcept { return entry_->freeing.load(std::memory_order_relaxed); }

  AllocationRegistry::Entry& entry() const noexcept { return *entry_; }
  // The caller holds entry().io.
  AllocationLocation location() const;

  // Gives the hold back now (the destructor does the same).
  void release() noexcept;

 private:
  friend class MemoryManager;
  AllocationHold(MemoryManager* manager, AllocationRegistry::EntryPtr entry)
      : manager_(manager), entry_(std::move(entry)) {}

  MemoryManager* manager_ = nullptr;
  AllocationRegistry::EntryPtr entry_;
};

}  // namespace memd
