// transfer/defragmenter.hpp — runs defragmentation (issue 14, item 7).
//
// For each pool of the device(s) asked, a pass: takes the pool's picture
// (DevicePool::defrag_space), marks the API allocations that may move
// (MemoryManager::relocation_candidates: not pinned, not exportable, not
// held), plans (core/defrag_plan.hpp), runs the plan's prefix that fits the
// pass's limits, then trims the pool so the emptied units (or segments) go
// back. Passes repeat, each planned afresh (other users keep allocating),
// until a plan is empty or max_passes is reached.
//
// Each move, under the registry discipline a move across devices uses:
//   * a hold, then the write gate exclusively (try-lock: a gate in use means
//     a transfer is writing, so the allocation is skipped, not waited for);
//   * MemoryManager::reserve_relocation (refuses allocations held by
//     anything else: skipped too);
//   * Copy: the bytes go on a stream of the transfer engine's pool
//     (Backend::copy, async) while readers read on from the old place;
//     copies are batched (up to kMaxInFlightMoves / kMaxInFlightBytes) and
//     settle on one event, since a wait per 8 MiB move cost more than the
//     copy (10-18 % of cudaMemcpyAsync's rate on an H100; docs/benchmarks.md); Slide: the same with the io lock held, since the copy
//     overwrites the old bytes, front to back in chunks no larger than the
//     distance (a slide that fails after its first chunk has landed is
//     finished, retried from the first chunk not landed: giving it up then
//     would leave the old place torn); Remap: nothing to copy;
//   * the io lock exclusively, then commit_relocation switches the address
//     (readers wait for the switch only): none ever sees a half-moved
//     allocation. A batch never blocks on an io lock while it holds other
//     blocks' gates (a reader may be a transfer waiting for one of them): it
//     tries for a while, then leaves that block where it is (skipped). A
//     move whose target went meanwhile is abandoned (after the batch in
//     flight has landed, in case the target was one of its old places).
// One defragmentation runs at a time (a second call waits for the first).
//
// Thread safety: run() from any thread; the hook is called on run()'s thread.
#pragma once

#include <functional>
#include <mutex>

#include "alloc/memory_manager.hpp"
#include "base/sanitizers.hpp"
#include "transfer/defrag_report.hpp"
#include "transfer/stream_pool.hpp"

namespace memd {

class Defragmenter {
 public:
  using EventHook = std::function<void(const DefragEvent&)>;

  Defragmenter(MemoryManager& manager, StreamPool& streams) : manager_(manager), streams_(streams) {}

  // Set before the first run(); called with Started and Finished.
  void set_event_hook(EventHook hook) { hook_ = std::move(hook); }

  // invalid_argument for limits of zero or out of range, not_found for a
  // device the catalog does not know. Pools that do not exist yet have
  // nothing to defragment and are not reported.
  Result<DefragReport> run(const DefragOptions& options);

  static Result<void> check(const DefragOptions& options);

 private:
  struct PoolRun;
  struct InFlight;
  enum class MoveOutcome { Done, Skipped, Abandoned, InFlight };
  // A batch of copies settles when it holds this many moves or bytes (the
  // writers of those allocations wait for it), before a slide or a remap,
  // and at the end of each pool's pass.
  // Each move in flight holds its block's write gate; ThreadSanitizer's
  // deadlock detector stops the process when one thread holds more than 64
  // locks, so its builds batch fewer (the batching is the same code).
  static constexpr std::size_t kMaxInFlightMoves = kThreadSanitizer ? 32 : 64;
  static constexpr std::uint64_t kMaxInFlightBytes = 1 * kGiB;
  // How many times (100 us apart) settle() tries a moved block's io lock
  // before leaving the block where it was.
  static constexpr int kIoLockAttempts = 2000;

  // A Copy joins the pool's in-flight batch (InFlight); a slide or a remap
  // lands at once.
  MoveOutcome execute(PoolRun& pool, const AllocationId& id, const DefragMove& move, Error& error);
  MoveOutcome land(AllocationHold& hold, const MemoryManager::Relocation& relocation, Error& error);
  // Waits for the batch's copies, then switches each over.
  void settle(PoolRun& pool, Error& error,
              const std::function<void(const AllocationId&, const DefragMove&, MoveOutcome)>& tally);
  // `issued` (when given) grows by the bytes whose copies were enqueued.
  Result<void> enqueue_copy(PoolRun& pool, std::byte* to, const std::byte* from, std::uint64_t bytes,
                            std::uint64_t chunk, std::uint64_t* issued = nullptr);
  // A slide's copy, finished after a failure once it has overwritten part
  // of the old place (see the .cpp); internal when it could not be.
  Result<void> slide(PoolRun& pool, std::byte* to, const std::byte* from, std::uint64_t bytes, std::uint64_t chunk);
  static constexpr int kSlideRetries = 3;
  Result<void> wait_stream(PoolRun& pool);

  MemoryManager& manager_;
  StreamPool& streams_;
  EventHook hook_;
  std::mutex run_mu_;
};

}  // namespace memd
