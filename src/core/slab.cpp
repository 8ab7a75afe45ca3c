// Slab allocator for small requests; see slab.hpp.
#include "core/slab.hpp"

#include <bit>

namespace memd {

void SlabAllocator::push_partial(std::uint32_t i) {
  Span& s = spans_[i];
  s.prev = kNone;
  s.next = partial_head_[s.cls];
  if (s.next != kNone) spans_[s.next].prev = i;
  partial_head_[s.cls] = i;
  s.in_partial = true;
}

void SlabAllocator::unlink_partial(std::uint32_t i) {
  Span& s = spans_[i];
  if (s.prev != kNone) spans_[s.prev].next = s.next;
  else partial_head_[s.cls] = s.next;
  if (s.next != kNone) spans_[s.next].prev = s.prev;
  s.prev = s.next = kNone;
  s.in_partial = false;
}

std::uint32_t SlabAllocator::new_span(std::uint64_t base, int cls) {
  std::uint32_t i;
  if (!spare_.empty()) {
    i = spare_.back();
    spare_.pop_back();
  } else {
    spans_.emplace_back();
    i = static_cast<std::uint32_t>(spans_.size() - 1);
  }
  Span& s = spans_[i];
  s = Span{};
  s.base = base;
  s.cls = cls;
  s.slot_size = static_cast<std::uint64_t>(cls + 1) * kClassStep;
  s.capacity = static_cast<std::uint32_t>(kSpanSize / s.slot_size);
  s.in_use = true;
  span_index_.insert(base, i);
  ++spans_live_;
  return i;
}

void SlabAllocator::drop_span(std::uint32_t i) {
  Span& s = spans_[i];
  if (s.in_partial) unlink_partial(i);
  span_index_.erase(s.base);
  s.in_use = false;
  --spans_live_;
  spare_.push_back(i);
}

std::optional<std::uint64_t> SlabAllocator::allocate(std::uint64_t size, const SpanSource& source) {
  const int cls = static_cast<int>(class_size(size) / kClassStep) - 1;
  std::uint32_t i = partial_head_[cls];
  if (i == kNone) {
    auto base = source();
    if (!base) return std::nullopt;
    i = new_span(*base, cls);
    push_partial(i);
  }
  Span& s = spans_[i];
  std::uint32_t slot = 0;
  for (std::size_t w = 0; w < s.bits.size(); ++w) {
    if (~s.bits[w] != 0) {
      slot = static_cast<std::uint32_t>(w * 64 + std::countr_one(s.bits[w]));
      break;
    }
  }
  s.bits[slot / 64] |= std::uint64_t{1} << (slot % 64);
  if (++s.used == s.capacity) unlink_partial(i);
  used_bytes_ += s.slot_size;
  ++live_slots_;
  return s.base + slot * s.slot_size;
}

SlabAllocator::FreeResult SlabAllocator::free(std::uint64_t offset) {
  auto found = span_index_.find(offset & ~(kSpanSize - 1));
  if (!found) return {};
  std::uint32_t i = *found;
  Span& s = spans_[i];
  std::uint64_t rel = offset - s.base;
  if (rel % s.slot_size != 0 || rel / s.slot_size >= s.capacity) return {FreeOutcome::DoubleFree, 0, {}};
  auto slot = static_cast<std::uint32_t>(rel / s.slot_size);
  std::uint64_t bit = std::uint64_t{1} << (slot % 64);
  if ((s.bits[slot / 64] & bit) == 0) return {FreeOutcome::DoubleFree, 0, {}};
  s.bits[slot / 64] &= ~bit;
  FreeResult result{FreeOutcome::Freed, s.slot_size, {}};
  used_bytes_ -= s.slot_size;
  --live_slots_;
  bool was_full = s.used == s.capacity;
  --s.used;
  if (was_full) push_partial(i);
  if (s.used == 0) {
    // Keep one empty span per class only when it is the class's sole partial
    // span; otherwise give it back so empty spans never accumulate.
    bool alone = partial_head_[s.cls] == i && s.next == kNone;
    if (!alone) {
      result.released_span = s.base;
      drop_span(i);
    }
  }
  return result;
}

std::optional<std::uint64_t> SlabAllocator::slot_size(std::uint64_t offset) const {
  auto found = span_index_.find(offset & ~(kSpanSize - 1));
  if (!found) return std::nullopt;
  const Span& s = spans_[*found];
  std::uint64_t rel = offset - s.base;
  if (rel % s.slot_size != 0 || rel / s.slot_size >= s.capacity) return std::nullopt;
  auto slot = rel / s.slot_size;
  if (((s.bits[slot / 64] >> (slot % 64)) & 1u) == 0) return std::nullopt;
  return s.slot_size;
}

std::vector<std::uint64_t> SlabAllocator::release_empty_spans() {
  std::vector<std::uint64_t> out;
  for (std::uint32_t i = 0; i < spans_.size(); ++i)
    if (spans_[i].in_use && spans_[i].used == 0) {
      out.push_back(spans_[i].base);
      drop_span(i);
    }
  return out;
}

Result<void> SlabAllocator::validate() const {
  std::uint64_t used = 0, slots = 0, live = 0;
  for (std::uint32_t i = 0; i < spans_.size(); ++i) {
    const Span& s = spans_[i];
    if (!s.in_use) continue;
    ++live;
    if (s.base % kSpanSize != 0) return fail(ErrorCode::internal, "slab: span {} misaligned", s.base);
    std::uint32_t count = 0;
    for (auto w : s.bits) count += static_cast<std::uint32_t>(std::popcount(w));
    if (count != s.used) return fail(ErrorCode::internal, "slab: span {} count {} != bits {}", s.base, s.used, count);
    if (s.used > s.capacity) return fail(ErrorCode::internal, "slab: span {} overfull", s.base);
    bool should_be_partial = s.used < s.capacity;
    if (should_be_partial != s.in_partial)
      return fail(ErrorCode::internal, "slab: span {} partial-list membership wrong", s.base);
    auto idx = span_index_.find(s.base);
    if (!idx || *idx != i) return fail(ErrorCode::internal, "slab: span {} not indexed", s.base);
    used += s.used * s.slot_size;
    slots += s.used;
  }
  for (int c = 0; c < kClassCount; ++c)
    for (std::uint32_t i = partial_head_[c]; i != kNone; i = spans_[i].next)
      if (spans_[i].cls != c || !spans_[i].in_use)
        return fail(ErrorCode::internal, "slab: class {} list holds a foreign span", c);
  if (used != used_bytes_ || slots != live_slots_ || live != spans_live_ || live != span_index_.size())
    return fail(ErrorCode::internal, "slab: counters disagree");
  return {};
}

}  // namespace memd
