// core/slab.hpp — size classes in slabs for small requests.
//
// Requests up to kMaxSize bytes are rounded to a multiple of kClassStep (so a
// PyTorch block size, a multiple of 512, wastes nothing) and served from
// 64 KiB spans that each hold slots of one class. A span is itself one block
// of the large-object allocator, aligned to its size, so a slot's span is
// found by masking the address. Grouping small blocks keeps them from pinning
// pages all over the device, which is what lets free pages be unmapped.
// A class keeps at most one empty span (and only while it has no other
// partial span), so alloc/free cycles at a span boundary do not thrash.
//
// Offset-only: spans come from a caller-supplied source.
//
// Thread safety: none; the owning pool serialises access.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "core/flat_map.hpp"
#include "memd/error.hpp"

namespace memd {

class SlabAllocator {
 public:
  static constexpr std::uint64_t kClassStep = 256;
  static constexpr std::uint64_t kMaxSize = 8 * 1024;
  static constexpr std::uint64_t kSpanSize = 64 * 1024;
  static constexpr int kClassCount = static_cast<int>(kMaxSize / kClassStep);

  // Returns the offset of a free kSpanSize block aligned to kSpanSize, or nullopt.
  using SpanSource = std::function<std::optional<std::uint64_t>()>;

  static constexpr bool is_small(std::uint64_t size) noexcept { return size <= kMaxSize; }
  static constexpr std::uint64_t class_size(std::uint64_t size) noexcept {
    return size == 0 ? kClassStep : (size + kClassStep - 1) / kClassStep * kClassStep;
  }

  // Offset of a slot of at least `size` bytes (size <= kMaxSize), or nullopt
  // when the source has no span to give.
  std::optional<std::uint64_t> allocate(std::uint64_t size, const SpanSource& source);

  enum class FreeOutcome { NotSlab, Freed, DoubleFree };
  struct FreeResult {
    FreeOutcome outcome = FreeOutcome::NotSlab;
    std::uint64_t slot_size = 0;
    std::optional<std::uint64_t> released_span;  // give this span back to its source
  };
  FreeResult free(std::uint64_t offset);

  // Slot size of the live slot at offset, if offset is one.
  std::optional<std::uint64_t> slot_size(std::uint64_t offset) const;
  bool owns_span(std::uint64_t span_offset) const { return span_index_.find(span_offset).has_value(); }

  // Spans with no live slot; they are removed and returned for release.
  std::vector<std::uint64_t> release_empty_spans();

  std::uint64_t span_bytes() const noexcept { return spans_live_ * kSpanSize; }
  std::uint64_t used_bytes() const noexcept { return used_bytes_; }
  std::uint64_t live_slots() const noexcept { return live_slots_; }

  template <typename F>
  void for_each_slot(F&& f) const {  // f(offset, size) for every live slot
    for (const auto& s : spans_) {
      if (!s.in_use) continue;
      for (std::uint32_t k = 0; k < s.capacity; ++k)
        if ((s.bits[k / 64] >> (k % 64)) & 1u) f(s.base + k * s.slot_size, s.slot_size);
    }
  }

  Result<void> validate() const;

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;
  struct Span {
    std::uint64_t base = 0;
    std::uint64_t slot_size = 0;
    std::uint32_t capacity = 0, used = 0;
    std::uint32_t prev = kNone, next = kNone;  // partial list of its class
    int cls = 0;
    bool in_use = false, in_partial = false;
    std::array<std::uint64_t, kSpanSize / kClassStep / 64> bits{};
  };

  void push_partial(std::uint32_t i);
  void unlink_partial(std::uint32_t i);
  std::uint32_t new_span(std::uint64_t base, int cls);
  void drop_span(std::uint32_t i);

  std::vector<Span> spans_;
  std::vector<std::uint32_t> spare_;
  std::array<std::uint32_t, kClassCount> partial_head_ = [] {
    std::array<std::uint32_t, kClassCount> a{};
    a.fill(kNone);
    return a;
  }();
  FlatMap span_index_;  // span base → index
  std::uint64_t spans_live_ = 0;
  std::uint64_t used_bytes_ = 0;
  std::uint64_t live_slots_ = 0;
};

}  // namespace memd
