// TLSF implementation. See tlsf.hpp for the placement policy and invariants.
#include "core/tlsf.hpp"

#include <bit>

namespace memd {

Tlsf::Tlsf(std::uint64_t unit) : unit_(unit), unit_shift_(std::countr_zero(unit)) {
  for (auto& row : heads_) row.fill(kNone);
}

Tlsf::Index Tlsf::mapping(std::uint64_t units) const noexcept {
  if (units < static_cast<std::uint64_t>(kSlCount)) return {0, static_cast<int>(units)};
  int f = 63 - std::countl_zero(units);
  int sl = static_cast<int>((units >> (f - kSlLog2)) - kSlCount);
  return {f - kSlLog2 + 1, sl};
}

std::uint32_t Tlsf::new_node() {
  if (!spare_nodes_.empty()) {
    auto i = spare_nodes_.back();
    spare_nodes_.pop_back();
    nodes_[i] = Node{};
    return i;
  }
  nodes_.emplace_back();
  return static_cast<std::uint32_t>(nodes_.size() - 1);
}

void Tlsf::delete_node(std::uint32_t i) { spare_nodes_.push_back(i); }

void Tlsf::insert_free(std::uint32_t i) {
  Node& n = nodes_[i];
  auto [fl, sl] = mapping(n.size >> unit_shift_);
  n.free = true;
  n.prev_free = kNone;
  n.next_free = heads_[fl][sl];
  if (n.next_free != kNone) nodes_[n.next_free].prev_free = i;
  heads_[fl][sl] = i;
  fl_bitmap_ |= std::uint64_t{1} << fl;
  sl_bitmap_[fl] |= 1u << sl;
  free_bytes_ += n.size;
  ++free_count_;
}

void Tlsf::remove_free(std::uint32_t i) {
  Node& n = nodes_[i];
  auto [fl, sl] = mapping(n.size >> unit_shift_);
  if (n.prev_free != kNone) nodes_[n.prev_free].next_free = n.next_free;
  else heads_[fl][sl] = n.next_free;
  if (n.next_free != kNone) nodes_[n.next_free].prev_free = n.prev_free;
  if (heads_[fl][sl] == kNone) {
    sl_bitmap_[fl] &= ~(1u << sl);
    if (sl_bitmap_[fl] == 0) fl_bitmap_ &= ~(std::uint64_t{1} << fl);
  }
  n.free = false;
  n.prev_free = n.next_free = kNone;
  free_bytes_ -= n.size;
  --free_count_;
}

std::uint32_t Tlsf::find_at_least(Index idx) const noexcept {
  if (idx.fl >= kFlCount) return kNone;
  std::uint32_t sl_map = idx.sl < kSlCount ? sl_bitmap_[idx.fl] & (~0u << idx.sl) : 0;
  int fl = idx.fl;
  if (sl_map == 0) {
    if (fl + 1 >= 64) return kNone;
    std::uint64_t fl_map = fl_bitmap_ & (~std::uint64_t{0} << (fl + 1));
    if (fl_map == 0) return kNone;
    fl = std::countr_zero(fl_map);
    sl_map = sl_bitmap_[fl];
  }
  return heads_[fl][std::countr_zero(sl_map)];
}

std::uint32_t Tlsf::region_head(std::uint64_t offset) const {
  auto head = region_heads_.find(offset);
  return head ? *head : kNone;
}

Result<void> Tlsf::add_region(std::uint64_t offset, std::uint64_t size) {
  if (size == 0 || offset % unit_ != 0 || size % unit_ != 0)
    return fail(ErrorCode::invalid_argument, "region must be a non-empty multiple of {} bytes", unit_);
  if (offset + size < offset || offset + size == FlatMap::kEmpty)
    return fail(ErrorCode::invalid_argument, "region wraps the offset space");
  auto next = regions_.lower_bound(offset);
  if (next != regions_.end() && next->first < offset + size)
    return fail(ErrorCode::conflict, "region overlaps another");
  if (next != regions_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second > offset) return fail(ErrorCode::conflict, "region overlaps another");
  }
  auto i = new_node();
  nodes_[i].offset = offset;
  nodes_[i].size = size;
  insert_free(i);
  regions_.emplace(offset, size);
  region_heads_.insert(offset, i);
  return {};
}

