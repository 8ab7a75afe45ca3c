// The arena of whole segments; see segment_arena.hpp.
#include "alloc/segment_arena.hpp"

#include "alloc/footprint.hpp"
#include "alloc/retention.hpp"

namespace memd {

SegmentArena::~SegmentArena() {
  for (auto& [base, segment] : segments_) (void)backend_.free(segment);
}

Result<std::uint64_t> SegmentArena::take(std::uint64_t size, std::uint64_t alignment, Footprint& footprint) {
  if (auto block = tlsf_.allocate(size, alignment)) return block->offset;
  const std::uint64_t want = retention::round_up(std::max(size + alignment, options_.segment_size), page_);
  if (options_.capacity != 0 && footprint.reserved() + want > options_.capacity)
    return fail(ErrorCode::out_of_memory, "pool capacity {} reached on {}", format_size(options_.capacity),
                options_.device.to_string());
  ++counters_.device_calls;
  auto segment = backend_.allocate(options_.device, options_.memory_type, want);
  if (!segment) return fail(segment.error());
  const auto base = reinterpret_cast<std::uint64_t>(segment->ptr);
  if (auto added = tlsf_.add_region(base, segment->size / kUnit * kUnit); !added) {
    (void)backend_.free(*segment);
    return fail(added.error());
  }
  segments_.emplace(base, *segment);
  segment_bytes_ += segment->size;
  auto block = tlsf_.allocate(size, alignment);
  if (!block) return fail(ErrorCode::internal, "fresh segment did not fit its request");
  return block->offset;
}

std::optional<std::uint64_t> SegmentArena::give_back(std::uint64_t address) {
  auto freed = tlsf_.free(address);
  if (!freed) return std::nullopt;
  return freed->size;
}

std::uint64_t SegmentArena::release_empty() {
  std::uint64_t released = 0;
  for (auto it = segments_.begin(); it != segments_.end();) {
    if (tlsf_.remove_region(it->first)) {
      ++counters_.device_calls;
      (void)backend_.free(it->second);
      segment_bytes_ -= it->second.size;
      released += it->second.size;
      it = segments_.erase(it);
    } else {
      ++it;
    }
  }
  return released;
}

std::uint64_t SegmentArena::releasable_bytes() const {
  // A segment is wholly empty when one free TLSF block spans its region.
  std::uint64_t bytes = 0;
  tlsf_.for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
    if (!is_free) return;
    auto it = segments_.find(off);
    if (it != segments_.end() && tlsf_.regions().at(off) == size) bytes += it->second.size;
  });
  return bytes;
}

void SegmentArena::free_space(std::uint64_t& free_bytes, std::uint64_t& largest) const {
  free_bytes = tlsf_.free_bytes();
  largest = tlsf_.largest_free();
}

Result<void> SegmentArena::validate() const {
  if (auto r = tlsf_.validate(); !r) return r;
  std::uint64_t bytes = 0;
  for (const auto& [base, segment] : segments_) {
    if (!tlsf_.regions().contains(base))
      return fail(ErrorCode::internal, "segments: segment {:#x} is no TLSF region", base);
    bytes += segment.size;
  }
  if (bytes != segment_bytes_)
    return fail(ErrorCode::internal, "segments: {} bytes counted, segments hold {}", segment_bytes_, bytes);
  if (tlsf_.regions().size() != segments_.size())
    return fail(ErrorCode::internal, "segments: {} TLSF regions for {} segments", tlsf_.regions().size(),
                segments_.size());
  return {};
}

// Segments are backed whole: any free range of one can take a block.
Result<std::uint64_t> SegmentArena::take_at(std::uint64_t address, std::uint64_t size) {
  auto block = tlsf_.allocate_at(address, size);
  if (!block)
    return fail(ErrorCode::conflict, "[{:#x}, +{}) is not free in a segment of {}", address, size,
                options_.device.to_string());
  return block->offset;
}

}  // namespace memd
