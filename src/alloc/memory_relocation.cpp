// MemoryManager's relocation within a pool: the registry side of
// defragmentation (transfer/defragmenter.hpp copies; core/defrag_plan
// decides). Same discipline as a move across devices (reserve_move /
// commit_move): the write gate keeps writers out for the whole copy, the io
// lock keeps readers out only for the switch (and for a slide's copy, which
// overwrites the old bytes).
#include "alloc/memory_manager.hpp"

#include "core/slab.hpp"

namespace memd {

std::vector<MemoryManager::RelocationCandidate> MemoryManager::relocation_candidates(const DevicePool& pool) const {
  std::vector<RelocationCandidate> out;
  registry_.for_each([&](const AllocationRegistry::Entry& e) {
    const auto& r = e.record;
    // Slab slots live inside spans other slots share; exportable memory is
    // its own segment, pinned and exported memory stays where it is mapped.
    if (e.pool != &pool || e.shareable || r.pinned || r.exportable || SlabAllocator::is_small(r.size_bytes)) return true;
    if (r.status != MemoryAllocationStatus::Allocated) return true;
    out.push_back({r.id, reinterpret_cast<std::uint64_t>(e.ptr), r.size_bytes, e.holds > 0});
    return true;
  });
  return out;
}

Result<MemoryManager::Relocation> MemoryManager::reserve_relocation(const AllocationHold& hold,
                                                                    const DefragMove& move) {
  auto& entry = hold.entry();
  auto record = registry_.get(hold.id());
  if (!record) return fail(record.error());
  const auto id = hold.id().to_string();
  if (record->pinned || record->exportable || entry.shareable || entry.pool == nullptr)
    return fail(ErrorCode::conflict, "allocation {} is pinned: it never moves", id);
  if (record->status != MemoryAllocationStatus::Allocated)
    return fail(ErrorCode::conflict, "allocation {} is {}: it stays where it is", id, to_string(record->status));
  if (registry_.holds(entry) > 1)
    return fail(ErrorCode::conflict, "allocation {} is held by a transfer or an import", id);
  if (reinterpret_cast<std::uint64_t>(entry.ptr) != move.from)
    return fail(ErrorCode::conflict, "allocation {} is no longer at {:#x}", id, move.from);
  Relocation r;
  r.pool = entry.pool;
  r.kind = move.kind;
  r.from = static_cast<std::byte*>(entry.ptr);
  r.to = reinterpret_cast<std::byte*>(move.to);
  r.block_bytes = move.size;
  const auto live = r.pool->block_size(entry.ptr);
  if (!live || *live != move.size)
    return fail(ErrorCode::conflict, "allocation {}'s block is not the {} bytes planned", id, move.size);
  switch (move.kind) {
    case DefragMoveKind::Copy: {
      auto target = r.pool->reserve_at(move.to, move.size);
      if (!target) return fail(target.error());
      r.reserved = *target;
      break;
    }
    case DefragMoveKind::Slide: {
      if (!(move.to < move.from && move.from < move.to + move.size))
        return fail(ErrorCode::invalid_argument, "a slide moves a block down over part of itself");
      auto gap = r.pool->reserve_at(move.to, move.from - move.to);
      if (!gap) return fail(gap.error());
      r.reserved = *gap;
      break;
    }
    case DefragMoveKind::Remap:
      break;  // the pool checks the target when the units move
  }
  registry_.set_status(entry, MemoryAllocationStatus::Moving);
  return r;
}

Result<AllocationRecord> MemoryManager::commit_relocation(const AllocationHold& hold, const Relocation& r) {
  auto& entry = hold.entry();
  switch (r.kind) {
    case DefragMoveKind::Copy: break;
    case DefragMoveKind::Slide:
      if (auto ok = r.pool->settle_slide(r.reserved, r.from, r.to, r.block_bytes); !ok) {
        registry_.set_status(entry, MemoryAllocationStatus::Allocated);
        return fail(ok.error());
      }
      break;
    case DefragMoveKind::Remap:
      if (auto ok = r.pool->remap_block(r.from, r.to); !ok) {
        registry_.set_status(entry, MemoryAllocationStatus::Allocated);
        return fail(ok.error());
      }
      break;
  }
  {
    std::shared_lock books(books_mu_);
    registry_.relocate(entry, r.pool, &r.pool->backend(), r.to, entry.record.device, entry.record.memory_type);
  }
  registry_.set_status(entry, MemoryAllocationStatus::Allocated);
  if (r.kind == DefragMoveKind::Copy)
    if (auto freed = r.pool->deallocate(r.from); !freed)
      return fail(ErrorCode::internal, "the old block of relocated allocation {} was not live: {}",
                  hold.id().to_string(), freed.error().message);
  return registry_.get(hold.id());
}

void MemoryManager::abort_relocation(const AllocationHold& hold, const Relocation& r) {
  if (r.reserved != nullptr) (void)r.pool->deallocate(r.reserved);
  registry_.set_status(hold.entry(), MemoryAllocationStatus::Allocated);
}

}  // namespace memd