bool Tlsf::remove_region(std::uint64_t offset) {
  auto it = regions_.find(offset);
  if (it == regions_.end()) return false;
  auto i = region_head(offset);
  const Node& n = nodes_[i];
  if (!n.free || n.next_phys != kNone) return false;
  remove_free(i);
  delete_node(i);
  region_heads_.erase(offset);
  regions_.erase(it);
  return true;
}

std::optional<TlsfBlock> Tlsf::allocate(std::uint64_t size, std::uint64_t alignment) {
  if (size == 0) size = 1;
  if (alignment < unit_) alignment = unit_;
  if (size > (std::uint64_t{1} << 56) || alignment > (std::uint64_t{1} << 40) ||
      !std::has_single_bit(alignment))
    return std::nullopt;
  const std::uint64_t units = (size + unit_ - 1) >> unit_shift_;
  const std::uint64_t bytes = units << unit_shift_;
  const std::uint64_t slack = alignment - unit_;  // worst-case front padding
  auto fits = [&](const Node& n) {
    std::uint64_t aligned = (n.offset + alignment - 1) & ~(alignment - 1);
    return aligned - n.offset + bytes <= n.size;
  };

  // 1. Good fit from the request's own list: the smallest of a few that fit.
  std::uint32_t chosen = kNone;
  {
    auto [fl, sl] = mapping(units);
    std::uint32_t i = heads_[fl][sl];
    for (int k = 0; i != kNone && k < kScanLimit; ++k, i = nodes_[i].next_free) {
      if (fits(nodes_[i]) && (chosen == kNone || nodes_[i].size < nodes_[chosen].size)) {
        chosen = i;
        if (nodes_[i].size == bytes) break;
      }
    }
  }
  // 2. The next list up, where every block fits.
  if (chosen == kNone) {
    std::uint64_t want = units + (slack >> unit_shift_);
    if (want >= static_cast<std::uint64_t>(kSlCount)) {
      int f = 63 - std::countl_zero(want);
      want += (std::uint64_t{1} << (f - kSlLog2)) - 1;
    }
    auto idx = mapping(want);
    chosen = find_at_least(idx);
    if (chosen == kNone) return std::nullopt;
  }

  const std::uint64_t at = (nodes_[chosen].offset + alignment - 1) & ~(alignment - 1);
  return carve(chosen, at, bytes);
}

std::optional<TlsfBlock> Tlsf::allocate_in(std::uint32_t handle, std::uint64_t at, std::uint64_t size) {
  if (handle >= nodes_.size() || !nodes_[handle].free || size == 0 || at % unit_ != 0) return std::nullopt;
  const std::uint64_t bytes = ((size + unit_ - 1) >> unit_shift_) << unit_shift_;
  const Node& n = nodes_[handle];
  if (at < n.offset || at + bytes > n.offset + n.size) return std::nullopt;
  return carve(handle, at, bytes);
}

std::optional<TlsfBlock> Tlsf::allocate_at(std::uint64_t at, std::uint64_t size) {
  if (size == 0 || at % unit_ != 0) return std::nullopt;
  const std::uint64_t bytes = ((size + unit_ - 1) >> unit_shift_) << unit_shift_;
  auto r = regions_.upper_bound(at);
  if (r == regions_.begin()) return std::nullopt;
  --r;
  if (at >= r->first + r->second) return std::nullopt;
  for (std::uint32_t i = region_head(r->first); i != kNone; i = nodes_[i].next_phys) {
    const Node& n = nodes_[i];
    if (at < n.offset + n.size) {
      if (!n.free || at + bytes > n.offset + n.size) return std::nullopt;
      return carve(i, at, bytes);
    }
  }
  return std::nullopt;
}

