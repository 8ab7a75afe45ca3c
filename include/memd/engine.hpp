// memd/engine.hpp — memd in your own process: the C++ entry point of libmemd.
//
// An Engine is the same engine `memd serve` and `memd stdio` run (devices,
// pools, the transfer engine, the monitor, models), opened in the caller's
// process and driven by direct calls instead of requests. It is a thin facade:
// each method calls the service the transports call (src/service), so the
// checks, errors, events and statistics are the daemon's. The implementation
// is hidden (pimpl), so a program built against this header keeps working
// when memd's internals change.
//
// Every call that can fail returns memd::Result (memd/error.hpp), whose error
// codes are the closed list every door uses; nothing throws, except
// std::bad_alloc where the C++ runtime itself does.
//
// Two ways to allocate:
//   * allocate()/free(): tracked allocations with ids (listed in stats, read
//     and written by id, copied, freed by id — double frees are not_found);
//   * allocate_async()/free_async(): raw stream-ordered blocks straight from
//     the device's pool, for a framework's own allocator (PyTorch's pluggable
//     allocator shape): a block freed on a stream is reused by later
//     allocations on that stream at once, and by others once the stream has
//     passed the free. They count in the device's statistics but have no id.
//
// Thread safety: every method may be called from any number of threads at
// once. Closing (destroying the Engine) must not race other calls; it frees
// everything still allocated. A moved-from Engine may only be destroyed or
// assigned to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "memd/allocation_id.hpp"
#include "memd/device.hpp"
#include "memd/engine_types.hpp"
#include "memd/error.hpp"
#include "memd/export.h"
#include "memd/sleep_report.hpp"

namespace memd {

class MEMD_API Engine {
 public:
  // Discovers the devices and starts the engine. invalid_argument for bad
  // options (an owner breaking the owner rule, a host device smaller than
  // its granularity, a model root that is not a directory).
  static Result<Engine> open(const EngineOptions& options);

  Engine(Engine&&) noexcept;
  Engine& operator=(Engine&&) noexcept;
  ~Engine();

  // Every device the engine manages, in order (cuda:N, host:N, cpu).
  std::vector<DeviceInfo> devices() const;

  // ----- tracked allocations -----
  Result<AllocationInfo> allocate(const AllocateOptions& options);
  // Frees it. Unknown id, or freed already: not_found.
  Result<void> free(const AllocationId& id);
  // Where it is now and how big.
  Result<AllocationInfo> allocation(const AllocationId& id) const;
  // Bytes between this process's memory and an allocation, at `offset`
  // (out_of_range past its end), whatever device it is on.
  Result<void> write(const AllocationId& id, std::uint64_t offset, std::span<const std::byte> data);
  Result<void> read(const AllocationId& id, std::uint64_t offset, std::span<std::byte> out) const;
  // Copies `bytes` from one allocation to another (any devices), waiting
  // until done. out_of_range when either range passes its allocation's end.
  Result<CopyInfo> copy(const AllocationId& source, std::uint64_t source_offset, const AllocationId& destination,
                        std::uint64_t destination_offset, std::uint64_t bytes);

  // ----- stream-ordered raw blocks -----
  // A stream of a GPU-like device (cuda:N or host:N); destroy it when done.
  Result<StreamHandle> create_stream(DeviceId device);
  Result<void> destroy_stream(const StreamHandle& stream);
  // A stream this process made with the CUDA runtime (a cudaStream_t, as
  // PyTorch hands to a pluggable allocator), usable as any StreamHandle;
  // destroy_stream forgets it and leaves it to its maker. A host device:
  // unavailable (it has no native streams).
  Result<StreamHandle> adopt_stream(DeviceId device, void* native_stream);
  // Waits until everything queued on the stream has run.
  Result<void> synchronize(const StreamHandle& stream);
  // A block of `size_bytes` (> 0) of `type` on the stream's device, aligned
  // to 256 bytes, usable in order on `stream`.
  Result<void*> allocate_async(std::uint64_t size_bytes, const StreamHandle& stream,
                               MemoryType type = MemoryType::VRAM);
  // Frees a block from allocate_async on `stream` (the same device and
  // type; a region's block: the region's device, any type). Anything else — a pointer allocate_async did not return, a double
  // free, a tracked allocation's pointer: invalid_argument, and nothing
  // changes.
  Result<void> free_async(void* pointer, const StreamHandle& stream, MemoryType type = MemoryType::VRAM);

  // Gives back every free page, cached range and empty segment of every
  // pool (waiting for stream-ordered frees first); in client mode the
  // leases they held go back to the daemon. Returns the bytes given back.
  std::uint64_t trim();
  // ----- regions: pools that sleep and wake (memd/sleep_report.hpp) -----
  // A named VRAM pool of its own on a GPU-like device (its own address
  // range; the options of the device's pool). Its blocks come from
  // allocate_async(size, stream, region) and go back through free_async
  // like any raw block. invalid_argument: an empty or overlong name (over
  // 128 bytes) or a device without streams; conflict: the name exists on
  // that device. Regions live until the engine closes.
  Result<RegionHandle> create_region(DeviceId device, std::string_view name);
  // A block from the region's pool; the stream must be of its device.
  // unavailable while the region sleeps.
  Result<void*> allocate_async(std::uint64_t size_bytes, const StreamHandle& stream, const RegionHandle& region);
  // Sleep: the region's device memory is given back, its contents copied to
  // pinned host memory (checksummed) or dropped; every address stays
  // reserved. The caller first stops the device work that touches the
  // region (e.g. torch.cuda.synchronize()). Wake: memory is mapped again at
  // the same addresses and the contents, checked, copied back; a checksum
  // mismatch is internal and the region stays asleep. Sleeping twice or
  // waking an awake region: conflict. Frees of its blocks work while it
  // sleeps; allocations do not. A segment-mode device: unavailable.
  Result<SleepReport> sleep_region(const RegionHandle& region, bool keep_contents);
  Result<WakeReport> wake_region(const RegionHandle& region);
  // The region's live counters (reserved_bytes: 0 for its slept memory).
  Result<PoolUsage> region_usage(const RegionHandle& region) const;
  Result<bool> region_asleep(const RegionHandle& region) const;

  // ----- statistics -----
  // The live counters of one pool (not_found: the engine has no such
  // device; a pool not used yet reads all zeros).
  Result<PoolUsage> pool_usage(DeviceId device, MemoryType type = MemoryType::VRAM) const;
  // Every device, or one (not_found for a device the engine does not have).
  Result<std::vector<DeviceStats>> stats(std::optional<DeviceId> device = std::nullopt) const;

  // ----- models -----
  // Starts loading (returns at once, state Loading); wait_model() waits.
  Result<ModelInfo> load_model(const ModelLoadOptions& options);
  Result<ModelInfo> wait_model(std::string_view name,
                               std::chrono::milliseconds timeout = std::chrono::minutes(10));
  Result<ModelInfo> model(std::string_view name) const;
  std::vector<ModelInfo> models() const;
  // Frees what no other model shares. conflict while it is loading.
  Result<ModelInfo> unload_model(std::string_view name);

 private:
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memd
