// ChunkCopier: windows of chunks, each window under the sides' locks.
#include "transfer/chunk_copier.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <vector>

namespace memd {
namespace {

using SteadyClock = std::chrono::steady_clock;

// The locks of one window: the destination's write gate first (a move holds
// it for its whole copy, so waiting for it holds nothing), then the io locks
// in address order: shared to read a side, exclusive to write one. Writers
// of one allocation thus go one at a time (two transfers into the same bytes
// land one after the other, never interleaved), readers together. One
// allocation on both sides is locked once, as a writer.
class WindowLocks {
 public:
  WindowLocks(const CopySide& src, const CopySide& dst) {
    auto* s = src.hold ? &src.hold->entry() : nullptr;
    auto* d = dst.hold ? &dst.hold->entry() : nullptr;
    if (d) gate_ = std::shared_lock(d->write_gate);
    if (s && s == d) {
      write_ = std::unique_lock(d->io);
      return;
    }
    auto lock = [&](AllocationRegistry::Entry* e) {
      if (!e) return;
      if (e == d) write_ = std::unique_lock(e->io);
      else read_ = std::shared_lock(e->io);
    };
    if (s && d && std::less<>{}(d, s)) {
      lock(d);
      lock(s);
    } else {
      lock(s);
      lock(d);
    }
  }

 private:
  std::shared_lock<std::shared_mutex> gate_, read_;
  std::unique_lock<std::shared_mutex> write_;
};

AllocationLocation where(const CopySide& side) { return side.hold ? side.hold->location() : side.block; }

// Events recorded on one stream, drained on every way out so no copy is
// left running against memory the caller is about to let go of. A copy
// enqueued but not yet covered by an event (its record() failed, the next
// copy of a pair failed, a wait() failed) is work the events cannot see:
// issued() marks it, and the way out then synchronizes the whole stream.
class Inflight {
 public:
  Inflight(Backend& backend, const Stream& stream) : backend_(backend), stream_(stream) {}
  ~Inflight() {
    if (pending_ == 0 && !untracked_) return;
    (void)backend_.synchronize(stream_);
    for (auto& e : events_)
      if (e) (void)backend_.destroy_event(*e);
  }
  Inflight(const Inflight&) = delete;
  Inflight& operator=(const Inflight&) = delete;

  void resize(std::size_t n) { events_.resize(n); }
  // A copy was enqueued on the stream.
  void issued() { untracked_ = true; }
  // The stream was synchronized: everything issued has landed.
  void settled() { untracked_ = false; }
  Result<void> record(std::size_t slot) {
    auto e = backend_.record(stream_);
    if (!e) return fail(e.error());
    events_[slot] = *e;
    ++pending_;
    untracked_ = false;  // the event covers every copy enqueued before it
    return {};
  }
  bool busy(std::size_t slot) const { return events_[slot].has_value(); }
  Result<void> wait(std::size_t slot) {
    auto e = *events_[slot];
    events_[slot].reset();
    --pending_;
    auto waited = backend_.wait(e);
    (void)backend_.destroy_event(e);
    if (!waited) untracked_ = true;  // what the event covered may still run
    return waited;
  }

 private:
  Backend& backend_;
  const Stream& stream_;
  std::vector<std::optional<Event>> events_;
  std::size_t pending_ = 0;
  bool untracked_ = false;
};

}  // namespace

struct ChunkCopier::Window {
  const std::byte* src = nullptr;  // the window's first byte on each side
  std::byte* dst = nullptr;
  std::uint64_t bytes = 0;
  bool same_allocation_overlap = false;
  bool backward = false;  // overlapping with the destination after the source
  std::uint64_t base_done = 0;
  std::uint64_t done = 0;  // within this window
  CopyPath path = CopyPath::HostMemcpy;
  AllocationLocation src_loc, dst_loc;
  const CopyControl* control = nullptr;
  StagingBuffers::Lease* staging = nullptr;
  // Checked before each chunk is started: why to stop, or nothing.
  std::function<std::optional<CopyStop>()> stop;
  std::optional<CopyStop> stopped;

