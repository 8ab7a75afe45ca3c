// models/component_loader.hpp — fills one component's device buffer from its
// files: several reader threads, pinned staging, asynchronous copies, so
// reading, staging and copying overlap (issue 15, item 2).
//
// The component's bytes are a list of runs (file range → buffer offset,
// models/model_layout.hpp), cut into chunks of at most one staging buffer.
// Each reader thread owns a stream and two staging buffers: it takes the
// next chunk, waits until the buffer's previous copy has landed (its event),
// preads the chunk into it and enqueues the copy to the device, then takes
// the next chunk into its other buffer — so while one chunk's copy runs the
// thread is already reading the next, and `readers` threads keep the disk
// (or the page cache) and the copy engine busy at once.
//
// A run with narrow_to (models/layout_narrowing.hpp) reads F32 bytes; the
// reader converts each chunk in its staging buffer (models/dtype_convert.hpp,
// on its own core, while the other readers' copies run) and copies the half
// that lands. Progress counts file bytes read and buffer bytes landed.
//
// Reads go through ModelFile (pread, bounds-checked): a file truncated during
// the load fails the chunk that crosses its end, the other readers stop at
// their next chunk, every copy in flight drains, and the error says which
// file and where. Nothing is written after load_component() returns.
//
// Thread safety: load_component() may run for several components at once
// (each with its own destination); the progress counters are atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "memd/device.hpp"
#include "memd/error.hpp"
#include "models/model_file.hpp"
#include "models/model_layout.hpp"

namespace memd {

class Backend;
class StagingBuffers;
class StreamPool;

struct LoadProgress {
  std::atomic<std::uint64_t> bytes_read{0};    // preaded into staging
  std::atomic<std::uint64_t> bytes_copied{0};  // landed in the buffer
  std::atomic<bool> cancel{false};             // set to stop at the next chunk
  // Called after bytes land, from the reader threads (so it must be cheap
  // and thread-safe): how the model manager publishes progress events.
  std::function<void()> on_landed;
};

struct LoaderOptions {
  unsigned readers = 4;  // reader threads (each with a stream and two buffers)
};

// Where the bytes go: a buffer nobody else sees yet (a component being
// loaded), `bytes` long, on `device` through `backend`.
struct LoadTarget {
  Backend* backend = nullptr;
  std::byte* base = nullptr;
  std::uint64_t bytes = 0;
};

// invalid_argument when a run lies outside its file or the buffer, or a file
// ended early; cancelled loads return unavailable ("cancelled").
Result<void> load_component(std::span<const ModelFile> files, std::span<const CopyRun> runs, const LoadTarget& target,
                            DeviceId device, StreamPool& streams, StagingBuffers& staging, LoadProgress& progress,
                            const LoaderOptions& options = {});

}  // namespace memd
