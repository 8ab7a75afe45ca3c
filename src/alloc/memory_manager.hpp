// alloc/memory_manager.hpp — allocations made through memd's API.
//
// The facade over four parts, each in its own file with its own state:
//   * the pools, one per (device, memory type), created on first use and
//     owned here (capped at max_device_fraction of the device);
//   * alloc/allocation_registry — GUID → record, pool, pointer (O(1));
//   * alloc/quotas — limits per device / memory type / owner and the bytes
//     counted against them, checked before any device is touched;
//   * alloc/reclaim_ladder — the one place out of memory is retried: trim,
//     then the registered reclaim callbacks (the model manager registers
//     one), then out_of_memory with the numbers that explain it.
// allocate() validates the request, reserves its quota, climbs the ladder,
// and registers the result. Bytes are read, written and copied by
// src/transfer, under holds (alloc/allocation_hold.hpp) the manager hands
// out; a free of a held allocation is deferred until the holds go. A move
// re-homes an allocation in three steps (reserve_move, the caller's copy,
// commit_move or abort_move), keeping its id.
//
// Thread safety: every method is thread-safe. Reclaim callbacks are called
// without the manager's locks held and may call back into the manager.
// validate() sees the registry and the quota counters consistent: the two
// steps that change both (register + land, unlink + release) happen under
// a shared lock that validate() takes exclusively.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "alloc/allocation_hold.hpp"
#include "alloc/allocation_record.hpp"
#include "alloc/allocation_registry.hpp"
#include "alloc/device_pool.hpp"
#include "alloc/limits.hpp"
#include "alloc/pool_stats.hpp"
#include "alloc/quotas.hpp"
#include "alloc/reclaim_ladder.hpp"
#include "backends/device_catalog.hpp"
#include "memd/error.hpp"

namespace memd {

struct AllocationRequest {
  std::uint64_t size_bytes = 0;
  MemoryType memory_type = MemoryType::VRAM;
  std::optional<DeviceId> device;  // default: the catalog's default device (cpu for RAM/SharedMemory)
  std::string owner = "anonymous";
  std::string name;
  MemoryPriority priority = MemoryPriority::Normal;
  MemoryAllocationType allocation_type = MemoryAllocationType::Buffer;
  std::vector<std::string> tags;
  bool pinned = false;
  // Memory of its own that other processes can map (a memfd on the host, GPU
  // units no neighbour shares): not from a pool, and it never moves.
  bool exportable = false;
};

struct PoolKey {
  DeviceId device;
  MemoryType memory_type = MemoryType::VRAM;
  friend auto operator<=>(const PoolKey&, const PoolKey&) = default;
};

struct ManagerOptions {
  // Fraction of a device's capacity memd may reserve, absent explicit limits.
  double max_device_fraction = 0.95;
  // The pool policy of each device's pools (alloc/pool_options.hpp);
  // devices not named get PoolPolicy::Footprint.
  std::map<DeviceId, PoolPolicy> pool_policies;
  // The pinned pool's limit: the capacity of the pool of cpu SharedMemory,
  // which serves SharedMemory allocations and the transfer engine's staging
  // buffers alike (pinned memory is RAM the OS can never page out). 0: a
  // quarter of the machine's RAM.
  std::uint64_t pinned_limit_bytes = 0;
};

class MemoryManager {
 public:
  MemoryManager(const DeviceCatalog& catalog, ManagerOptions options = {});
  ~MemoryManager();
  MemoryManager(const MemoryManager&) = delete;
  MemoryManager& operator=(const MemoryManager&) = delete;

  const DeviceCatalog& catalog() const noexcept;
  const ManagerOptions& options() const noexcept { return options_; }
  // Where a request naming no device goes: the default GPU-like device for
  // VRAM (and UnifiedMemory on CUDA), cpu otherwise.
  DeviceId default_device_for(MemoryType type) const;
  // The pinned pool's limit in force (ManagerOptions::pinned_limit_bytes).
  std::uint64_t pinned_limit() const noexcept;

  Result<AllocationRecord> allocate(const AllocationRequest& request);
  // Frees it and returns its final record (status Freed). Held by a transfer
  // or an export: the record says Freeing, and the memory (and its quota)
  // goes back when the last hold does. Unknown id, or one being freed
  // already: not_found.
  Result<AllocationRecord> deallocate(const AllocationId& id);
  Result<AllocationRecord> get(const AllocationId& id) const;
  // Records matching the filter, newest first.
  std::vector<AllocationRecord> list(const AllocationFilter& filter) const;

