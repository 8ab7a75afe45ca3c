// transfer/transfer_report.hpp — what a transfer is asked to do, and what
// it has done.
//
// A transfer copies bytes from one allocation (offset, size) to another, or
// moves an allocation to another device or memory type under the same id.
// Its report is a snapshot: status (Pending → InProgress → Completed,
// Failed or Cancelled), bytes done of the total, rate, times, the path the
// bytes took, and an error with a reason when it did not complete. A batch
// is a set of transfers submitted together, each with its own report.
//
// Thread safety: values.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"
#include "memd/typed_guid.hpp"
#include "transfer/copy_path.hpp"

namespace memd {

struct TransferTag {
  static constexpr std::string_view kNoun = "transfer";
};
struct BatchTag {
  static constexpr std::string_view kNoun = "batch";
};
using TransferId = TypedGuid<TransferTag>;
using BatchId = TypedGuid<BatchTag>;

enum class TransferKind : std::uint8_t { Copy, Move };
std::string_view to_string(TransferKind kind) noexcept;  // "copy", "move"

struct TransferSpec {
  AllocationId source;
  std::uint64_t source_offset = 0;
  // A copy names its destination; a move names where to go instead.
  std::optional<AllocationId> destination;
  std::uint64_t destination_offset = 0;
  std::optional<std::uint64_t> size;  // default: the source from source_offset to its end
  std::optional<DeviceId> to_device;      // a move: default the allocation's device
  std::optional<MemoryType> to_type;      // a move: default the allocation's type
  std::uint64_t max_bytes_per_second = 0;  // 0: unpaced
  bool is_move() const noexcept { return !destination.has_value(); }
};

using SystemTime = std::chrono::system_clock::time_point;

struct TransferReport {
  TransferId id;
  std::optional<BatchId> batch;
  TransferKind kind = TransferKind::Copy;
  MemoryTransferStatus status = MemoryTransferStatus::Pending;
  std::string owner;  // who asked
  AllocationId source;
  AllocationId destination;  // a move: the source's id
  std::uint64_t source_offset = 0, destination_offset = 0;
  DeviceId source_device, destination_device;
  MemoryType source_type = MemoryType::Unknown, destination_type = MemoryType::Unknown;
  std::uint64_t size_bytes = 0;
  std::uint64_t bytes_done = 0;
  std::optional<CopyPath> path;  // once a chunk has moved
  bool cancel_requested = false;
  std::uint64_t max_bytes_per_second = 0;
  SystemTime created_at{};
  std::optional<SystemTime> started_at, finished_at;
  std::optional<Error> error;  // Failed or Cancelled: why

  bool finished() const noexcept {
    return status == MemoryTransferStatus::Completed || status == MemoryTransferStatus::Failed ||
           status == MemoryTransferStatus::Cancelled;
  }
  // Bytes per second from start to finish (or to now while running).
  double rate(SystemTime now) const;
};

struct BatchReport {
  BatchId id;
  std::string owner;
  // Pending until a member starts; InProgress while any is unfinished;
  // then Completed if all completed, Failed if any failed, else Cancelled.
  MemoryTransferStatus status = MemoryTransferStatus::Pending;
  std::uint64_t size_bytes = 0, bytes_done = 0;
  SystemTime created_at{};
  std::vector<TransferReport> transfers;
  std::vector<TransferId> failed;  // members that ended Failed
};

// The batch's status from its members'.
MemoryTransferStatus batch_status(const std::vector<TransferReport>& members);

struct TransferStats {
  std::uint64_t submitted = 0, completed = 0, failed = 0, cancelled = 0;
  std::uint64_t pending = 0, in_progress = 0;
  std::uint64_t bytes_copied = 0;  // by finished and running transfers and memory_copy
  std::uint64_t copies = 0;        // memory_copy calls
  // Finished transfers and memory_copy calls: how many, and their times from
  // start to finish summed (a transfer's from when a worker took it up, so
  // time queued is not counted). /metrics exposes them as a histogram's
  // count and sum, from which a mean duration over any window follows.
  std::uint64_t timed = 0;
  std::uint64_t duration_ns = 0;
};

}  // namespace memd
