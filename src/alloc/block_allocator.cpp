// Routing blocks to slabs, the arena and huge ranges; see block_allocator.hpp.
#include "alloc/block_allocator.hpp"

#include "alloc/retention.hpp"

namespace memd {

using retention::round_up;

std::uint64_t BlockAllocator::block_bytes_for(std::uint64_t size) const noexcept {
  if (size >= options_.huge_threshold) return round_up(size, page_);
  if (SlabAllocator::is_small(size)) return SlabAllocator::class_size(size);
  return round_up(size, Arena::kUnit);
}

Result<std::uint64_t> BlockAllocator::allocate(std::uint64_t size, std::uint64_t& block_bytes) {
  if (auto kept = arena_.take_kept(round_up(size, Arena::kUnit))) {
    block_bytes = round_up(size, Arena::kUnit);
    return *kept;
  }
  if (size >= options_.huge_threshold) {
    auto r = huge_.take(size, footprint_);
    if (r) block_bytes = *huge_.live_size(*r);
    return r;
  }
  if (SlabAllocator::is_small(size)) {
    std::optional<Error> span_error;
    auto source = [&]() -> std::optional<std::uint64_t> {
      auto span = arena_.take(SlabAllocator::kSpanSize, SlabAllocator::kSpanSize, footprint_);
      if (!span) {
        span_error = span.error();
        return std::nullopt;
      }
      if (live_slots_) {
        live_slots_->open_span(*span, SlabAllocator::class_size(size));
        spans_opened_.fetch_add(1, std::memory_order_release);
      }
      return *span;
    };
    auto slot = slab_.allocate(size, source);
    if (!slot) return fail(span_error.value_or(Error{ErrorCode::out_of_memory, "no span"}));
    block_bytes = SlabAllocator::class_size(size);
    return *slot;
  }
  block_bytes = round_up(size, Arena::kUnit);
  return arena_.take(size, Arena::kUnit, footprint_);
}

std::optional<std::uint64_t> BlockAllocator::release(std::uint64_t address) {
  if (arena_.is_kept(address)) return std::nullopt;  // freed already
  auto r = slab_.free(address);
  if (r.outcome == SlabAllocator::FreeOutcome::Freed) {
    if (r.released_span) drop_span(*r.released_span);
    return r.slot_size;
  }
  if (r.outcome == SlabAllocator::FreeOutcome::DoubleFree) return std::nullopt;
  // NotSlab: the address's span base is no span, so it is no span itself
  // either, and the arena can free it directly.
  if (auto freed = arena_.release(address)) return freed;
  if (auto freed = huge_.release(address)) {
    // Cached as slack; the budget decides whether it stays.
    if (footprint_.reserved() > footprint_.allowed()) footprint_.release_slack(footprint_.reserved() - footprint_.allowed());
    return freed;
  }
  return std::nullopt;
}

std::optional<std::uint64_t> BlockAllocator::live_size(std::uint64_t address) const {
  if (arena_.is_kept(address)) return std::nullopt;
  if (auto s = slab_.slot_size(address)) return s;
  if (auto t = arena_.blocks().allocated_size(address)) {
    if (slab_.owns_span(address)) return std::nullopt;
    return t;
  }
  return huge_.live_size(address);
}

void BlockAllocator::drop_span(std::uint64_t span) {
  if (live_slots_) live_slots_->close_span(span);
  (void)arena_.give_back(span);
}

std::uint64_t BlockAllocator::block_bytes() const noexcept {
  return slab_.used_bytes() + (arena_.blocks().used_bytes() - slab_.span_bytes() - arena_.kept_bytes()) +
         huge_.live_bytes();
}

Result<void> BlockAllocator::validate() const {
  if (auto r = slab_.validate(); !r) return r;
  std::uint64_t span_bytes = 0;
  arena_.blocks().for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
    if (!is_free && slab_.owns_span(off) && size == SlabAllocator::kSpanSize) span_bytes += size;
  });
  if (span_bytes != slab_.span_bytes()) return fail(ErrorCode::internal, "blocks: slab spans not all in the arena");
  return {};
}

}  // namespace memd
