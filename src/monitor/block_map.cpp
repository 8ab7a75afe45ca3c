// One device's block map (monitor/block_map.hpp).
#include "monitor/block_map.hpp"

#include <algorithm>
#include <tuple>

namespace memd {

SnapshotAllocation snapshot_allocation(const AllocationRecord& r) {
  SnapshotAllocation a;
  a.id = r.id;
  a.owner = r.owner;
  a.name = r.name;
  a.memory_type = r.memory_type;
  a.priority = r.priority;
  a.size_bytes = r.size_bytes;
  a.address = r.address;
  a.pinned = r.pinned;
  a.exportable = r.exportable;
  return a;
}

DeviceBlockMap walk_block_map(MemoryManager& manager, DeviceId device, const std::vector<AllocationRecord>& live,
                              std::size_t max_blocks) {
  DeviceBlockMap map;
  // By (memory type, address), to name the allocation that starts a block
  // and count those inside a slab span. Exportable allocations have memory
  // of their own, outside every pool: no block names them.
  std::vector<std::tuple<MemoryType, std::uint64_t, const AllocationRecord*>> by_address;
  for (const auto& r : live)
    if (!r.exportable) by_address.emplace_back(r.memory_type, r.address, &r);
  std::sort(by_address.begin(), by_address.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<0>(a), std::get<1>(a)) < std::tie(std::get<0>(b), std::get<1>(b));
  });
  auto first_at = [&](MemoryType type, std::uint64_t address) {
    return std::lower_bound(by_address.begin(), by_address.end(), std::pair{type, address},
                            [](const auto& e, const auto& key) {
                              return std::tie(std::get<0>(e), std::get<1>(e)) < std::tie(key.first, key.second);
                            });
  };

  // Only pools that exist (device_counters lists them): asking pool() for
  // any other would create it.
  const auto counters = manager.device_counters(device);
  std::uint64_t blocks_recorded = 0;
  for (const auto& [type, unused] : counters.pools) {
    auto pool = manager.pool(device, type);
    if (!pool) continue;
    map.pools.emplace(type, (*pool)->stats());
    for (const SegmentInfo& seg : (*pool)->snapshot()) {
      SnapshotSegment out;
      out.memory_type = type;
      out.address = seg.address;
      out.size = seg.size;
      out.mapped_bytes = seg.mapped_bytes;
      out.kind = seg.kind;
      out.block_count = seg.blocks.size();
      for (const BlockInfo& b : seg.blocks) {
        if (b.state == "free") {
          out.free_bytes += b.size;
          out.largest_free = std::max(out.largest_free, b.size);
        } else {
          out.live_bytes += b.size;
        }
        if (blocks_recorded >= max_blocks) {
          ++map.blocks_omitted;
          continue;
        }
        ++blocks_recorded;
        SnapshotBlock block{b.address, b.size, b.state, std::nullopt, 0};
        if (b.state != "free") {
          auto it = first_at(type, b.address);
          if (b.state == "slab") {
            for (; it != by_address.end() && std::get<0>(*it) == type && std::get<1>(*it) < b.address + b.size; ++it)
              ++block.slab_allocations;
          } else if (it != by_address.end() && std::get<0>(*it) == type && std::get<1>(*it) == b.address) {
            block.allocation = snapshot_allocation(*std::get<2>(*it));
          }
        }
        out.blocks.push_back(std::move(block));
      }
      map.segments.push_back(std::move(out));
    }
  }
  return map;
}

DeviceBlockMap redact(DeviceBlockMap map, std::string_view viewer) {
  for (auto& s : map.segments)
    for (auto& b : s.blocks)
      if (b.allocation && b.allocation->owner != viewer) {
        b.allocation->id.reset();
        b.allocation->owner.clear();
        b.allocation->name.clear();
        b.allocation->hidden = true;
      }
  return map;
}

}  // namespace memd
