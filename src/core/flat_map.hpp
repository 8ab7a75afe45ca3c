// core/flat_map.hpp — open-addressing hash map from 64-bit keys to 32-bit
// values, for the allocator's address → block lookups.
//
// Why not std::unordered_map: it allocates a node per insert, which costs more
// than the whole allocation fast path. Linear probing with backward-shift
// deletion keeps lookups to one or two cache lines and needs no tombstones.
// Key ~0 is reserved as the empty marker (no allocator offset reaches it).
//
// Thread safety: none; the owner serialises access.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

namespace memd {

class FlatMap {
 public:
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};

  FlatMap() { rehash(64); }

  std::size_t size() const noexcept { return size_; }

  // Inserts or overwrites.
  void insert(std::uint64_t key, std::uint32_t value) {
    if ((size_ + 1) * 4 > slots_.size() * 3) rehash(slots_.size() * 2);
    std::size_t i = index(key);
    while (slots_[i].key != kEmpty) {
      if (slots_[i].key == key) {
        slots_[i].value = value;
        return;
      }
      i = (i + 1) & mask_;
    }
    slots_[i] = {key, value};
    ++size_;
  }

  std::optional<std::uint32_t> find(std::uint64_t key) const noexcept {
    std::size_t i = index(key);
    while (slots_[i].key != kEmpty) {
      if (slots_[i].key == key) return slots_[i].value;
      i = (i + 1) & mask_;
    }
    return std::nullopt;
  }

  // Removes the key and returns its value, if present.
  std::optional<std::uint32_t> erase(std::uint64_t key) noexcept {
    return erase_if(key, [](std::uint32_t) { return true; });
  }

  // The key's value, if present, removed only when pred(value) holds: one
  // probe whether it is removed or not.
  template <typename Pred>
  std::optional<std::uint32_t> erase_if(std::uint64_t key, Pred&& pred) noexcept {
    std::size_t i = index(key);
    while (slots_[i].key != key) {
      if (slots_[i].key == kEmpty) return std::nullopt;
      i = (i + 1) & mask_;
    }
    const std::uint32_t value = slots_[i].value;
    if (pred(value)) erase_at(i);
    return value;
  }

  template <typename F>
  void for_each(F&& f) const {
    for (const auto& s : slots_)
      if (s.key != kEmpty) f(s.key, s.value);
  }

  void clear() {
    for (auto& s : slots_) s.key = kEmpty;
    size_ = 0;
  }

 private:
  void erase_at(std::size_t i) noexcept {
    // Backward-shift: pull later entries of the probe chain into the hole so
    // every remaining key stays reachable from its home slot.
    std::size_t hole = i;
    std::size_t j = (i + 1) & mask_;
    while (slots_[j].key != kEmpty) {
      std::size_t home = index(slots_[j].key);
      bool movable = ((j - home) & mask_) >= ((j - hole) & mask_);
      if (movable) {
        slots_[hole] = slots_[j];
        hole = j;
      }
      j = (j + 1) & mask_;
    }
    slots_[hole].key = kEmpty;
    --size_;
  }

  struct Slot {
    std::uint64_t key = kEmpty;
    std::uint32_t value = 0;
  };

  std::size_t index(std::uint64_t key) const noexcept {
    // Offsets are multiples of 256: mix the bits so neighbours spread out.
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return static_cast<std::size_t>(key) & mask_;
  }

  void rehash(std::size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(std::bit_ceil(capacity), Slot{});
    mask_ = slots_.size() - 1;
    size_ = 0;
    for (const auto& s : old)
      if (s.key != kEmpty) insert(s.key, s.value);
  }

  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t size_ = 0;
};

}  // namespace memd