  // A hold on the allocation (alloc/allocation_hold.hpp). Unknown, or being
  // freed: not_found.
  Result<AllocationHold> hold(const AllocationId& id);
  // Records a use of the allocation (last_used_at = now).
  void touch(const AllocationHold& hold);
  // Exported (a live export) or back to Allocated; never over Freeing or
  // Moving's own bookkeeping. Unknown or being freed: not_found.
  Result<void> set_exported(const AllocationId& id, bool exported);
  // Renames a live allocation (the model manager hands a buffer from an
  // evicted component to the one coming up). Unknown: not_found.
  Result<void> rename(const AllocationId& id, std::string name);
  // A new descriptor of an exportable allocation's memory, for another
  // process (the caller closes it), and its segment. Not exportable: conflict.
  Result<std::pair<int, ShareableSegment>> export_fd(const AllocationHold& hold);

  // A move's destination: a block of the allocation's size on another
  // device or memory type, its quota reserved for the allocation's owner.
  struct MoveTarget {
    DevicePool* pool = nullptr;
    void* ptr = nullptr;
    DeviceId device;
    MemoryType type = MemoryType::Unknown;
  };
  // Pinned or exported allocations never move, nor to where they are
  // (conflict); limits and memory as for an allocation. Marks it Moving.
  Result<MoveTarget> reserve_move(const AllocationHold& hold, DeviceId device, MemoryType type);
  // Lands a move whose bytes the caller has copied (holding write_gate
  // exclusively since before the copy): waits for readers, switches the
  // location atomically, moves the quota and frees the old block.
  Result<AllocationRecord> commit_move(const AllocationHold& hold, const MoveTarget& target);
  // Gives the target back; the allocation stays where it was.
  void abort_move(const AllocationHold& hold, const MoveTarget& target);

  // ----- relocation within a pool (defragmentation; memory_relocation.cpp) -----
  // An API allocation living in a pool that defragmentation may move: not
  // pinned or exportable, Allocated, and not a slab slot. `held`: something
  // (a transfer, an import) holds it now, so a pass skips it.
  struct RelocationCandidate {
    AllocationId id;
    std::uint64_t address = 0;
    std::uint64_t size = 0;
    bool held = false;
  };
  std::vector<RelocationCandidate> relocation_candidates(const DevicePool& pool) const;
  // A relocation under way: the block reserved at the target (Copy), the gap
  // below the block (Slide), or nothing (Remap: the units move at commit).
  struct Relocation {
    DevicePool* pool = nullptr;
    DefragMoveKind kind = DefragMoveKind::Copy;
    std::byte* from = nullptr;
    std::byte* to = nullptr;
    void* reserved = nullptr;  // Copy: the target block; Slide: the gap block
    std::uint64_t block_bytes = 0;
  };
  // The same-pool variant of reserve_move, under the same discipline: the
  // caller holds the allocation and its write_gate exclusively (writers wait
  // from here to the commit). Refuses (conflict) a pinned, exportable,
  // exported or moving allocation, one anything else holds (hold count > 1:
  // a transfer or an import), and one no longer at move.from (a stale plan);
  // a target that is no longer free is conflict too. Marks it Moving.
  Result<Relocation> reserve_relocation(const AllocationHold& hold, const DefragMove& move);
  // Lands it; the caller holds write_gate and io exclusively (readers wait
  // for the switch, so none sees a half-moved allocation): the pool settles
  // the block at its new address (a Remap moves the units now), the registry
  // points there, the old block goes back.
  Result<AllocationRecord> commit_relocation(const AllocationHold& hold, const Relocation& relocation);
  // Gives the reservation back; the allocation stays where it was.
  void abort_relocation(const AllocationHold& hold, const Relocation& relocation);

  Result<void> set_limits(const Limits& limits);
  Limits limits() const;

  // Statistics of every pool that exists (created on first use).
  std::map<PoolKey, PoolStats> pool_stats() const;
  std::map<std::string, OwnerUsage> usage_by_owner() const;
  // Requested bytes of live allocations (the quota counters) by device and type.
  std::map<DeviceId, std::uint64_t> requested_by_device() const;
  std::map<MemoryType, std::uint64_t> requested_by_type() const;

