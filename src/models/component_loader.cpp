// models/component_loader.cpp — see component_loader.hpp.
#include "models/component_loader.hpp"

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>

#include "backends/backend.hpp"
#include "models/dtype_convert.hpp"
#include "transfer/staging_buffers.hpp"
#include "transfer/stream_pool.hpp"

namespace memd {
namespace {

struct Chunk {
  std::size_t file;
  std::uint64_t file_offset, buffer_offset, bytes;  // bytes: read from the file
  std::optional<Dtype> narrow_to;                   // F32 in the file, half the bytes land
  std::uint64_t landed() const { return narrow_to ? bytes / 2 : bytes; }
};

// The runs cut into pieces of at most `chunk` file bytes (a multiple of 4,
// so a narrowed run's pieces are whole floats), in order.
std::vector<Chunk> chunks_of(std::span<const CopyRun> runs, std::uint64_t chunk) {
  std::vector<Chunk> out;
  chunk = std::max<std::uint64_t>(4, chunk / 4 * 4);
  for (const auto& r : runs)
    for (std::uint64_t at = 0; at < r.bytes; at += chunk)
      out.push_back({r.file, r.file_offset + at, r.buffer_offset + (r.narrow_to ? at / 2 : at),
                     std::min(chunk, r.bytes - at), r.narrow_to});
  return out;
}

// The first error any reader hit; the others stop at their next chunk.
struct FirstError {
  std::mutex mu;
  std::optional<Error> error;
  std::atomic<bool> set{false};
  void put(Error e) {
    std::lock_guard lock(mu);
    if (!error) error = std::move(e);
    set.store(true, std::memory_order_release);
  }
};

}  // namespace

Result<void> load_component(std::span<const ModelFile> files, std::span<const CopyRun> runs, const LoadTarget& target,
                            DeviceId device, StreamPool& streams, StagingBuffers& staging, LoadProgress& progress,
                            const LoaderOptions& options) {
  if (target.backend == nullptr || (target.base == nullptr && target.bytes != 0))
    return fail(ErrorCode::invalid_argument, "load without a target buffer");
  for (const auto& r : runs) {
    if (r.file >= files.size()) return fail(ErrorCode::invalid_argument, "a run names file {} of {}", r.file, files.size());
    const auto size = files[r.file].size();
    if (r.file_offset > size || r.bytes > size - r.file_offset)
      return fail(ErrorCode::invalid_argument, "{}: run of {} bytes at {} is past its end ({} bytes)",
                  files[r.file].path().string(), r.bytes, r.file_offset, size);
    if (r.buffer_offset > target.bytes || r.buffer_bytes() > target.bytes - r.buffer_offset)
      return fail(ErrorCode::invalid_argument, "run of {} bytes at buffer offset {} is past the {}-byte buffer",
                  r.buffer_bytes(), r.buffer_offset, target.bytes);
    if (r.narrow_to && (!convertible(Dtype::F32, *r.narrow_to) || r.bytes % 4 != 0))
      return fail(ErrorCode::invalid_argument, "a run of {} bytes cannot be narrowed from F32 to {}", r.bytes,
                  to_string(*r.narrow_to));
  }
  const std::vector<Chunk> chunks = chunks_of(runs, staging.buffer_bytes());
  if (chunks.empty()) return {};
  const unsigned readers =
      static_cast<unsigned>(std::clamp<std::size_t>(options.readers, 1, std::max<std::size_t>(1, chunks.size())));

  std::atomic<std::size_t> next{0};
  FirstError first;
  auto reader = [&] {
    auto stream = streams.acquire(*target.backend, device);
    if (!stream) return first.put(stream.error());
    auto buffers = staging.acquire(2);
    if (!buffers) return first.put(buffers.error());
    Backend& backend = *target.backend;
    const Stream& s = stream->stream();
    std::optional<Event> pending[2];
    std::uint64_t pending_bytes[2] = {0, 0};
    auto settle = [&](unsigned b) -> Result<void> {
      if (!pending[b]) return {};
      auto waited = backend.wait(*pending[b]);
      (void)backend.destroy_event(*pending[b]);
      pending[b].reset();
      if (waited) {
        progress.bytes_copied.fetch_add(pending_bytes[b], std::memory_order_relaxed);
        if (progress.on_landed) progress.on_landed();
      }
      return waited;
    };
    const unsigned slots = static_cast<unsigned>(buffers->size());  // 1 under the pinned limit
    for (unsigned turn = 0;; ++turn) {
      if (first.set.load(std::memory_order_acquire) || progress.cancel.load(std::memory_order_relaxed)) break;
      const std::size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= chunks.size()) break;
      const Chunk& c = chunks[i];
      const unsigned b = turn % slots;
      if (auto ok = settle(b); !ok) {
        first.put(ok.error());
        break;
      }
      std::span<std::byte> into((*buffers)[b], c.bytes);
      if (auto ok = files[c.file].read_at(c.file_offset, into); !ok) {
        first.put(ok.error());
        break;
      }
      progress.bytes_read.fetch_add(c.bytes, std::memory_order_relaxed);
      // Narrowing happens here, on the reader's core, while other readers'
      // copies run: the staging buffer's first half then holds the landing
      // bytes.
      if (c.narrow_to)
        if (auto ok = convert_f32_in_place(into, *c.narrow_to); !ok) {
          first.put(ok.error());
          break;
        }
      if (auto ok = backend.copy(target.base + c.buffer_offset, into.data(), c.landed(), s); !ok) {
        first.put(ok.error());
        break;
      }
      auto event = backend.record(s);
      if (!event) {
        (void)backend.synchronize(s);
        progress.bytes_copied.fetch_add(c.landed(), std::memory_order_relaxed);
        first.put(event.error());
        break;
      }
      pending[b] = *event;
      pending_bytes[b] = c.landed();
    }
    // Every copy in flight lands before the staging buffers go back.
    bool settled = true;
    for (unsigned b = 0; b < 2; ++b)
      if (auto ok = settle(b); !ok) {
        first.put(ok.error());
        settled = false;
      }
    // A wait that failed (here or in the loop) proves nothing about its
    // copy: it may still be writing into the target, which the caller frees
    // on failure, and from a staging buffer that goes back now. The stream
    // drains first (a copy running after its target was freed crashed
    // ModelFaultsTest.ACopyThatFailsWhileLoading 1 run in 3).
    if (!settled || first.set.load(std::memory_order_acquire)) (void)backend.synchronize(s);
  };
  std::vector<std::thread> threads;
  threads.reserve(readers - 1);
  for (unsigned t = 1; t < readers; ++t) threads.emplace_back(reader);
  reader();
  for (auto& t : threads) t.join();
  if (first.error) return fail(std::move(*first.error));
  if (progress.cancel.load()) return fail(ErrorCode::unavailable, "load cancelled");
  return {};
}

}  // namespace memd
