// DevicePool's hooks for defragmentation: its picture for the planner and
// the three ways a relocated block lands (a copy's target, a slide, a remap).
// The registry side (who may move, the locks readers see) is MemoryManager's
// relocation; the copying is transfer/defragmenter's.
#include "alloc/device_pool.hpp"

namespace memd {

DefragSpace DevicePool::defrag_space() {
  drain_caches();
  std::lock_guard lock(mu_);
  streams_.settle();  // free space the home stream may still touch is no target yet
  arena_->flush_kept();
  DefragSpace space;
  space.page = opt_.mode == PoolMode::Virtual ? page_ : 0;
  const auto& tlsf = arena_->blocks();
  for (const auto& [base, size] : tlsf.regions()) space.regions.push_back({base, size});
  if (space.page != 0) arena_->units(space.units);
  // Every carved block is an obstacle until the caller says otherwise: slab
  // spans, pending stream-ordered frees and in-process users' blocks alike.
  tlsf.for_each_block([&](std::uint64_t off, std::uint64_t size, bool is_free) {
    if (!is_free) space.blocks.push_back({off, size, false, off});
  });
  return space;
}

Result<void*> DevicePool::reserve_at(std::uint64_t address, std::uint64_t bytes) {
  std::lock_guard lock(mu_);
  streams_.settle();
  if (asleep()) return std::unexpected(asleep_error());  // its pages are not there
  auto at = arena_->take_at(address, bytes);
  if (!at) return fail(at.error());
  count_allocation(*arena_->blocks().allocated_size(*at));
  return reinterpret_cast<void*>(*at);
}

Result<void> DevicePool::settle_slide(void* gap, void* old_block, void* target, std::uint64_t bytes) {
  const auto gap_at = reinterpret_cast<std::uint64_t>(gap);
  const auto old_at = reinterpret_cast<std::uint64_t>(old_block);
  const auto to = reinterpret_cast<std::uint64_t>(target);
  std::lock_guard lock(mu_);
  const auto gap_bytes = arena_->blocks().allocated_size(gap_at);
  const auto old_bytes = arena_->blocks().allocated_size(old_at);
  if (!gap_bytes || !old_bytes || gap_at + *gap_bytes != old_at || to != gap_at)
    return fail(ErrorCode::internal, "slide of {:#x} to {:#x}: the gap and the block are not adjacent", old_at, to);
  // A medium block tracked for the thread caches leaves the table with its
  // old address (the user's pointer changes).
  if (live_blocks_ && live_blocks_->size() != 0)
    if (auto e = live_blocks_->find(old_at)) (void)live_blocks_->erase(e);
  (void)arena_->give_back(gap_at);
  (void)arena_->give_back(old_at);
  count_free(*gap_bytes);
  count_free(*old_bytes);
  auto landed = arena_->take_at(to, bytes);
  if (!landed)
    return fail(ErrorCode::internal, "slide of {:#x} to {:#x}: the freed range could not be carved: {}", old_at, to,
                landed.error().message);
  count_allocation(*arena_->blocks().allocated_size(*landed));
  return {};
}

Result<void> DevicePool::remap_block(void* old_block, void* target) {
  const auto from = reinterpret_cast<std::uint64_t>(old_block);
  std::lock_guard lock(mu_);
  if (asleep()) return std::unexpected(asleep_error());
  if (auto r = arena_->move_units(from, reinterpret_cast<std::uint64_t>(target)); !r) return r;
  if (live_blocks_ && live_blocks_->size() != 0)
    if (auto e = live_blocks_->find(from)) (void)live_blocks_->erase(e);
  return {};
}

}  // namespace memd
