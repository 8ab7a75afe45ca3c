// core/live_slots.hpp — which slab slots the user holds, readable without a lock.
//
// Why: per-thread caches (alloc/thread_cache.hpp) serve small blocks without
// the pool lock, but a free must still be checked at once: a double free or a
// pointer that is no block gets invalid_argument from the call that made it,
// not corruption later. The slab's own bitmaps are guarded by the pool lock
// and count cached slots as taken, so they cannot answer "does the user hold
// this slot?". This table can: one atomic bit per slot, set when a slot goes
// to the user and cleared (with a check of the old value) when it comes back.
//
// Layout: the covered range is cut into slab spans (SlabAllocator::kSpanSize);
// each span's entry holds its slot size (0: no span) and a bitmap of slots.
// Entries live in chunks of 1 GiB of address space, created the first time a
// span opens there (a device of 140 GiB that keeps its small blocks in a few
// GiB pays for a few chunks of ~640 KiB of address space, not 140). A chunk
// is anonymous zero pages from the OS, so only the pages of entries a span
// has used are ever touched: zeroing whole chunks cost a sizeable share of
// vision_mix's replay time on the host device (page faults of a fresh
// 640 KiB at each new GiB holding small blocks; docs/benchmarks.md, "CPU
// cost of the page map, placement and live slots").
//
// Thread safety: set_live, clear_live, slot_size and is_live are lock-free and
// may run in any thread at any time. open_span and close_span change the
// layout and must be serialised by the caller (the pool lock); they are safe
// against concurrent readers: a span is only closed while none of its slots
// is live, so a correct free never sees its span change, and an incorrect one
// (a stale pointer) finds its bit clear and is refused.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>

#include "core/slab.hpp"
#include "memd/error.hpp"

namespace memd {

class LiveSlots {
 public:
  // Covers [base, base + size), any base.
  LiveSlots(std::uint64_t base, std::uint64_t size);
  ~LiveSlots();
  LiveSlots(const LiveSlots&) = delete;
  LiveSlots& operator=(const LiveSlots&) = delete;

  // Layout changes (caller serialises). span_base aligned to the span size.
  void open_span(std::uint64_t span_base, std::uint64_t slot_size);
  void close_span(std::uint64_t span_base);

  // A slot found by address: one table walk, then any number of bit
  // operations on it. Empty (size 0) when the address is no slot start.
  class Slot {
   public:
    std::uint64_t size() const noexcept { return size_; }
    explicit operator bool() const noexcept { return size_ != 0; }

   private:
    friend class LiveSlots;
    std::uint64_t* word_ = nullptr;  // accessed through std::atomic_ref only
    std::uint64_t bit_ = 0, size_ = 0;
  };
  Slot find(std::uint64_t address) const noexcept;
  // Marks the slot live; false when it was live already (a bug of the
  // caller, never of the user).
  static bool set_live(const Slot& slot) noexcept;
  // Marks it not live; false when it was not live (a double free).
  static bool clear_live(const Slot& slot) noexcept;
  static bool is_live(const Slot& slot) noexcept;

  // Shorthands by address; slot_size is 0 when the address is no slot start
  // of an open span (outside the range, no span, interior pointer).
  std::uint64_t slot_size(std::uint64_t address) const noexcept { return find(address).size(); }
  bool set_live(std::uint64_t address) noexcept { return set_live(find(address)); }
  bool is_live(std::uint64_t address) const noexcept { return is_live(find(address)); }

  // Live slots of the span at span_base (for validate; caller serialises
  // against layout changes). Bits index slots from the span base.
  static constexpr std::size_t kWords = SlabAllocator::kSpanSize / SlabAllocator::kClassStep / 64;
  std::array<std::uint64_t, kWords> live_bits(std::uint64_t span_base) const noexcept;

 private:
  // Plain words in zero pages (an implicit-lifetime type, so mapped zero
  // memory is a valid Entry), every access through std::atomic_ref.
  struct Entry {
    std::uint64_t slot_size;
    std::array<std::uint64_t, kWords> live;
  };
  static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);
  static constexpr std::uint64_t kChunkBytes = std::uint64_t{1} << 30;
  static constexpr std::uint64_t kEntriesPerChunk = kChunkBytes / SlabAllocator::kSpanSize;
  struct Chunk {
    // A bit per span, set when the span first opens and never cleared: a
    // lookup of an address no span ever covered (every large block's free
    // asks) reads this word, not the entry, whose page would fault in.
    std::array<std::uint64_t, kEntriesPerChunk / 64> opened;
    std::array<Entry, kEntriesPerChunk> entries;
  };

  Entry* entry(std::uint64_t address) const noexcept;

  std::uint64_t base_ = 0, size_ = 0;
  std::size_t chunk_count_ = 0;
  std::unique_ptr<std::atomic<Chunk*>[]> chunks_;
};

}  // namespace memd
