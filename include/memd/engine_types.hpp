// memd/engine_types.hpp — the values memd::Engine takes and returns.
//
// These are the in-process library's own small structs, not the internal
// records (src/alloc, src/monitor, src/models): the internals may grow fields
// and change layout without breaking a program built against libmemd, and the
// facade copies what it promises into these.
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
#include "memd/memory_types.hpp"

namespace memd {

// How to open an engine: which devices it manages.
struct EngineOptions {
  // One host-backed stand-in device per entry (host:0, host:1, …), its
  // capacity in bytes; each at least one host_granularity page. Empty: none
  // (only CUDA devices and cpu).
  std::vector<std::uint64_t> host_device_sizes;
  std::uint64_t host_granularity = 2 * 1024 * 1024;
  // Every CUDA GPU found, when libmemd was built with CUDA; ignored otherwise.
  // No driver or no GPU is not an error: there are just no cuda:N devices.
  bool enable_cuda = true;
  // Who this program's allocations belong to (the owner rule of
  // memd/owner_name.hpp). The engine's user acts as the admin of its engine.
  std::string owner = "libmemd";
  // Directories models may be loaded from; none: every model load is refused
  // (permission_denied), as for `memd serve` without --model-root.
  std::vector<std::string> model_roots;
  // The models' RAM tier (pinned host memory); 0: none.
  std::uint64_t model_ram_cache_bytes = 0;
  // Client mode (one budget across processes): a running daemon's socket
  // (`memd serve --socket PATH`). The virtual memory of every GPU-like
  // device is then leased from that daemon, unit by unit, under the owner
  // `lease_token` names (or `owner`, where the daemon has no tokens): it
  // counts against that owner's quota and the device's limits there, shows
  // in its status, and goes back as the pools shrink; a process that exits
  // holds nothing. Opening fails (unavailable) when the daemon cannot be
  // reached. Empty: the engine's memory is its own.
  std::string lease_socket;
  std::string lease_token;
};

// What to allocate. device none: the engine's default device for the memory
// type (the first GPU, else host:0, for VRAM; cpu for RAM and SharedMemory).
struct AllocateOptions {
  std::uint64_t size_bytes = 0;
  MemoryType memory_type = MemoryType::VRAM;
  std::optional<DeviceId> device;
  std::string name;  // a label shown in listings
  MemoryPriority priority = MemoryPriority::Normal;
  MemoryAllocationType allocation_type = MemoryAllocationType::Buffer;
  // Never moved by defragmentation (its pointer stays valid for raw access
  // however long it lives).
  bool pinned = false;
};

// One allocation made through the engine. `pointer` is where its bytes are:
// a host address for host:N and cpu memory, a device address for cuda:N. It
// stays valid until the allocation is freed, unless defragmentation moves an
// unpinned allocation (then allocation() tells the new one); ask for
// `pinned` when raw pointers are kept.
struct AllocationInfo {
  AllocationId id;
  DeviceId device;
  MemoryType memory_type = MemoryType::Unknown;
  MemoryAllocationStatus status = MemoryAllocationStatus::Unknown;
  std::uint64_t size_bytes = 0;
  void* pointer = nullptr;
  std::string owner;
  std::string name;
  bool pinned = false;
};

// One device's memory: the device's own numbers and memd's use of it.
struct DeviceStats {
  DeviceId device;
  std::string name;
  bool simulated = false;          // host:N
  std::uint64_t total_bytes = 0;   // capacity
  std::uint64_t free_bytes = 0;    // as the device reports it
  std::uint64_t reserved_bytes = 0;   // held by memd's pools (its footprint)
  std::uint64_t allocated_bytes = 0;  // handed out to memd's users
  std::uint64_t allocations = 0;      // live allocations
  // Each of the device's pools' peak of allocated bytes, summed: the peaks
  // may fall at different times, so this bounds the device's peak from above.
  std::uint64_t peak_allocated_bytes = 0;
  double fragmentation = 0;           // 0..1, from the last sample
  MemoryHealthStatus health = MemoryHealthStatus::Unknown;
};

// One pool's live counters (a device and memory type), read at once from
// the allocator, not from the monitor's last sample: what an in-process
// allocator (the PyTorch shim) reports as its reserved and allocated bytes.
struct PoolUsage {
  std::uint64_t allocated_bytes = 0;       // handed out now
  std::uint64_t reserved_bytes = 0;        // held from the device now (footprint)
  std::uint64_t peak_allocated_bytes = 0;  // since the pool was made
  std::uint64_t peak_reserved_bytes = 0;
  std::uint64_t live_allocations = 0;
  // Waits for the pool's home stream before memory it freed served another
  // stream, the host or the device (alloc/stream_reuse.hpp).
  std::uint64_t stream_syncs = 0;
};

// A stream of a GPU-like device for stream-ordered allocation. handle 0 is
// the device's default stream; others come from Engine::create_stream.
struct StreamHandle {
  DeviceId device;
  std::uint64_t handle = 0;
  friend bool operator==(const StreamHandle&, const StreamHandle&) = default;
};

// A named region of one device (Engine::create_region): a pool of its own
// that can sleep and wake. id is the engine's; 0 is never one.
struct RegionHandle {
  DeviceId device;
  std::uint64_t id = 0;
  friend bool operator==(const RegionHandle&, const RegionHandle&) = default;
};

// A copy between two allocations, done.
struct CopyInfo {
  std::uint64_t bytes = 0;
  std::chrono::nanoseconds elapsed{0};
};

// A model load: `path` is a safetensors file (or a folder of them) under one
// of EngineOptions::model_roots.
struct ModelLoadOptions {
  std::string name;
  std::string path;
  std::optional<DeviceId> device;  // none: the device that needs the least eviction
  MemoryPriority priority = MemoryPriority::Normal;
  std::chrono::seconds keep_alive{0};
  bool pinned = false;             // never evicted
};

enum class ModelLoadState : std::uint8_t { Loading, Loaded, Failed };
// VRAM: every component on its device; RAM: in memd's RAM cache; Disk: only
// in its files.
enum class ModelResidency : std::uint8_t { VRAM, RAM, Disk };

struct ModelInfo {
  std::string name;
  std::string path;
  ModelLoadState state = ModelLoadState::Loading;
  ModelResidency residency = ModelResidency::Disk;
  std::optional<DeviceId> device;
  std::uint64_t bytes = 0;       // every component
  std::uint64_t vram_bytes = 0;  // of those, on the device
  std::size_t tensors = 0;
  std::size_t components = 0;
  std::string error;             // Failed: why
};

}  // namespace memd
