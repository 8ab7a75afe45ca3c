// monitor/allocation_history.hpp — what happened to memory lately, per device.
//
// PyTorch's memory snapshot answers "what filled the device?" with a record
// of recent allocator events; this is memd's. Every allocation, free, move,
// eviction (the model manager's, issue 15) and refused request is one
// HistoryEntry in a bounded ring of its device (the oldest entry is dropped
// when the ring is full), stamped with the device's pool state just after it
// (reserved bytes, allocated bytes, live allocations: the pools' cheap
// counters, never the statistics that drain caches). A move is recorded in
// the rings of both devices it touched.
//
// Entries carry a sequence number shared by every device, so the rings of
// several devices merge back into one order. Memory is bounded: at most
// `capacity` entries per device, each with an owner (≤ 128 bytes) and a name
// (≤ 256 characters) by the protocol's bounds; rings exist only for devices
// that have seen an event.
//
// Thread safety: every method is thread-safe. One mutex, held to move an
// entry in or to copy entries out; never while calling anything else.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"
#include "monitor/snapshot_id.hpp"

namespace memd {

inline constexpr std::size_t kDefaultHistoryCapacity = 4096;
inline constexpr std::size_t kMaxHistoryCapacity = 1 << 20;

// The closed list of entry kinds; the wire names are the enum's names.
enum class HistoryKind : std::uint8_t {
  allocate,  // an allocation was made
  free,      // it was freed (by its owner, clear, a session's end, its host's exit)
  move,      // it moved to another device or memory type (the transfer engine)
  evict,     // the model manager moved it down a tier or dropped it (issue 15)
  failed,    // a request was refused: out_of_memory (with a snapshot) or quota_exceeded
};
std::string_view to_string(HistoryKind kind) noexcept;
std::optional<HistoryKind> parse_history_kind(std::string_view name) noexcept;

// One side of a move or eviction.
struct HistoryPlace {
  DeviceId device;
  MemoryType memory_type = MemoryType::Unknown;
  friend bool operator==(const HistoryPlace&, const HistoryPlace&) = default;
};

struct HistoryEntry {
  std::uint64_t sequence = 0;  // assigned by record(): 1, 2, … across every device
  HistoryKind kind = HistoryKind::allocate;
  std::chrono::system_clock::time_point time{};
  DeviceId device;  // whose ring
  std::optional<AllocationId> allocation;  // none for a refused request
  std::string owner;
  std::string name;
  MemoryType memory_type = MemoryType::Unknown;
  MemoryPriority priority = MemoryPriority::Normal;
  std::uint64_t size_bytes = 0;               // as requested
  std::optional<std::uint64_t> block_bytes;   // the block that holds it, when known
  // move and evict: where it was and where it went.
  std::optional<HistoryPlace> from, to;
  // free: the memory stays until a transfer or an importer lets go (Freeing).
  bool deferred = false;
  // failed: why, and the snapshot taken of it (out_of_memory only).
  std::optional<ErrorCode> error;
  std::optional<SnapshotId> snapshot;
  // Another owner's entry shown to a non-admin (redact()): owner, name,
  // allocation and snapshot are left out; kind, sizes and times stay.
  bool hidden = false;
  // The device's pools just after the event (MemoryManager::device_counters).
  std::uint64_t reserved_bytes = 0;
  std::uint64_t allocated_bytes = 0;
  std::uint64_t live_allocations = 0;
};

struct HistoryQuery {
  std::optional<DeviceId> device;    // none: every device, merged by sequence
  std::optional<std::string> owner;  // only this owner's entries
  std::size_t limit = 100;           // the newest `limit` that match
};

class AllocationHistory {
 public:
  explicit AllocationHistory(std::size_t capacity = kDefaultHistoryCapacity);

  // Appends to entry.device's ring (dropping its oldest when full) and
  // returns the sequence number given to it.
  std::uint64_t record(HistoryEntry entry);

  // The newest `limit` entries that match, oldest first.
  std::vector<HistoryEntry> recent(const HistoryQuery& query) const;
  // A device's whole ring, oldest first (what a snapshot keeps).
  std::vector<HistoryEntry> ring(DeviceId device) const;
  // Entries of `device` dropped from its full ring so far.
  std::uint64_t dropped(DeviceId device) const;

  std::size_t capacity() const noexcept { return capacity_; }
  // Rings hold at most capacity entries, in strictly increasing sequence,
  // each in the ring of its own device.
  Result<void> validate() const;

 private:
  struct Ring {
    std::vector<HistoryEntry> slots;  // grows to capacity_, then wraps
    std::size_t next = 0;             // where the next entry goes once full
    std::uint64_t dropped = 0;
  };
  // Oldest first.
  template <typename Fn>
  static void for_each(const Ring& ring, Fn&& fn);

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::uint64_t sequence_ = 0;
  std::map<DeviceId, Ring> rings_;
};

}  // namespace memd