  bool should_stop() {
    if (!stopped && stop) stopped = stop();
    return stopped.has_value();
  }

  void landed(std::uint64_t n) {
    done += n;
    if (control->progress) control->progress(base_done + done, path);
  }
};

ChunkCopier::ChunkCopier(Backend& host_backend, StreamPool& streams, StagingBuffers& staging,
                         HostCopyThreads& threads, CopyLimits limits)
    : host_backend_(host_backend), streams_(streams), staging_(staging), threads_(threads), limits_(limits) {}

CopyOutcome ChunkCopier::run(const CopySide& source, const CopySide& destination, std::uint64_t size,
                             const CopyControl& control) {
  CopyOutcome out;
  const bool same = source.hold && destination.hold && source.hold->same_allocation(*destination.hold);
  const bool overlap = same && source.offset < destination.offset + size && destination.offset < source.offset + size &&
                       source.offset != destination.offset;
  const bool backward = overlap && destination.offset > source.offset;
  if (same && source.offset == destination.offset) {  // a copy onto itself changes nothing
    out.bytes_done = size;
    if (control.progress) control.progress(size, CopyPath::HostMemcpy);
    return out;
  }
  // Unpaced: one window, the whole range, locks held throughout. Paced: a
  // chunk per window, sleeping between them with no lock held.
  const bool paced = control.max_bytes_per_second != 0;
  StagingBuffers::Lease staging;
  const auto started = SteadyClock::now();
  auto why_stop = [&]() -> std::optional<CopyStop> {
    if (control.cancel && control.cancel->load(std::memory_order_relaxed)) return CopyStop::Cancelled;
    if (source.hold && source.hold->freeing()) return CopyStop::SourceFreed;
    if (destination.hold && destination.hold->freeing()) return CopyStop::DestinationFreed;
    return std::nullopt;
  };
  std::uint64_t done = 0;
  while (done < size) {
    if (auto stop = why_stop()) {
      out.stop = *stop;
      break;
    }
    if (paced && done > 0) {
      const auto due = started + std::chrono::nanoseconds(static_cast<std::int64_t>(
                                     static_cast<long double>(done) * 1e9L / control.max_bytes_per_second));
      const auto now = SteadyClock::now();
      if (due > now) {  // short naps, so a cancel is seen within 10 ms
        std::this_thread::sleep_for(std::min<SteadyClock::duration>(due - now, std::chrono::milliseconds(10)));
        continue;
      }
    }
    const std::uint64_t n = paced ? std::min(limits_.chunk_bytes, size - done) : size - done;
    // Overlapping and backward: windows from the end.
    const std::uint64_t at = backward ? size - done - n : done;
    Window w;
    w.bytes = n;
    w.base_done = done;
    w.same_allocation_overlap = overlap;
    w.backward = backward;
    w.control = &control;
    w.staging = &staging;
    w.stop = why_stop;
    Result<void> copied;
    {
      WindowLocks locks(source, destination);
      w.src_loc = where(source);
      w.dst_loc = where(destination);
      w.src = w.src_loc.ptr + source.offset + at;
      w.dst = w.dst_loc.ptr + destination.offset + at;
      copied = copy_window(w);
    }
    done += w.done;
    out.path = w.path;
    if (!copied) {
      out.stop = CopyStop::Failed;
      out.error = copied.error();
      break;
    }
    if (w.stopped) {
      out.stop = *w.stopped;
      break;
    }
  }
  out.bytes_done = done;
  return out;
}

Result<void> ChunkCopier::copy_window(Window& w) {
  const auto src = endpoint_of(w.src_loc, limits_.stage_host_devices);
  const auto dst = endpoint_of(w.dst_loc, limits_.stage_host_devices);
  const auto plan = plan_path(src, dst);
  w.path = plan.path;
  if (w.same_allocation_overlap) {
    const bool host_memory = plan.path == CopyPath::HostMemcpy;
    return overlapping(w, host_memory ? host_backend_ : *plan.backend,
                       host_memory ? DeviceId::cpu() : plan.device, host_memory);
  }
  switch (plan.path) {
    case CopyPath::HostMemcpy: return device_async(w, host_backend_, DeviceId::cpu());
    case CopyPath::DeviceAsync: return device_async(w, *plan.backend, plan.device);
    case CopyPath::Staged: return staged(w, *plan.backend, plan.device, plan.to_device);
  }
  return fail(ErrorCode::internal, "unknown copy path");
}

// Both sides addressable by the backend's copy: chunks back to back on one
// stream, an event each, at most window_chunks in flight.
Result<void> ChunkCopier::device_async(Window& w, Backend& backend, DeviceId device) {
  auto stream = streams_.acquire(backend, device);
  if (!stream) return fail(stream.error());
  const bool device_to_device = w.path == CopyPath::DeviceAsync &&
                                endpoint_of(w.src_loc, limits_.stage_host_devices).place == Place::Device &&
                                endpoint_of(w.dst_loc, limits_.stage_host_devices).place == Place::Device;
  const std::uint64_t c = device_to_device ? std::max(limits_.chunk_bytes, limits_.device_chunk_bytes)
                                           : limits_.chunk_bytes;
  const std::size_t chunks = static_cast<std::size_t>((w.bytes + c - 1) / c);
  const std::size_t depth = std::max(1u, limits_.window_chunks);
  Inflight inflight(backend, stream->stream());
  inflight.resize(depth);
  auto bytes_of = [&](std::size_t i) { return std::min(c, w.bytes - i * c); };
  std::size_t issued = 0, landed = 0;
  // A chunk that fails to go: the chunks before it that land still count
  // (a failed transfer's bytesDone says how much of the destination is
  // written), then the error.
  auto failed = [&](Result<void> r) {
    for (; landed < issued && inflight.busy(landed % depth); ++landed) {
      if (!inflight.wait(landed % depth)) break;
      w.landed(bytes_of(landed));
    }
    return r;
  };
  for (; issued < chunks; ++issued) {
    if (w.should_stop()) break;
    const std::size_t slot = issued % depth;
    if (inflight.busy(slot)) {  // the oldest chunk in flight
      if (auto r = inflight.wait(slot); !r) return r;
      w.landed(bytes_of(landed++));
    }
    if (auto r = backend.copy(w.dst + issued * c, w.src + issued * c, bytes_of(issued), stream->stream()); !r)
      return failed(r);
    inflight.issued();
    if (auto r = inflight.record(slot); !r) return failed(r);
  }
  for (; landed < issued; ++landed) {
    if (auto r = inflight.wait(landed % depth); !r) return r;
    w.landed(bytes_of(landed));
  }
  return {};
}

// Pageable host memory on one side: through a ring of pinned buffers. To the
// device: the CPU copies chunk i into a free buffer while the device copies
// chunk i-1 out of another. From the device: up to `ring` chunks are in
// flight into buffers; the CPU empties each as its copy lands and refills it.
Result<void> ChunkCopier::staged(Window& w, Backend& backend, DeviceId device, bool to_device) {
  if (w.staging->size() == 0) {
    auto lease = staging_.acquire(limits_.staging_buffers);
    if (!lease) return fail(lease.error());
    *w.staging = std::move(*lease);
  }
  auto& ring = *w.staging;
  auto stream = streams_.acquire(backend, device);
  if (!stream) return fail(stream.error());
  const std::uint64_t c = std::min<std::uint64_t>(limits_.chunk_bytes, ring.buffer_bytes());
  const std::size_t chunks = static_cast<std::size_t>((w.bytes + c - 1) / c);
  const std::size_t k = ring.size();
  auto bytes_of = [&](std::size_t i) { return std::min(c, w.bytes - i * c); };
  Inflight inflight(backend, stream->stream());
  inflight.resize(k);
  if (to_device) {
    std::vector<std::uint64_t> sizes(k, 0);
    std::size_t i = 0;
    for (; i < chunks; ++i) {
      if (w.should_stop()) break;
      const std::size_t b = i % k;
      if (inflight.busy(b)) {
        if (auto r = inflight.wait(b); !r) return r;
        w.landed(sizes[b]);
      }
      sizes[b] = bytes_of(i);
      threads_.copy(ring[b], w.src + i * c, sizes[b]);
      if (auto r = backend.copy(w.dst + i * c, ring[b], sizes[b], stream->stream()); !r) return r;
      inflight.issued();
      if (auto r = inflight.record(b); !r) return r;
    }
    // The last chunks issued, oldest first.
    for (std::size_t j = i > k ? i - k : 0; j < i; ++j) {
      const std::size_t b = j % k;
      if (!inflight.busy(b)) continue;
      if (auto r = inflight.wait(b); !r) return r;
      w.landed(sizes[b]);
    }
    return {};
  }
  auto issue = [&](std::size_t i) -> Result<void> {
    const std::size_t b = i % k;
    if (auto r = backend.copy(ring[b], w.src + i * c, bytes_of(i), stream->stream()); !r) return r;
    inflight.issued();
    return inflight.record(b);
  };
  std::size_t issued = 0;
  for (; issued < std::min(k, chunks) && !w.should_stop(); ++issued)
    if (auto r = issue(issued); !r) return r;
  for (std::size_t i = 0; i < issued; ++i) {
    const std::size_t b = i % k;
    if (auto r = inflight.wait(b); !r) return r;
    threads_.copy(w.dst + i * c, ring[b], bytes_of(i));
    w.landed(bytes_of(i));
    if (issued < chunks && !w.should_stop()) {
      if (auto r = issue(issued); !r) return r;
      ++issued;
    }
  }
  return {};
}

// One allocation, overlapping ranges: host memory is memmove'd; device
// memory goes chunk by chunk through a pinned bounce buffer, in the
// direction that reads every byte before it is overwritten.
Result<void> ChunkCopier::overlapping(Window& w, Backend& backend, DeviceId device, bool host_memory) {
  if (host_memory) {  // memmove in chunks, in the safe direction, so a cancel is seen
    const std::uint64_t c = limits_.chunk_bytes;
    const std::size_t chunks = static_cast<std::size_t>((w.bytes + c - 1) / c);
    for (std::size_t j = 0; j < chunks; ++j) {
      if (w.should_stop()) break;
      const std::size_t i = w.backward ? chunks - 1 - j : j;
      const std::uint64_t at = i * c, n = std::min(c, w.bytes - at);
      std::memmove(w.dst + at, w.src + at, n);
      w.landed(n);
    }
    return {};
  }
  if (w.staging->size() == 0) {
    auto lease = staging_.acquire(1);
    if (!lease) return fail(lease.error());
    *w.staging = std::move(*lease);
  }
  auto stream = streams_.acquire(backend, device);
  if (!stream) return fail(stream.error());
  std::byte* bounce = (*w.staging)[0];
  // The second copy of a pair, or the synchronize, may fail with the first
  // still running into the bounce buffer, which goes back to the ring.
  Inflight inflight(backend, stream->stream());
  const std::uint64_t c = std::min<std::uint64_t>(limits_.chunk_bytes, w.staging->buffer_bytes());
  const std::size_t chunks = static_cast<std::size_t>((w.bytes + c - 1) / c);
  for (std::size_t j = 0; j < chunks; ++j) {
    if (w.should_stop()) break;
    const std::size_t i = w.backward ? chunks - 1 - j : j;
    const std::uint64_t at = i * c, n = std::min(c, w.bytes - at);
    if (auto r = backend.copy(bounce, w.src + at, n, stream->stream()); !r) return r;
    inflight.issued();
    if (auto r = backend.copy(w.dst + at, bounce, n, stream->stream()); !r) return r;
    if (auto r = backend.synchronize(stream->stream()); !r) return r;
    inflight.settled();
    w.landed(n);
  }
  return {};
}

}  // namespace memd
