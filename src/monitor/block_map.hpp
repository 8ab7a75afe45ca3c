// monitor/block_map.hpp — one device's block map: every segment of its pools
// and the blocks in them, each allocated block named by the allocation that
// starts there.
//
// One walker for both readers: an out-of-memory snapshot
// (monitor/oom_snapshots.hpp, taken when a request fails) and the live map
// the dashboard draws (memory_blocks). Both must show the same thing for the
// same state, so they share this code rather than each walking the pools.
//
// Cost: drains the device's thread caches and walks every block of its pools
// under each pool's lock (DevicePool::snapshot()); the caller bounds what it
// keeps with max_blocks, but the walk itself visits every block.
//
// Thread safety: walk_block_map is as thread-safe as MemoryManager (fully);
// a DeviceBlockMap is a value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string_view>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "alloc/pool_stats.hpp"
#include "monitor/oom_snapshots.hpp"

namespace memd {

struct DeviceBlockMap {
  std::vector<SnapshotSegment> segments;
  // Blocks past max_blocks, over every segment (each segment's own counts
  // still cover them).
  std::uint64_t blocks_omitted = 0;
  std::map<MemoryType, PoolStats> pools;  // every existing pool (stats(): drained)
};

// The allocation a block names, as the snapshot records it.
SnapshotAllocation snapshot_allocation(const AllocationRecord& record);

// Walks the pools that exist on `device` (none is created). `live` are the
// device's live allocations (the manager's list); they name allocated blocks
// and are counted inside slab spans. At most max_blocks blocks are kept, the
// first in segment order.
DeviceBlockMap walk_block_map(MemoryManager& manager, DeviceId device, const std::vector<AllocationRecord>& live,
                              std::size_t max_blocks);

// The map as `viewer` may see it: another owner's allocated blocks keep
// their address, size and state but lose owner, name and id (hidden). For
// non-admins only, as redact(OomSnapshot).
DeviceBlockMap redact(DeviceBlockMap map, std::string_view viewer);

}  // namespace memd