TlsfBlock Tlsf::carve(std::uint32_t chosen, std::uint64_t at, std::uint64_t bytes) {
  remove_free(chosen);
  // Split off the padding before `at`; it stays free.
  {
    Node& n = nodes_[chosen];
    std::uint64_t aligned = at;
    if (aligned != n.offset) {
      std::uint32_t front = new_node();
      Node& b = nodes_[chosen];  // new_node may reallocate
      Node& f = nodes_[front];
      f.offset = b.offset;
      f.size = aligned - b.offset;
      f.prev_phys = b.prev_phys;
      f.next_phys = chosen;
      if (b.prev_phys != kNone) nodes_[b.prev_phys].next_phys = front;
      else region_heads_.insert(f.offset, front);
      b.prev_phys = front;
      b.size -= f.size;
      b.offset = aligned;
      // The block before was allocated (no two frees are adjacent), so the
      // padding cannot merge backwards.
      insert_free(front);
    }
  }
  // Split off the tail; it stays free and cannot merge forwards either.
  if (nodes_[chosen].size > bytes) {
    std::uint32_t tail = new_node();
    Node& b = nodes_[chosen];
    Node& t = nodes_[tail];
    t.offset = b.offset + bytes;
    t.size = b.size - bytes;
    t.prev_phys = chosen;
    t.next_phys = b.next_phys;
    if (b.next_phys != kNone) nodes_[b.next_phys].prev_phys = tail;
    b.next_phys = tail;
    b.size = bytes;
    insert_free(tail);
  }
  used_bytes_ += nodes_[chosen].size;
  used_.insert(nodes_[chosen].offset, chosen);
  return TlsfBlock{nodes_[chosen].offset, nodes_[chosen].size};
}

std::optional<TlsfFreed> Tlsf::free(std::uint64_t offset) {
  std::uint64_t kept = 0;
  return free_below(offset, ~std::uint64_t{0}, kept);
}

std::optional<TlsfFreed> Tlsf::free_below(std::uint64_t offset, std::uint64_t keep_min, std::uint64_t& kept) {
  kept = 0;
  auto found = used_.erase_if(offset, [&](std::uint32_t node) { return nodes_[node].size < keep_min; });
  if (!found) return std::nullopt;
  if (nodes_[*found].size >= keep_min) {
    kept = nodes_[*found].size;
    return std::nullopt;
  }
  std::uint32_t i = *found;
  const std::uint64_t freed = nodes_[i].size;
  used_bytes_ -= freed;
  // Coalesce with the previous block.
  if (std::uint32_t p = nodes_[i].prev_phys; p != kNone && nodes_[p].free) {
    remove_free(p);
    nodes_[p].size += nodes_[i].size;
    nodes_[p].next_phys = nodes_[i].next_phys;
    if (nodes_[i].next_phys != kNone) nodes_[nodes_[i].next_phys].prev_phys = p;
    delete_node(i);
    i = p;
  }
  // Coalesce with the next block.
  if (std::uint32_t n = nodes_[i].next_phys; n != kNone && nodes_[n].free) {
    remove_free(n);
    nodes_[i].size += nodes_[n].size;
    nodes_[i].next_phys = nodes_[n].next_phys;
    if (nodes_[n].next_phys != kNone) nodes_[nodes_[n].next_phys].prev_phys = i;
    delete_node(n);
  }
  insert_free(i);
  return TlsfFreed{freed, TlsfBlock{nodes_[i].offset, nodes_[i].size}};
}

std::optional<std::uint64_t> Tlsf::allocated_size(std::uint64_t offset) const {
  auto i = used_.find(offset);
  if (!i) return std::nullopt;
  return nodes_[*i].size;
}

