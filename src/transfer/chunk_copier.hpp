// transfer/chunk_copier.hpp — one copy of a byte range, in bounded chunks.
//
// Every copy memd makes runs here: a transfer's, a move's, memory_copy's. It
// takes the sides' locks (alloc/allocation_hold.hpp: the destination's write
// gate, then both io locks in address order), reads where they are, picks the
// path (transfer/copy_path.hpp) and moves the bytes in chunks with up to
// window_chunks of them in flight on one stream (an event each; progress is
// reported as each lands), so the copy engine never waits for the CPU. Before
// each chunk it stops if the cancel flag is set or either allocation is being
// freed; a stop is always at a chunk boundary, after every chunk in flight has
// drained: nothing is ever written after run() returns.
//
// An unpaced copy holds the locks for its whole length (a move of one of its
// allocations commits after it, a write into its destination waits for it); a
// paced copy goes one chunk at a time and sleeps with no lock held, and reads
// the sides' locations again each time (a move may have re-homed one).
//
// Overlapping ranges (one allocation copied within itself) go chunk by chunk
// in the direction that never overwrites unread bytes, each chunk through a
// bounce buffer (memmove for host memory), so memory_copy has memmove's
// meaning.
//
// Thread safety: run() may be called from many threads at once.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>

#include "alloc/allocation_hold.hpp"
#include "transfer/copy_path.hpp"
#include "transfer/host_copy_threads.hpp"
#include "transfer/staging_buffers.hpp"
#include "transfer/stream_pool.hpp"

namespace memd {

struct CopyLimits {
  std::uint64_t chunk_bytes = 8ull << 20;
  // Device to device the copy engines move a chunk in microseconds, so an
  // event per 8 MiB would cost more than the copy: larger chunks there.
  std::uint64_t device_chunk_bytes = 256ull << 20;
  unsigned window_chunks = 8;
  unsigned staging_buffers = 4;  // ring of the staged path, each chunk_bytes
  bool stage_host_devices = false;  // transfer/copy_path.hpp
};

// One side of a copy: an allocation under a hold (locked per window), or a
// block nobody else can see (a move's new home: no locks).
struct CopySide {
  const AllocationHold* hold = nullptr;
  AllocationLocation block;
  std::uint64_t offset = 0;
};

enum class CopyStop : std::uint8_t { Done, Cancelled, SourceFreed, DestinationFreed, Failed };

struct CopyOutcome {
  CopyStop stop = CopyStop::Done;
  std::uint64_t bytes_done = 0;
  CopyPath path = CopyPath::HostMemcpy;  // of the last window
  Error error;                           // when Failed
};

struct CopyControl {
  const std::atomic<bool>* cancel = nullptr;
  // Called after each chunk lands, with the bytes done so far.
  std::function<void(std::uint64_t bytes_done, CopyPath path)> progress;
  // 0: as fast as the path goes; else the copy waits between chunks to stay
  // at or under this rate (a background copy that must not hog the link).
  std::uint64_t max_bytes_per_second = 0;
};

class ChunkCopier {
 public:
  ChunkCopier(Backend& host_backend, StreamPool& streams, StagingBuffers& staging, HostCopyThreads& threads,
              CopyLimits limits);

  CopyOutcome run(const CopySide& source, const CopySide& destination, std::uint64_t size,
                  const CopyControl& control);

  const CopyLimits& limits() const noexcept { return limits_; }

 private:
  struct Window;
  // Copies the window; returns early, with w.done short, when w.stop() says so.
  Result<void> copy_window(Window& w);
  Result<void> device_async(Window& w, Backend& backend, DeviceId device);
  Result<void> staged(Window& w, Backend& backend, DeviceId device, bool to_device);
  Result<void> overlapping(Window& w, Backend& backend, DeviceId device, bool host_memory);

  Backend& host_backend_;
  StreamPool& streams_;
  StagingBuffers& staging_;
  HostCopyThreads& threads_;
  const CopyLimits limits_;
};

}  // namespace memd
