// alloc/pool_stats.hpp — allocator statistics, declared once.
//
// MEMD_POOL_STAT_FIELDS is the single list of statistics: the struct below, the
// JSON encoding, the Prometheus metrics and the dashboard all expand it, so a
// statistic cannot exist in one view and not another.
//   allocated  = bytes of the blocks users hold now (each request rounded up
//                to its block: 256 bytes, a slab class, or a page for huge)
//   active     = bytes the allocator has carved for live use (allocated plus
//                whole slab spans and blocks parked for stream-ordered reuse)
//   reserved   = physical bytes held from the device (the footprint)
//   fragmentation = 1 - largest free block / free bytes, over mapped memory
//   footprint_ratio = reserved / allocated (1.0 is the physical limit)
//
// Thread safety: a PoolStats is a value snapshot.
#pragma once

#include <cstdint>

namespace memd {

// X(name, unit, help) — unit is "bytes", "count" or "ratio".
//
// The list is two halves. Counters are kept by the pool as it runs
// (PoolCounters, below, is exactly these) and copied out as they are; views
// are computed from the pool's structures when statistics are asked for.
#define MEMD_POOL_COUNTER_FIELDS(X)                                                      \
  X(allocated_bytes, bytes, "Bytes of blocks held by users (requests rounded to blocks)")\
  X(peak_allocated_bytes, bytes, "Peak of allocated_bytes")                              \
  X(peak_active_bytes, bytes, "Peak of active_bytes")                                    \
  X(peak_reserved_bytes, bytes, "Peak of reserved_bytes")                                \
  X(live_allocations, count, "Live allocations")                                         \
  X(peak_live_allocations, count, "Peak of live allocations")                            \
  X(total_allocations, count, "Allocations since start")                                 \
  X(total_frees, count, "Frees since start")                                             \
  X(failed_allocations, count, "Allocations refused (out of memory or quota)")           \
  X(device_calls, count, "Calls into the backend (map, unmap, segment alloc/free)")      \
  X(map_calls, count, "Backend map calls (virtual memory; one run of one or more units)") \
  X(unmap_calls, count, "Backend unmap calls (virtual memory; adjacent whole units)")     \
  X(mapped_units, count, "Mapping units created (each one physical allocation)")          \
  X(unmapped_units, count, "Mapping units released")                                     \
  X(mapping_ns, count, "Nanoseconds spent in backend map and unmap calls")              \
  X(stream_syncs, count, "Waits for the pool's home stream before its freed memory served others")

#define MEMD_POOL_VIEW_FIELDS(X)                                                         \
  X(active_bytes, bytes, "Bytes carved for live use (spans and pending frees included)")\
  X(reserved_bytes, bytes, "Physical bytes held from the device")                        \
  X(free_bytes, bytes, "Mapped bytes not in a live block")                               \
  X(largest_free_block, bytes, "Largest mapped free block")                              \
  X(segments, count, "Segments or reserved ranges held")                                 \
  X(fragmentation, ratio, "1 - largest free block / free bytes")                         \
  X(footprint_ratio, ratio, "reserved_bytes / allocated_bytes (requested bytes live in the registry)")

#define MEMD_POOL_STAT_FIELDS(X) MEMD_POOL_COUNTER_FIELDS(X) MEMD_POOL_VIEW_FIELDS(X)

#define MEMD_STAT_TYPE_bytes std::uint64_t
#define MEMD_STAT_TYPE_count std::uint64_t
#define MEMD_STAT_TYPE_ratio double

// The counters a pool keeps, under its lock. Components that make backend
// calls (arenas, huge blocks, stream fences) count into the same struct.
struct PoolCounters {
#define MEMD_DECLARE_COUNTER(name, unit, help) MEMD_STAT_TYPE_##unit name = 0;
  MEMD_POOL_COUNTER_FIELDS(MEMD_DECLARE_COUNTER)
#undef MEMD_DECLARE_COUNTER
};

struct PoolStats {
#define MEMD_DECLARE_STAT(name, unit, help) MEMD_STAT_TYPE_##unit name = 0;
  MEMD_POOL_STAT_FIELDS(MEMD_DECLARE_STAT)
#undef MEMD_DECLARE_STAT
};

// What a trim would do to a pool now, without doing it (DevicePool::
// trim_forecast): the recommendations' predictions (monitor/recommendations.hpp).
struct TrimForecast {
  // Bytes trim() would give back: whole free mapping units, cached huge
  // ranges, wholly empty segments. Not counted: empty slab spans (at most
  // one 64 KiB span per size class, which trim drops first and which may
  // free one more unit) and stream-ordered frees still pending.
  std::uint64_t releasable_bytes = 0;
  // Mapped bytes free but left after that trim (inside units that still hold
  // a live block): what only moving blocks (compaction) could give back.
  std::uint64_t stranded_free_bytes = 0;
  // The mapping unit the pool maps in now (0: a segment pool, which has none).
  std::uint64_t unit_bytes = 0;
  bool virtual_memory = false;
};

// The counter half of a PoolStats, field by field from the one list.
inline void copy_counters(const PoolCounters& from, PoolStats& to) {
#define MEMD_COPY_COUNTER(name, unit, help) to.name = from.name;
  MEMD_POOL_COUNTER_FIELDS(MEMD_COPY_COUNTER)
#undef MEMD_COPY_COUNTER
}

}  // namespace memd