  // Gives cached memory back to the backends; returns the bytes released.
  std::uint64_t trim();
  // Every existing pool's DevicePool::trim_forecast(): what trim() would
  // release, changing nothing.
  std::map<PoolKey, TrimForecast> trim_forecasts() const;
  // Frees every allocation matching the filter (pinned ones included only if
  // include_pinned); returns the records freed.
  std::vector<AllocationRecord> free_matching(const AllocationFilter& filter, bool include_pinned);

  // Forwarded to the ladder (alloc/reclaim_ladder.hpp).
  std::uint64_t add_reclaim_callback(ReclaimCallback callback);
  std::uint64_t add_release_callback(ReleaseCallback callback);
  void remove_reclaim_callback(std::uint64_t handle);
  // The ladder's rungs for every existing pool on `device` (the pressure
  // policy's actions): release_cached trims them and calls the release
  // callbacks; reclaim asks the reclaim callbacks for `needed` bytes of
  // `type` there. No manager lock is held while callbacks run.
  std::uint64_t release_cached(DeviceId device);
  std::uint64_t reclaim(DeviceId device, MemoryType type, std::uint64_t needed);

  // Live counts of every existing pool on `device` (DevicePool::counters():
  // no cache drained, no free-space walk, no driver call): allocated bytes,
  // reserved bytes, live allocations, and each pool's counters (the view
  // fields of those — free bytes, largest free block, fragmentation — are 0).
  // The device's pools' counters, plus its exportable allocations (memory
  // of their own, outside every pool: allocated and reserved alike) — model
  // weights are exportable, and pressure must see them.
  struct DeviceCounters {
    std::uint64_t allocated_bytes = 0, reserved_bytes = 0, allocations = 0;
    std::uint64_t exportable_bytes = 0;        // of those, exportable
    std::uint64_t exportable_allocations = 0;  // of those, exportable
    std::map<MemoryType, PoolStats> pools;
  };
  DeviceCounters device_counters(DeviceId device) const;
  // How often the ladder's rungs were used (for metrics).
  ReclaimLadderCounts reclaim_counts() const;

  // The pool of (device, type), created on first use; for in-process users
  // (model manager, PyTorch shim) and for snapshots.
  Result<DevicePool*> pool(DeviceId device, MemoryType type);
  // A pool of (device, type) made with the options pool() would use, but of
  // its own (its own address range) and not the manager's: the caller owns
  // it, and it is in no statistics, trim or ladder of the manager's. For
  // the engine's named regions (memd/engine.hpp, create_region), which
  // sleep and wake apart from the device's pool.
  Result<std::unique_ptr<DevicePool>> create_pool(DeviceId device, MemoryType type, std::string region);
  // Segments and blocks of every existing pool (for the dashboard).
  std::map<PoolKey, std::vector<SegmentInfo>> snapshot() const;

  // Checks every pool's invariants, then the registry against the pools
  // (each allocation's block is live) and against the quota counters.
  Result<void> validate() const;

 private:
  friend class AllocationHold;
  void unhold(AllocationRegistry::Entry& entry) noexcept;
  // Gives an unlinked entry's memory and quota back.
  Result<void> finish_free(const AllocationRegistry::EntryPtr& entry);
  // The shareable segment of an exportable request, quota already reserved.
  Result<ShareableSegment> allocate_shareable(DeviceId device, const AllocationRequest& request);
  Result<DevicePool*> pool_for(DeviceId device, MemoryType type);
  // What a pool of (device, type) is made with, and the backend serving it.
  Result<std::pair<Backend*, PoolOptions>> pool_options(DeviceId device, MemoryType type) const;

  const DeviceCatalog& catalog_;
  const ManagerOptions options_;

  mutable std::mutex pools_mu_;
  std::map<PoolKey, std::unique_ptr<DevicePool>> pools_;
  // Exportable segments' bytes and count per device (under pools_mu_).
  std::map<DeviceId, std::pair<std::uint64_t, std::uint64_t>> exportable_;

  // Declared after the pools: registry entries point into them.
  AllocationRegistry registry_;
  Quotas quotas_;
  ReclaimLadder ladder_;
  // Shared by the steps that change registry and quotas together; exclusive
  // in validate(), so it never sees one changed without the other.
  mutable std::shared_mutex books_mu_;
};

}  // namespace memd