std::optional<TlsfBlock> Tlsf::free_block_at(std::uint64_t offset) const {
  auto r = regions_.upper_bound(offset);
  if (r == regions_.begin()) return std::nullopt;
  --r;
  if (offset >= r->first + r->second) return std::nullopt;
  for (std::uint32_t i = region_head(r->first); i != kNone; i = nodes_[i].next_phys) {
    const Node& n = nodes_[i];
    if (offset < n.offset + n.size) {
      if (!n.free) return std::nullopt;
      return TlsfBlock{n.offset, n.size};
    }
  }
  return std::nullopt;
}

std::uint64_t Tlsf::largest_free() const {
  if (fl_bitmap_ == 0) return 0;
  int fl = 63 - std::countl_zero(fl_bitmap_);
  int sl = 31 - std::countl_zero(sl_bitmap_[fl]);
  std::uint64_t best = 0;
  for (std::uint32_t i = heads_[fl][sl]; i != kNone; i = nodes_[i].next_free)
    best = std::max(best, nodes_[i].size);
  return best;
}

Result<void> Tlsf::validate() const {
  std::uint64_t free_sum = 0, used_sum = 0;
  std::size_t free_n = 0, used_n = 0;
  for (const auto& [offset, size] : regions_) {
    std::uint32_t i = region_head(offset);
    if (i == kNone) return fail(ErrorCode::internal, "tlsf: region {} has no head", offset);
    if (nodes_[i].prev_phys != kNone) return fail(ErrorCode::internal, "tlsf: head has a predecessor");
    std::uint64_t expect = offset;
    bool prev_free = false;
    for (; i != kNone; i = nodes_[i].next_phys) {
      const Node& n = nodes_[i];
      if (n.offset != expect) return fail(ErrorCode::internal, "tlsf: gap or overlap at {}", n.offset);
      if (n.size == 0 || n.size % unit_ != 0 || n.offset % unit_ != 0)
        return fail(ErrorCode::internal, "tlsf: misaligned block at {}", n.offset);
      if (n.next_phys != kNone && nodes_[n.next_phys].prev_phys != i)
        return fail(ErrorCode::internal, "tlsf: broken physical links at {}", n.offset);
      if (n.free && prev_free) return fail(ErrorCode::internal, "tlsf: adjacent free blocks at {}", n.offset);
      if (n.free) {
        free_sum += n.size;
        ++free_n;
        auto [fl, sl] = mapping(n.size >> unit_shift_);
        bool listed = false;
        for (std::uint32_t j = heads_[fl][sl]; j != kNone; j = nodes_[j].next_free)
          if (j == i) listed = true;
        if (!listed) return fail(ErrorCode::internal, "tlsf: free block {} not in its list", n.offset);
      } else {
        used_sum += n.size;
        ++used_n;
        auto u = used_.find(n.offset);
        if (!u || *u != i) return fail(ErrorCode::internal, "tlsf: used block {} not indexed", n.offset);
      }
      prev_free = n.free;
      expect = n.offset + n.size;
    }
    if (expect != offset + size) return fail(ErrorCode::internal, "tlsf: region {} not tiled", offset);
  }
  for (int fl = 0; fl < kFlCount; ++fl)
    for (int sl = 0; sl < kSlCount; ++sl) {
      bool bit = (sl_bitmap_[fl] >> sl) & 1u;
      if (bit != (heads_[fl][sl] != kNone)) return fail(ErrorCode::internal, "tlsf: bitmap disagrees");
      if (bit && !((fl_bitmap_ >> fl) & 1u)) return fail(ErrorCode::internal, "tlsf: fl bitmap disagrees");
      for (std::uint32_t j = heads_[fl][sl]; j != kNone; j = nodes_[j].next_free)
        if (!nodes_[j].free) return fail(ErrorCode::internal, "tlsf: used block in a free list");
    }
  if (free_sum != free_bytes_ || used_sum != used_bytes_ || free_n != free_count_ ||
      used_n != used_.size())
    return fail(ErrorCode::internal, "tlsf: counters disagree (free {} vs {}, used {} vs {})", free_sum,
                free_bytes_, used_sum, used_bytes_);
  return {};
}

}  // namespace memd
