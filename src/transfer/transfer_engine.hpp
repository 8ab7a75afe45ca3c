// transfer/transfer_engine.hpp — moving and copying allocations' bytes.
//
// Every byte memd copies for a caller goes through here:
//   * transfers: asynchronous copies between two allocations (any pair of
//     memory types and devices), and moves that re-home an allocation under
//     the same id. submit() checks the request and takes holds on both
//     allocations at once (alloc/allocation_hold.hpp), so errors a caller
//     can fix come back at once and a free after submit() is deferred until
//     the transfer lets go; workers then run the copy in chunks
//     (transfer/chunk_copier.hpp). status() is a snapshot at any moment;
//     cancel() stops a pending transfer at once and a running one at its
//     next chunk boundary. Each finished transfer goes once through the
//     completion hook (the event bus will publish it).
//   * batches: transfers submitted together, each with its own report, run
//     concurrently on the workers; a member that fails undoes nothing.
//   * memory_copy: the same copier on the caller's thread.
//   * byte access: bounds-checked reads and writes of one allocation (the
//     data routes' pieces, stdio's base64 read and write).
// A free during a transfer: the allocation reads Freeing, the transfer stops
// at its next chunk boundary and ends Failed with the reason, and only then
// does the memory go back; no other allocation's bytes change.
// A move holds the allocation's write gate for its whole copy (writes wait;
// reads go on from the old place), then commit_move switches the location
// under the io lock, so a reader sees all old or all new bytes.
//
// Who may touch what is the service's rule (service/memory_service.hpp); the
// engine trusts its caller on ownership and checks everything else.
//
// Thread safety: every method is thread-safe. The destructor cancels what is
// unfinished and joins the workers; the manager must outlive the engine.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "alloc/memory_manager.hpp"
#include "transfer/chunk_copier.hpp"
#include "transfer/transfer_report.hpp"

namespace memd {

struct TransferOptions {
  unsigned workers = 4;            // transfers running at once
  CopyLimits copy;                 // chunks, windows, staging ring
  // Helpers of the staged path's CPU side. One core copies pageable memory
  // at ~9 GB/s; on an H100 host 7 helpers took pageable↔device from 17–25 to
  // 42 GB/s (docs/benchmarks.md, "Transfers"). kAutoThreads: half the cores
  // less one, 1..7.
  static constexpr unsigned kAutoThreads = ~0u;
  unsigned host_copy_threads = kAutoThreads;
  std::size_t finished_kept = 10'000;       // finished reports kept for status()
  std::size_t max_batch = 1024;             // members in one batch
  std::size_t max_unfinished = 65'536;      // pending + running, all owners
  std::size_t max_unfinished_per_owner = 4096;
};

// The helper threads an engine with these options runs (kAutoThreads resolved).
unsigned resolved_copy_threads(unsigned asked);

struct CopyResult {
  std::uint64_t bytes = 0;
  CopyPath path = CopyPath::HostMemcpy;
  std::chrono::nanoseconds elapsed{0};
};

class TransferEngine {
 public:
  using CompletionHook = std::function<void(const TransferReport&)>;

  // host_backend: the catalog's host backend (memcpy streams).
  TransferEngine(MemoryManager& manager, Backend& host_backend, TransferOptions options = {});
  ~TransferEngine();
  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  // Set before the first submit.
  void set_completion_hook(CompletionHook hook);

  // Refused at once: unknown allocations (not_found), a size of zero or a
  // move given offsets or a size (invalid_argument), ranges outside either
  // allocation (out_of_range), too many unfinished transfers
  // (quota_exceeded). Otherwise the report, Pending.
  Result<TransferReport> submit(const std::string& owner, const TransferSpec& spec);
  // All members are checked first; one refused refuses the batch (naming
  // it), and nothing is queued.
  Result<BatchReport> submit_batch(const std::string& owner, const std::vector<TransferSpec>& specs);

  Result<TransferReport> status(const TransferId& id) const;
  Result<BatchReport> batch(const BatchId& id) const;
  // A finished transfer: conflict. A pending one ends Cancelled now; a
  // running one has cancel_requested set and ends at its next chunk.
  Result<TransferReport> cancel(const TransferId& id);
  // Cancels every unfinished member; conflict when none is left.
  Result<BatchReport> cancel_batch(const BatchId& id);

  // memory_copy: synchronous, on the calling thread. Overlapping ranges of
  // one allocation are copied as memmove would.
  Result<CopyResult> copy(const TransferSpec& spec);

  // Bounds-checked byte access of one allocation.
  Result<void> write(const AllocationId& id, std::uint64_t offset, std::span<const std::byte> data);
  Result<std::vector<std::byte>> read(const AllocationId& id, std::uint64_t offset, std::uint64_t length);

  TransferStats stats() const;
  // The engine's streams, lent to the defragmenter (transfer/defragmenter.hpp)
  // so its copies reuse them rather than making their own.
  StreamPool& stream_pool() noexcept { return streams_; }
  // The pinned staging ring (the model loader reads into it too).
  StagingBuffers& staging_buffers() noexcept { return staging_; }
  StagingStats staging() const { return staging_.stats(); }
  // Idle staging buffers back to the pinned pool; the bytes.
  std::uint64_t trim() { return staging_.trim(); }

 private:
  struct Job;
  struct Prepared;
  struct Batch {
    std::string owner;
    SystemTime created_at;
    std::vector<TransferId> members;
  };

  Result<std::shared_ptr<Job>> prepare(const std::string& owner, const TransferSpec& spec);
  void enqueue(std::vector<std::shared_ptr<Job>> jobs, std::optional<BatchId> batch);
  void work();
  void execute(const std::shared_ptr<Job>& job);
  CopyOutcome execute_move(Job& job);
  static CopyControl control_of(Job& job);
  void finish(const std::shared_ptr<Job>& job, CopyOutcome outcome);
  TransferReport snapshot(const Job& job) const;  // mutex_ held
  BatchReport batch_report(const BatchId& id, const Batch& b) const;  // mutex_ held
  void forget_finished();  // mutex_ held

  MemoryManager& manager_;
  Backend& host_backend_;
  const TransferOptions options_;
  StreamPool streams_;
  StagingBuffers staging_;
  HostCopyThreads threads_;
  ChunkCopier copier_;
  CompletionHook hook_;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  bool stopping_ = false;
  std::deque<std::shared_ptr<Job>> queue_;
  std::unordered_map<TransferId, std::shared_ptr<Job>> jobs_;
  std::deque<TransferId> finished_order_;
  std::unordered_map<BatchId, Batch> batches_;
  std::unordered_map<std::string, std::size_t> unfinished_by_owner_;
  std::size_t unfinished_ = 0;
  TransferStats counts_;
  std::atomic<std::uint64_t> bytes_copied_{0}, copies_{0};
  // TransferStats::timed and duration_ns: counted where a transfer or copy ends.
  std::atomic<std::uint64_t> timed_{0}, duration_ns_{0};
  void count_duration(std::chrono::nanoseconds took) noexcept;
  std::vector<std::thread> workers_;  // last: they use everything above
};

}  // namespace memd
