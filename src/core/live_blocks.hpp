// core/live_blocks.hpp — which medium blocks the user holds and which a
// thread caches, readable without a lock.
//
// Why: under contention the pool lets each thread keep freed medium blocks
// (8 KiB – 2 MiB) for its own next allocations (alloc/thread_cache.hpp), as
// it does slab slots. A free must still be checked at once — a double free
// or a foreign pointer gets invalid_argument from the call that makes it —
// and the block's TLSF entry cannot say "a thread holds this in its cache".
// This table can: one 64-bit word per tracked block packs its offset, its
// size and a "cached" bit, so a free is one lookup and one compare-and-swap,
// and a word can never be mistaken for another block's (the key is in it).
//
// Layout: open addressing, a fixed power-of-two number of words (anonymous
// zero pages: a pool that never caches medium blocks touches none of them),
// linear probing bounded by kMaxProbe. Inserting into a full neighbourhood fails;
// the pool then leaves that block untracked and frees it through its lock,
// so a full table costs speed, never correctness. Erased words become
// tombstones that later inserts reuse (lookups probe past them).
//
// Thread safety: find, to_cached and to_live are lock-free and may run in any
// thread; insert and erase must be serialised by the caller (the pool lock).
// A word only changes by compare-and-swap from a value its writer read, so a
// stale free racing a flush or a reuse loses its swap and is refused.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "memd/error.hpp"

namespace memd {

class LiveBlocks {
 public:
  static constexpr std::uint64_t kGrain = 256;                  // offsets and sizes are multiples
  static constexpr std::uint64_t kMaxSize = (std::uint64_t{1} << 21) * kGrain - kGrain;  // fits the size field
  static constexpr std::size_t kMaxProbe = 32;

  // Covers addresses from `base` on; 2^capacity_log2 words.
  explicit LiveBlocks(std::uint64_t base, unsigned capacity_log2 = 16);
  ~LiveBlocks();
  LiveBlocks(const LiveBlocks&) = delete;
  LiveBlocks& operator=(const LiveBlocks&) = delete;

  // A tracked block as found: its word (for the swaps) and where it lives.
  class Entry {
   public:
    explicit operator bool() const noexcept { return slot_ != nullptr; }
    std::uint64_t size() const noexcept { return ((word_ >> 1) & kSizeMask) * kGrain; }
    bool cached() const noexcept { return (word_ & 1u) != 0; }

   private:
    friend class LiveBlocks;
    std::uint64_t* slot_ = nullptr;  // accessed through std::atomic_ref only
    std::uint64_t word_ = 0;
  };

  // Caller serialises. Tracks a live block; false when the address is not
  // trackable (below base, unaligned, too large) or its neighbourhood is full.
  bool insert(std::uint64_t address, std::uint64_t size);
  // Caller serialises. A compare-and-swap too: false (nothing changed) when
  // the word is no longer what find() read — a lock-free free cached the
  // block meanwhile, and the caller's free is a double free.
  bool erase(Entry& e) noexcept;

  Entry find(std::uint64_t address) const noexcept;
  // Live -> cached (a free) and cached -> live (reuse from a cache). False
  // when the word is no longer what find() read: the caller lost a race with
  // another free, a flush or a reuse, and must decide under the pool lock.
  static bool to_cached(Entry& e) noexcept;
  static bool to_live(Entry& e) noexcept;

  // Caller serialises against insert/erase: f(address, size, cached).
  template <typename F>
  void for_each(F&& f) const {
    for (std::size_t i = 0; i <= mask_; ++i) {
      const std::uint64_t w = std::atomic_ref<std::uint64_t>(words_[i]).load(std::memory_order_acquire);
      if (w > kTombstone) f(address_of(w), ((w >> 1) & kSizeMask) * kGrain, (w & 1u) != 0);
    }
  }
  std::size_t size() const noexcept { return count_; }  // caller serialises
  // Caller serialises: the count matches the words, and every entry is
  // found from its home slot (within kMaxProbe, no empty word between).
  Result<void> validate() const;

 private:
  static constexpr std::uint64_t kEmpty = 0, kTombstone = 1;
  static constexpr unsigned kSizeBits = 21;
  static constexpr std::uint64_t kSizeMask = (std::uint64_t{1} << kSizeBits) - 1;
  static constexpr unsigned kKeyShift = kSizeBits + 1;

  std::uint64_t key_of(std::uint64_t address) const noexcept { return (address - base_) / kGrain + 1; }
  std::uint64_t address_of(std::uint64_t word) const noexcept { return base_ + ((word >> kKeyShift) - 1) * kGrain; }
  std::size_t home(std::uint64_t key) const noexcept {
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_) & mask_;
  }

  std::uint64_t base_;
  unsigned shift_;
  std::size_t mask_;
  std::size_t count_ = 0;
  std::uint64_t* words_;  // 2^capacity_log2 words, mapped zero
};

}  // namespace memd
