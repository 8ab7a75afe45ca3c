// CUDA backend: GPUs through the runtime, virtual memory through driver entry
// points, memory figures through NVML.
//
// Locking: mutex_ guards the handle tables (but segments_ and shareables_,
// which lock themselves and count cpu bytes); each GPU has a mutex for its
// handle cache, counters and default stream; each reserved range has a mutex
// that serialises its map/unmap/release. Lock order is range, then GPU, then
// mutex_; no CUDA call that can block on the device (synchronize, event wait)
// runs under mutex_. The tables' locks are leaves: taken under any of these,
// and shareables_ runs only one dup or handle export under its own.
//
// Every entry point calls cudaSetDevice first: the backend is used from many
// threads and the current device is per thread.
#include "backends/cuda/cuda_backend.hpp"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <iterator>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backends/cuda/cuda_error.hpp"
#include "backends/cuda/driver_api.hpp"
#include "backends/cuda/nvml.hpp"
#include "backends/gpu_uuid.hpp"
#include "backends/host/meminfo.hpp"
#include "backends/handle_lookup.hpp"
#include "backends/memfd_mapping.hpp"
#include "backends/page_run.hpp"
#include "backends/segment_table.hpp"
#include "backends/shareable_table.hpp"
#include "backends/unit_map.hpp"
#include "memd/size.hpp"

namespace memd {
namespace {

using cuda::driver_failure;
using cuda::runtime_failure;
using Handle = CUmemGenericAllocationHandle;

struct Gpu {
  int ordinal = 0;
  bool usable = false;  // discovery succeeded; unusable GPUs are not listed
  CUdevice cu_device = 0;
  DeviceInfo info;
  std::uint64_t granularity = 0;  // 0: no virtual memory on this GPU
  CUmemAllocationHandleType handle_types = CU_MEM_HANDLE_TYPE_NONE;

  // A physical allocation kept after unmap() for a later map() of exactly
  // its size.
  struct CachedHandle {
    Handle handle = 0;
    std::uint64_t bytes = 0;
  };

  std::mutex mutex;                 // guards everything below
  std::deque<CachedHandle> cache;   // oldest first
  std::uint64_t cached_bytes = 0;   // sum of cache[i].bytes
  std::uint64_t cache_limit = 0;
  std::uint64_t mapped_bytes = 0;
  std::uint64_t segment_bytes = 0;  // shareable segments included
  cudaStream_t default_stream = nullptr;
};

// What a shareable segment holds besides its Segment: the pinned memfd of cpu
// SharedMemory, or the physical handle of VRAM mapped alone at segment.ptr.
struct SharedPayload {
  MemfdMapping memfd;  // cpu SharedMemory; fd -1 for VRAM
  Handle handle = 0;   // cuda:N VRAM
};

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;

  std::string_view name() const noexcept override { return "cuda"; }
  std::vector<DeviceInfo> devices() const override;
  Result<MemoryInfo> memory_info(DeviceId device) override;
  DeviceHealthInfo health_info(DeviceId device) override;

  Result<VirtualRange> reserve(DeviceId device, std::uint64_t bytes) override;
  Result<void> release(const VirtualRange& range) override;
  Result<void> map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                   std::uint64_t unit_bytes = 0) override;
  Result<void> unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) override;
  Result<void> remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to,
                     std::uint64_t bytes) override;
  std::uint64_t trim() override;
  void set_handle_cache_limit(DeviceId device, std::uint64_t bytes) override;
  std::uint64_t physical_bytes(DeviceId device) const override;
  Result<void> map_imported(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                            ShareableKind kind, int fd) override;

  Result<Segment> allocate(DeviceId device, MemoryType type, std::uint64_t bytes) override;
  Result<void> free(const Segment& segment) override;

  bool can_access_peer(DeviceId a, DeviceId b) const override;
  Result<ShareableSegment> allocate_shareable(DeviceId device, MemoryType type,
                                              std::uint64_t bytes) override;
  Result<void> free_shareable(const ShareableSegment& shareable) override;
  Result<int> export_fd(const ShareableSegment& shareable) override;

  Result<Stream> create_stream(DeviceId device) override;
  Result<Stream> adopt_stream(DeviceId device, void* native) override;
  Result<void> destroy_stream(const Stream& stream) override;
  Result<void> copy(void* dst, const void* src, std::uint64_t bytes, const Stream& stream) override;
  Result<void> fill(void* dst, std::uint8_t value, std::uint64_t bytes, const Stream& stream) override;
  Result<Event> record(const Stream& stream) override;
  Result<bool> query(const Event& event) override;
  Result<void> wait(const Event& event) override;
  Result<void> destroy_event(const Event& event) override;
  Result<void> synchronize(const Stream& stream) override;
  bool capturing(const Stream& stream) override;

 private:
  struct RangeState {
    Gpu* gpu = nullptr;
    DeviceId device;
    CUdeviceptr base = 0;
    std::uint64_t size = 0;
    std::mutex mutex;
    // One unit per map() call: one cuMemCreate'd handle mapped whole.
    UnitMap<Handle> units;
    // The units' handles that came from another process (map_imported):
    // released when unmapped, never cached for a later map().
    std::unordered_set<Handle> imported;
  };
  struct StreamState {
    DeviceId device;
    cudaStream_t stream;
    bool adopted = false;  // made by someone else: forgotten, never destroyed
  };
  struct EventState {
    DeviceId device;
    Gpu* gpu;
    cudaEvent_t event;
  };

  void discover(Gpu& gpu);
  // Fills peer_ and turns CUDA peer access on for every pair that allows it.
  void enable_peer_access();
  // The GPU whose context pinned cpu memory is registered in (cuda:0), or
  // unavailable: pinning needs a CUDA context.
  Result<Gpu*> pinning_gpu(MemoryType type);
  // A memfd of bytes rounded up to pages, mapped MAP_SHARED and pinned with
  // cudaHostRegister (portable: pinned for every GPU's context). cudaHostAlloc
  // would pin too, but registers 1 GiB in 387 ms where this takes 39 ms at
  // the same copy speed (H100, ANCHORS.md), and its memory has no descriptor.
  Result<MemfdMapping> pinned_memfd(std::uint64_t bytes);
  // cudaHostUnregister, then munmap and close; the first failure reported.
  Result<void> unpin_memfd(const MemfdMapping& mapping);
  // Unmaps, frees the address range and releases the handle of a shareable
  // VRAM segment; the first failure reported.
  Result<void> release_shared_vram(Gpu& gpu, const Segment& segment, Handle handle);
  Gpu* gpu_for(DeviceId device) const noexcept;
  Result<Gpu*> require_gpu(DeviceId device) const;
  static Result<void> set_device(const Gpu& gpu);
  CUmemAllocationProp allocation_prop(const Gpu& gpu) const;
  std::uint64_t new_handle();
  Result<std::shared_ptr<RangeState>> find_range(const VirtualRange& range) const;
  // find_range, then check_page_run of [offset, +bytes) at the range's GPU's
  // granularity: map/unmap's checks.
  Result<std::shared_ptr<RangeState>> find_range_run(const VirtualRange& range,
                                                     std::uint64_t offset,
                                                     std::uint64_t bytes) const;
  Result<cudaEvent_t> event_for(const Event& event) const;
  Result<cudaStream_t> stream_for(const Stream& stream, Gpu** gpu);
  // Physical memory of exactly `bytes`: a cached handle of that size, else
  // cuMemCreate (after dropping the cache of other sizes if the device is out
  // of memory).
  Result<Handle> take_handle(Gpu& gpu, std::uint64_t bytes);
  // Back to the cache when it fits under the limit (evicting the oldest
  // entries to make room), else released.
  void give_back(Gpu& gpu, Handle handle, std::uint64_t bytes);
  // Empties the cache down to `limit` bytes, oldest first; returns the bytes freed.
  std::uint64_t shrink_cache(Gpu& gpu, std::uint64_t limit);

  const cuda::DriverApi* driver_ = nullptr;  // null when no GPU was found
  std::vector<std::unique_ptr<Gpu>> gpus_;
  // peer_[a * gpus_.size() + b]: GPU a reaches GPU b's memory directly (CUDA
  // peer access enabled). Written in the constructor only.
  std::vector<bool> peer_;

  mutable std::mutex mutex_;
  std::uint64_t next_handle_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<RangeState>> ranges_;
  SegmentTable segments_;  // cpu segment bytes included
  ShareableTable<SharedPayload> shareables_;  // cpu bytes included; VRAM bytes in Gpu::segment_bytes
  std::unordered_map<std::uint64_t, StreamState> streams_;
  std::unordered_map<std::uint64_t, EventState> events_;
};

CudaBackend::CudaBackend() {
  int count = 0;
  // No driver (cudaErrorInsufficientDriver), no GPU (cudaErrorNoDevice) or any
  // other initialisation failure all mean the same to memd: no CUDA devices.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  if (count <= 0) return;
  driver_ = &cuda::driver_api();
  for (int i = 0; i < count; ++i) {
    auto gpu = std::make_unique<Gpu>();
    gpu->ordinal = i;
    discover(*gpu);
    gpus_.push_back(std::move(gpu));
  }
  enable_peer_access();
}

void CudaBackend::enable_peer_access() {
  const auto n = gpus_.size();
  peer_.assign(n * n, false);
  for (std::size_t a = 0; a < n; ++a) {
    for (std::size_t b = 0; b < n; ++b) {
      if (a == b || !gpus_[a]->usable || !gpus_[b]->usable) continue;
      int can = 0;
      const int from = gpus_[a]->ordinal, to = gpus_[b]->ordinal;
      if (cudaDeviceCanAccessPeer(&can, from, to) != cudaSuccess || can == 0 ||
          cudaSetDevice(from) != cudaSuccess) {
        (void)cudaGetLastError();
        continue;
      }
      // Enabled once for the process: copies between the two then go over
      // the direct link (NVLink or PCIe peer) instead of through host memory.
      auto e = cudaDeviceEnablePeerAccess(to, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) e = cudaSuccess;
      (void)cudaGetLastError();
      // A pair the driver would not enable (a device's peer limit reached)
      // is reported staged, which is what its copies will be.
      peer_[a * n + b] = e == cudaSuccess;
    }
  }
}

void CudaBackend::discover(Gpu& gpu) {
  const int i = gpu.ordinal;
  if (cudaSetDevice(i) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  auto& info = gpu.info;
  info.id = DeviceId::cuda(i);
  info.name = prop.name;
  info.backend = "cuda";
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.uuid = format_gpu_uuid(std::span<const std::uint8_t, 16>(
      reinterpret_cast<const std::uint8_t*>(prop.uuid.bytes), 16));
  info.total_bytes = prop.totalGlobalMem;
  char bus_id[32] = {};
  if (cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, i) == cudaSuccess)
    info.bus_id = bus_id;
  else
    (void)cudaGetLastError();
  std::size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
    info.total_bytes = total_bytes;
    info.free_bytes = free_bytes;
  } else {
    (void)cudaGetLastError();
  }
  info.memory_types = {MemoryType::VRAM, MemoryType::UnifiedMemory};

  if (driver_->vmm_complete() && driver_->device_get(&gpu.cu_device, i) == CUDA_SUCCESS) {
    int vmm = 0;
    int posix_fd = 0;
    driver_->device_get_attribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
                                  gpu.cu_device);
    driver_->device_get_attribute(
        &posix_fd, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, gpu.cu_device);
    // File-descriptor handles let pages be exported to other processes later;
    // where the device cannot make them, private pages still serve memd itself.
    gpu.handle_types = posix_fd != 0 ? CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
                                     : CU_MEM_HANDLE_TYPE_NONE;
    if (vmm != 0) {
      const auto alloc_prop = allocation_prop(gpu);
      std::size_t granularity = 0;
      if (driver_->mem_get_allocation_granularity(&granularity, &alloc_prop,
                                                  CU_MEM_ALLOC_GRANULARITY_RECOMMENDED) ==
              CUDA_SUCCESS &&
          is_power_of_two(granularity))
        gpu.granularity = granularity;
    }
  }
  info.granularity = gpu.granularity;
  info.virtual_memory = gpu.granularity != 0;
  gpu.usable = true;
}

CudaBackend::~CudaBackend() {
  // Best effort, in dependency order: nothing here may abort the process.
  for (auto& [handle, event] : events_) (void)cudaEventDestroy(event.event);
  for (auto& [handle, stream] : streams_) {
    (void)cudaStreamSynchronize(stream.stream);
    (void)cudaStreamDestroy(stream.stream);
  }
  for (auto& gpu : gpus_) {
    if (gpu->default_stream == nullptr) continue;
    (void)cudaSetDevice(gpu->ordinal);
    (void)cudaStreamSynchronize(gpu->default_stream);
    (void)cudaStreamDestroy(gpu->default_stream);
  }
  for (auto& [handle, range] : ranges_) {
    (void)cudaSetDevice(range->gpu->ordinal);
    for (const auto& [offset, unit] : range->units.units()) {
      (void)driver_->mem_unmap(range->base + offset, unit.bytes);
      (void)driver_->mem_release(unit.payload);
    }
    (void)driver_->mem_address_free(range->base, range->size);
  }
  for (const auto& entry : shareables_.take_all()) {
    const auto& segment = entry.shareable.segment;
    if (segment.device.kind() == DeviceKind::Cpu) {
      (void)unpin_memfd(entry.payload.memfd);
    } else if (Gpu* gpu = gpu_for(segment.device)) {
      (void)release_shared_vram(*gpu, segment, entry.payload.handle);
    }
  }
  for (const auto& segment : segments_.take_all()) {
    if (segment.type == MemoryType::SharedMemory) {
      (void)cudaHostUnregister(segment.ptr);
      ::munmap(segment.ptr, segment.size);
    } else {
      (void)cudaFree(segment.ptr);
    }
  }
  for (auto& gpu : gpus_)
    for (const auto& c : gpu->cache) (void)driver_->mem_release(c.handle);
  (void)cudaGetLastError();
}

std::vector<DeviceInfo> CudaBackend::devices() const {
  // `cpu` is deliberately absent: the host backend lists it and the catalog
  // routes its pinned/managed types here.
  std::vector<DeviceInfo> out;
  for (const auto& gpu : gpus_)
    if (gpu->usable) out.push_back(gpu->info);
  return out;
}

Gpu* CudaBackend::gpu_for(DeviceId device) const noexcept {
  if (device.kind() != DeviceKind::Cuda || device.index() < 0 ||
      static_cast<std::size_t>(device.index()) >= gpus_.size())
    return nullptr;
  Gpu* gpu = gpus_[static_cast<std::size_t>(device.index())].get();
  return gpu->usable ? gpu : nullptr;
}

Result<Gpu*> CudaBackend::require_gpu(DeviceId device) const {
  if (Gpu* gpu = gpu_for(device)) return gpu;
  if (device.kind() == DeviceKind::Cpu)
    return fail(ErrorCode::invalid_argument, "the CUDA backend serves cpu only for pinned and "
                                             "managed segments");
  return fail(ErrorCode::not_found, "the CUDA backend has no device {}", device.to_string());
}

std::uint64_t CudaBackend::new_handle() {
  std::lock_guard lock(mutex_);
  return next_handle_++;
}

Result<void> CudaBackend::set_device(const Gpu& gpu) {
  if (auto error = cudaSetDevice(gpu.ordinal); error != cudaSuccess)
    return runtime_failure(error, fmt::format("cudaSetDevice({})", gpu.ordinal));
  return {};
}

CUmemAllocationProp CudaBackend::allocation_prop(const Gpu& gpu) const {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.requestedHandleTypes = gpu.handle_types;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = gpu.cu_device;
  return prop;
}

DeviceHealthInfo CudaBackend::health_info(DeviceId device) {
  if (device.kind() == DeviceKind::Cpu) return {};
  auto gpu = require_gpu(device);
  if (!gpu) return {};
  return cuda::nvml_health((*gpu)->info.bus_id);
}

Result<MemoryInfo> CudaBackend::memory_info(DeviceId device) {
  if (device.kind() == DeviceKind::Cpu) {
    auto mem = read_meminfo();
    if (!mem) return fail(mem.error());
    return MemoryInfo{mem->total_bytes, mem->available_bytes,
                      mem->total_bytes - mem->available_bytes, true};
  }
  auto gpu = require_gpu(device);
  if (!gpu) return fail(gpu.error());
  if (auto nvml = cuda::nvml_memory((*gpu)->info.bus_id))
    return MemoryInfo{nvml->total_bytes, nvml->free_bytes, nvml->total_bytes - nvml->free_bytes,
                      true};
  if (auto ok = set_device(**gpu); !ok) return fail(ok.error());
  std::size_t free_bytes = 0, total_bytes = 0;
  if (auto error = cudaMemGetInfo(&free_bytes, &total_bytes); error != cudaSuccess)
    return runtime_failure(error, fmt::format("cudaMemGetInfo on {}", device.to_string()));
  // cudaMemGetInfo's free figure is device-wide, so other processes show too.
  return MemoryInfo{total_bytes, free_bytes, total_bytes - free_bytes, true};
}

// --- virtual memory ---------------------------------------------------------

Result<VirtualRange> CudaBackend::reserve(DeviceId device, std::uint64_t bytes) {
  auto found = require_gpu(device);
  if (!found) return fail(found.error());
  Gpu& gpu = **found;
  const auto g = gpu.granularity;
  if (g == 0)
    return fail(ErrorCode::invalid_argument, "{} has no CUDA virtual memory support",
                device.to_string());
  if (bytes == 0 || bytes % g != 0)
    return fail(ErrorCode::invalid_argument,
                "reservation of {} bytes is not a non-zero multiple of the granularity {}", bytes, g);
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());
  CUdeviceptr base = 0;
  if (auto r = driver_->mem_address_reserve(&base, bytes, g, 0, 0); r != CUDA_SUCCESS)
    return driver_failure(*driver_, r,
                          fmt::format("cuMemAddressReserve({}) on {}", bytes, device.to_string()));
  auto state = std::make_shared<RangeState>();
  state->gpu = &gpu;
  state->device = device;
  state->base = base;
  state->size = bytes;
  std::lock_guard lock(mutex_);
  const auto handle = next_handle_++;
  ranges_.emplace(handle, std::move(state));
  return VirtualRange{device, static_cast<std::uintptr_t>(base), bytes, handle};
}

Result<std::shared_ptr<CudaBackend::RangeState>> CudaBackend::find_range(
    const VirtualRange& range) const {
  std::lock_guard lock(mutex_);
  auto it = find_range_in(ranges_, range);
  if (!it) return fail(it.error());
  return (*it)->second;
}

Result<std::shared_ptr<CudaBackend::RangeState>> CudaBackend::find_range_run(
    const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) const {
  auto found = find_range(range);
  if (!found) return fail(found.error());
  if (auto run = check_page_run(range, offset, bytes, (*found)->gpu->granularity); !run)
    return fail(run.error());
  return found;
}

Result<Handle> CudaBackend::take_handle(Gpu& gpu, std::uint64_t bytes) {
  {
    std::lock_guard lock(gpu.mutex);
    // Newest first: the most recently unmapped unit is the likeliest match.
    for (auto it = gpu.cache.rbegin(); it != gpu.cache.rend(); ++it) {
      if (it->bytes != bytes) continue;
      const Handle h = it->handle;
      gpu.cached_bytes -= it->bytes;
      gpu.cache.erase(std::next(it).base());
      return h;
    }
  }
  const auto prop = allocation_prop(gpu);
  Handle h = 0;
  auto r = driver_->mem_create(&h, bytes, &prop, 0);
  // Cached handles of other sizes are memd's own memory: never let them be
  // the reason a map fails.
  if (cuda::is_out_of_memory(r) && shrink_cache(gpu, 0) > 0)
    r = driver_->mem_create(&h, bytes, &prop, 0);
  if (r != CUDA_SUCCESS)
    return driver_failure(*driver_, r,
                          fmt::format("cuMemCreate({}) on {}", bytes, gpu.info.id.to_string()));
  return h;
}

void CudaBackend::give_back(Gpu& gpu, Handle handle, std::uint64_t bytes) {
  std::vector<Handle> drop;
  {
    std::lock_guard lock(gpu.mutex);
    if (bytes <= gpu.cache_limit) {
      while (!gpu.cache.empty() && gpu.cached_bytes + bytes > gpu.cache_limit) {
        drop.push_back(gpu.cache.front().handle);
        gpu.cached_bytes -= gpu.cache.front().bytes;
        gpu.cache.pop_front();
      }
      gpu.cache.push_back({handle, bytes});
      gpu.cached_bytes += bytes;
    } else {
      drop.push_back(handle);
    }
  }
  for (auto h : drop) (void)driver_->mem_release(h);
}

std::uint64_t CudaBackend::shrink_cache(Gpu& gpu, std::uint64_t limit) {
  std::vector<Handle> drop;
  std::uint64_t freed = 0;
  {
    std::lock_guard lock(gpu.mutex);
    while (!gpu.cache.empty() && gpu.cached_bytes > limit) {
      drop.push_back(gpu.cache.front().handle);
      freed += gpu.cache.front().bytes;
      gpu.cached_bytes -= gpu.cache.front().bytes;
      gpu.cache.pop_front();
    }
  }
  if (drop.empty()) return 0;
  (void)cudaSetDevice(gpu.ordinal);
  for (auto h : drop) (void)driver_->mem_release(h);
  return freed;
}

Result<void> CudaBackend::map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                              std::uint64_t unit_bytes) {
  auto found = find_range_run(range, offset, bytes);
  if (!found) return fail(found.error());
  auto& r = **found;
  Gpu& gpu = *r.gpu;
  if (auto ok = check_unit_size(unit_bytes, gpu.granularity); !ok) return fail(ok.error());
  std::lock_guard range_lock(r.mutex);
  if (auto free = r.units.check_unmapped(offset, bytes, r.base); !free) return fail(free.error());
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());

  // Each unit: one physical allocation and one cuMemMap (both cheap); then
  // one cuMemSetAccess for the whole run, whose cost is per mapping but
  // saves the fixed part of a call per unit (bench/vmm_calls.cpp).
  struct Mapped {
    std::uint64_t at, bytes;  // within the run
    Handle handle;
  };
  std::vector<Mapped> done;
  auto undo = [&] {
    for (const auto& m : done) {
      (void)driver_->mem_unmap(r.base + offset + m.at, m.bytes);
      give_back(gpu, m.handle, m.bytes);
    }
  };
  Result<void> status;
  for_each_map_unit(bytes, unit_bytes, [&](std::uint64_t at, std::uint64_t n) {
    if (!status) return;
    const CUdeviceptr where = r.base + offset + at;
    auto h = take_handle(gpu, n);
    if (!h) {
      if (h.error().code != ErrorCode::out_of_memory) {
        status = fail(h.error());
        return;
      }
      std::uint64_t held = 0;
      {
        std::lock_guard lock(gpu.mutex);
        held = gpu.mapped_bytes + gpu.cached_bytes + gpu.segment_bytes;
      }
      status = fail(ErrorCode::out_of_memory,
                    "{} out of memory mapping {} bytes (memd holds {} bytes on the device of {}): {}",
                    gpu.info.id.to_string(), bytes, held, gpu.info.total_bytes, h.error().message);
      return;
    }
    if (auto res = driver_->mem_map(where, n, 0, *h, 0); res != CUDA_SUCCESS) {
      give_back(gpu, *h, n);
      status = driver_failure(*driver_, res, fmt::format("cuMemMap({}) at {:#x}", n, where));
      return;
    }
    done.push_back({at, n, *h});
  });
  if (!status) {
    undo();
    return status;
  }
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = gpu.cu_device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (auto res = driver_->mem_set_access(r.base + offset, bytes, &access, 1); res != CUDA_SUCCESS) {
    undo();
    return driver_failure(*driver_, res, fmt::format("cuMemSetAccess({}) at {:#x}", bytes, r.base + offset));
  }
  for (const auto& m : done) r.units.insert(offset + m.at, m.bytes, m.handle);
  std::lock_guard lock(gpu.mutex);
  gpu.mapped_bytes += bytes;
  return {};
}

Result<void> CudaBackend::unmap(const VirtualRange& range, std::uint64_t offset,
                                std::uint64_t bytes) {
  auto found = find_range_run(range, offset, bytes);
  if (!found) return fail(found.error());
  auto& r = **found;
  Gpu& gpu = *r.gpu;
  std::lock_guard range_lock(r.mutex);
  // Whole units only: cuMemUnmap cannot cut through a cuMemMap.
  auto tiles = r.units.tiling(offset, bytes, r.base);
  if (!tiles) return fail(tiles.error());
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());
  // One call for the run: it is a union of whole mappings, which cuMemUnmap
  // accepts.
  if (auto res = driver_->mem_unmap(r.base + offset, bytes); res != CUDA_SUCCESS)
    return driver_failure(*driver_, res,
                          fmt::format("cuMemUnmap({}) at {:#x}", bytes, r.base + offset));
  r.units.erase(offset, bytes);
  {
    std::lock_guard lock(gpu.mutex);
    gpu.mapped_bytes -= std::min(gpu.mapped_bytes, bytes);
  }
  for (const auto& [unit_offset, unit] : *tiles) {
    if (r.imported.erase(unit.payload) != 0) (void)driver_->mem_release(unit.payload);
    else give_back(gpu, unit.payload, unit.bytes);
  }
  return {};
}

// The same physical handles, mapped at the new address, then unmapped at
// the old one: cuMemMap per unit, one cuMemSetAccess for the run, one
// cuMemUnmap for the old run (a union of whole mappings). The handle of each
// unit is the one in our book — what cuMemRetainAllocationHandle on the old
// address would return — so no retain/release pair is needed, and the
// handle's ownership stays with the book, which moves with the mapping.
Result<void> CudaBackend::remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to,
                                std::uint64_t bytes) {
  auto found = find_range_run(range, from, bytes);
  if (!found) return fail(found.error());
  auto& r = **found;
  Gpu& gpu = *r.gpu;
  if (auto run = check_page_run(range, to, bytes, gpu.granularity); !run) return fail(run.error());
  std::lock_guard range_lock(r.mutex);
  auto tiles = r.units.tiling(from, bytes, r.base);
  if (!tiles) return fail(tiles.error());
  for (const auto& [unit_offset, unit] : *tiles)
    if (r.imported.contains(unit.payload))
      return fail(ErrorCode::unavailable, "[{}, +{}) of range {:#x} holds imported memory, which does not move",
                  from, bytes, r.base);
  if (auto free = r.units.check_unmapped(to, bytes, r.base); !free) return fail(free.error());
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());
  std::vector<std::pair<CUdeviceptr, std::uint64_t>> done;
  auto undo = [&] {
    for (const auto& [where, n] : done) (void)driver_->mem_unmap(where, n);
  };
  for (const auto& [unit_offset, unit] : *tiles) {
    const CUdeviceptr where = r.base + to + (unit_offset - from);
    if (auto res = driver_->mem_map(where, unit.bytes, 0, unit.payload, 0); res != CUDA_SUCCESS) {
      undo();
      return driver_failure(*driver_, res, fmt::format("cuMemMap({}) at {:#x} (remap)", unit.bytes, where));
    }
    done.emplace_back(where, unit.bytes);
  }
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = gpu.cu_device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (auto res = driver_->mem_set_access(r.base + to, bytes, &access, 1); res != CUDA_SUCCESS) {
    undo();
    return driver_failure(*driver_, res, fmt::format("cuMemSetAccess({}) at {:#x} (remap)", bytes, r.base + to));
  }
  if (auto res = driver_->mem_unmap(r.base + from, bytes); res != CUDA_SUCCESS) {
    undo();
    return driver_failure(*driver_, res, fmt::format("cuMemUnmap({}) at {:#x} (remap)", bytes, r.base + from));
  }
  r.units.erase(from, bytes);
  for (const auto& [unit_offset, unit] : *tiles) r.units.insert(to + (unit_offset - from), unit.bytes, unit.payload);
  return {};
}

Result<void> CudaBackend::release(const VirtualRange& range) {
  std::shared_ptr<RangeState> state;
  {
    std::lock_guard lock(mutex_);
    auto it = find_range_in(ranges_, range);
    if (!it) return fail(it.error());
    state = (*it)->second;
    ranges_.erase(*it);
  }
  auto& r = *state;
  Gpu& gpu = *r.gpu;
  std::lock_guard range_lock(r.mutex);
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());
  Result<void> result;
  // One cuMemUnmap per maximal run of adjacent units, as unmap() does.
  const auto& units = r.units.units();
  auto it = units.begin();
  while (it != units.end()) {
    const auto run_offset = it->first;
    auto end = it;
    std::uint64_t run_bytes = 0;
    while (end != units.end() && end->first == run_offset + run_bytes) {
      run_bytes += end->second.bytes;
      ++end;
    }
    if (auto res = driver_->mem_unmap(r.base + run_offset, run_bytes); res != CUDA_SUCCESS) {
      if (result)
        result = driver_failure(*driver_, res,
                                fmt::format("cuMemUnmap({}) at {:#x}", run_bytes,
                                            r.base + run_offset));
    }
    for (auto u = it; u != end; ++u) {
      if (r.imported.erase(u->second.payload) != 0) (void)driver_->mem_release(u->second.payload);
      else give_back(gpu, u->second.payload, u->second.bytes);
    }
    {
      std::lock_guard lock(gpu.mutex);
      gpu.mapped_bytes -= std::min(gpu.mapped_bytes, run_bytes);
    }
    it = end;
  }
  r.units.clear();
  if (auto res = driver_->mem_address_free(r.base, r.size); res != CUDA_SUCCESS && result)
    result = driver_failure(*driver_, res, fmt::format("cuMemAddressFree({})", r.size));
  return result;
}

// cuMemImportFromShareableHandle gives this process its own handle of the
// other process's physical memory; it is mapped and opened to this GPU like
// a unit of our own, and released (not cached) when unmapped.
Result<void> CudaBackend::map_imported(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                                       ShareableKind kind, int fd) {
  if (kind != ShareableKind::CudaPosixFd)
    return fail(ErrorCode::invalid_argument, "the CUDA backend maps cuda-posix-fd descriptors, not {}",
                to_string(kind));
  if (fd < 0) return fail(ErrorCode::invalid_argument, "descriptor {} is not open", fd);
  if (driver_->mem_import_from_shareable_handle == nullptr)
    return fail(ErrorCode::unavailable, "this CUDA driver cannot import shareable handles");
  auto found = find_range_run(range, offset, bytes);
  if (!found) return fail(found.error());
  auto& r = **found;
  Gpu& gpu = *r.gpu;
  std::lock_guard range_lock(r.mutex);
  if (auto free = r.units.check_unmapped(offset, bytes, r.base); !free) return fail(free.error());
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());
  Handle h = 0;
  if (auto res = driver_->mem_import_from_shareable_handle(&h, reinterpret_cast<void*>(static_cast<std::intptr_t>(fd)),
                                                           CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
      res != CUDA_SUCCESS)
    return driver_failure(*driver_, res, fmt::format("cuMemImportFromShareableHandle(fd {})", fd));
  const CUdeviceptr where = r.base + offset;
  if (auto res = driver_->mem_map(where, bytes, 0, h, 0); res != CUDA_SUCCESS) {
    (void)driver_->mem_release(h);
    return driver_failure(*driver_, res,
                          fmt::format("cuMemMap({}) at {:#x} of an imported handle (is it {} bytes?)", bytes, where,
                                      bytes));
  }
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = gpu.cu_device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (auto res = driver_->mem_set_access(where, bytes, &access, 1); res != CUDA_SUCCESS) {
    (void)driver_->mem_unmap(where, bytes);
    (void)driver_->mem_release(h);
    return driver_failure(*driver_, res, fmt::format("cuMemSetAccess({}) at {:#x} (imported)", bytes, where));
  }
  r.units.insert(offset, bytes, h);
  r.imported.insert(h);
  std::lock_guard lock(gpu.mutex);
  gpu.mapped_bytes += bytes;
  return {};
}

std::uint64_t CudaBackend::trim() {
  std::uint64_t freed = 0;
  for (auto& gpu : gpus_) freed += shrink_cache(*gpu, 0);
  return freed;
}

void CudaBackend::set_handle_cache_limit(DeviceId device, std::uint64_t bytes) {
  Gpu* gpu = gpu_for(device);
  if (gpu == nullptr) return;
  {
    std::lock_guard lock(gpu->mutex);
    gpu->cache_limit = bytes;
  }
  (void)shrink_cache(*gpu, bytes);
}

std::uint64_t CudaBackend::physical_bytes(DeviceId device) const {
  if (device.kind() == DeviceKind::Cpu) return segments_.cpu_bytes() + shareables_.cpu_bytes();
  Gpu* gpu = gpu_for(device);
  if (gpu == nullptr) return 0;
  std::lock_guard lock(gpu->mutex);
  return gpu->mapped_bytes + gpu->cached_bytes + gpu->segment_bytes;
}

// --- segments ---------------------------------------------------------------

Result<Segment> CudaBackend::allocate(DeviceId device, MemoryType type, std::uint64_t bytes) {
  if (bytes == 0) return fail(ErrorCode::invalid_argument, "cannot allocate 0 bytes");
  if (bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "{} bytes exceeds the largest request", bytes);
  void* ptr = nullptr;
  const auto where = device.to_string();
  if (device.kind() == DeviceKind::Cpu) {
    // Pinned and managed host memory need a CUDA context, hence a GPU.
    auto first = pinning_gpu(type);
    if (!first) return fail(first.error());
    if (type == MemoryType::SharedMemory) {
      auto pinned = pinned_memfd(bytes);
      if (!pinned) return fail(pinned.error());
      // This segment is never exported, so its descriptor is not kept: the
      // mapping holds the memory, and a process has only so many descriptors.
      ::close(pinned->fd);
      ptr = pinned->ptr;
    } else if (type == MemoryType::UnifiedMemory) {
      if (auto e = cudaMallocManaged(&ptr, bytes, cudaMemAttachGlobal); e != cudaSuccess)
        return runtime_failure(e, fmt::format("cudaMallocManaged({}) for cpu", bytes));
    } else {
      return fail(ErrorCode::invalid_argument,
                  "the CUDA backend serves cpu SharedMemory and UnifiedMemory, not {}",
                  to_string(type));
    }
  } else {
    auto found = require_gpu(device);
    if (!found) return fail(found.error());
    Gpu& gpu = **found;
    if (type != MemoryType::VRAM && type != MemoryType::UnifiedMemory)
      return fail(ErrorCode::invalid_argument, "device {} does not provide {} memory", where,
                  to_string(type));
    if (auto ok = set_device(gpu); !ok) return fail(ok.error());
    if (type == MemoryType::VRAM) {
      if (auto e = cudaMalloc(&ptr, bytes); e != cudaSuccess)
        return runtime_failure(e, fmt::format("cudaMalloc({}) on {}", bytes, where));
    } else {
      // Managed memory would oversubscribe silently and fail later at fault
      // time; refusing up front keeps out_of_memory where callers expect it.
      std::size_t free_bytes = 0, total_bytes = 0;
      if (auto e = cudaMemGetInfo(&free_bytes, &total_bytes); e != cudaSuccess)
        return runtime_failure(e, fmt::format("cudaMemGetInfo on {}", where));
      if (bytes > free_bytes)
        return fail(ErrorCode::out_of_memory,
                    "{} out of memory: {} bytes of managed memory requested, {} of {} free", where,
                    bytes, free_bytes, total_bytes);
      if (auto e = cudaMallocManaged(&ptr, bytes, cudaMemAttachGlobal); e != cudaSuccess)
        return runtime_failure(e, fmt::format("cudaMallocManaged({}) on {}", bytes, where));
    }
    std::lock_guard lock(gpu.mutex);
    gpu.segment_bytes += bytes;
  }
  const Segment segment{device, type, ptr, bytes, new_handle()};
  segments_.add(segment);
  return segment;
}

Result<void> CudaBackend::free(const Segment& segment) {
  auto found = segments_.remove(segment);
  if (!found) return fail(found.error());
  const Segment& state = *found;
  Gpu* gpu = state.device.kind() == DeviceKind::Cpu ? gpu_for(DeviceId::cuda(0))
                                                    : gpu_for(state.device);
  if (gpu != nullptr) {
    if (auto ok = set_device(*gpu); !ok) return fail(ok.error());
    if (state.device.kind() == DeviceKind::Cuda) {
      std::lock_guard lock(gpu->mutex);
      gpu->segment_bytes -= std::min(gpu->segment_bytes, state.size);
    }
  }
  if (state.type == MemoryType::SharedMemory)
    // The fd was closed at allocation: the mapping is all that is left.
    return unpin_memfd(MemfdMapping{-1, state.ptr, round_up(state.size, host_page_size())});
  if (auto e = cudaFree(state.ptr); e != cudaSuccess)
    return runtime_failure(e, fmt::format("freeing {} segment {} on {}", to_string(state.type),
                                          state.ptr, state.device.to_string()));
  return {};
}

// --- pinned memfds, peers and shareable segments --------------------------------

Result<Gpu*> CudaBackend::pinning_gpu(MemoryType type) {
  Gpu* first = gpu_for(DeviceId::cuda(0));
  if (first == nullptr)
    return fail(ErrorCode::unavailable, "no CUDA device: cpu {} memory needs one", to_string(type));
  if (auto ok = set_device(*first); !ok) return fail(ok.error());
  return first;
}

Result<MemfdMapping> CudaBackend::pinned_memfd(std::uint64_t bytes) {
  auto mapping = create_memfd_mapping(bytes, "memd-pinned");
  if (!mapping) return fail(mapping.error());
  if (auto e = cudaHostRegister(mapping->ptr, mapping->size, cudaHostRegisterPortable);
      e != cudaSuccess) {
    (void)destroy_memfd_mapping(*mapping);
    return runtime_failure(e, fmt::format("cudaHostRegister({}) for cpu", mapping->size));
  }
  return mapping;
}

Result<void> CudaBackend::unpin_memfd(const MemfdMapping& mapping) {
  const auto e = cudaHostUnregister(mapping.ptr);
  if (e != cudaSuccess) (void)cudaGetLastError();
  // The memory goes back even when unregistering failed: keeping it would
  // only leak it.
  auto destroyed = destroy_memfd_mapping(mapping);
  if (e != cudaSuccess)
    return runtime_failure(e, fmt::format("cudaHostUnregister({})", mapping.ptr));
  return destroyed;
}

bool CudaBackend::can_access_peer(DeviceId a, DeviceId b) const {
  if (a == b || gpu_for(a) == nullptr || gpu_for(b) == nullptr) return false;
  return peer_[static_cast<std::size_t>(a.index()) * gpus_.size() +
               static_cast<std::size_t>(b.index())];
}

Result<ShareableSegment> CudaBackend::allocate_shareable(DeviceId device, MemoryType type,
                                                         std::uint64_t bytes) {
  if (bytes == 0) return fail(ErrorCode::invalid_argument, "cannot allocate 0 bytes");
  if (bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "{} bytes exceeds the largest request", bytes);
  if (device.kind() == DeviceKind::Cpu) {
    if (type != MemoryType::SharedMemory)
      return fail(ErrorCode::invalid_argument,
                  "the CUDA backend shares cpu SharedMemory only, not {}", to_string(type));
    auto first = pinning_gpu(type);
    if (!first) return fail(first.error());
    auto pinned = pinned_memfd(bytes);
    if (!pinned) return fail(pinned.error());
    const ShareableSegment shareable{
        Segment{device, type, pinned->ptr, pinned->size, new_handle()}, ShareableKind::Memfd};
    shareables_.add(shareable, SharedPayload{*pinned, 0});
    return shareable;
  }
  auto found = require_gpu(device);
  if (!found) return fail(found.error());
  Gpu& gpu = **found;
  const auto where = device.to_string();
  if (type != MemoryType::VRAM)
    return fail(ErrorCode::invalid_argument, "device {} shares VRAM only, not {}", where,
                to_string(type));
  if (gpu.granularity == 0 || gpu.handle_types != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR ||
      !driver_->sharing_complete())
    return fail(ErrorCode::unavailable,
                "{} cannot make memory other processes map: it needs CUDA virtual memory with "
                "POSIX file-descriptor handles",
                where);
  const auto g = gpu.granularity;
  const auto size = round_up(bytes, g);
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());

  // Fresh physical memory, never a cached unit: a cached unit still holds
  // bytes of an earlier allocation, perhaps another owner's.
  const auto prop = allocation_prop(gpu);
  Handle handle = 0;
  auto r = driver_->mem_create(&handle, size, &prop, 0);
  if (cuda::is_out_of_memory(r) && shrink_cache(gpu, 0) > 0)
    r = driver_->mem_create(&handle, size, &prop, 0);
  if (r != CUDA_SUCCESS)
    return driver_failure(*driver_, r, fmt::format("cuMemCreate({}) on {} for sharing", size, where));
  CUdeviceptr base = 0;
  if (r = driver_->mem_address_reserve(&base, size, g, 0, 0); r != CUDA_SUCCESS) {
    (void)driver_->mem_release(handle);
    return driver_failure(*driver_, r, fmt::format("cuMemAddressReserve({}) on {}", size, where));
  }
  if (r = driver_->mem_map(base, size, 0, handle, 0); r != CUDA_SUCCESS) {
    (void)driver_->mem_address_free(base, size);
    (void)driver_->mem_release(handle);
    return driver_failure(*driver_, r, fmt::format("cuMemMap({}) at {:#x}", size, base));
  }
  CUmemAccessDesc access{};
  access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  access.location.id = gpu.cu_device;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  Segment segment{device, type, reinterpret_cast<void*>(base), size, 0};
  if (r = driver_->mem_set_access(base, size, &access, 1); r != CUDA_SUCCESS) {
    (void)release_shared_vram(gpu, segment, handle);
    return driver_failure(*driver_, r, fmt::format("cuMemSetAccess({}) at {:#x}", size, base));
  }
  // cuMemCreate promises nothing about the bytes; another process will read
  // them, so they start as zero, as a host memfd's do.
  Gpu* stream_gpu = nullptr;
  auto stream = stream_for(Stream{device, 0}, &stream_gpu);
  cudaError_t e = stream ? cudaMemsetAsync(segment.ptr, 0, size, *stream) : cudaSuccess;
  if (stream && e == cudaSuccess) e = cudaStreamSynchronize(*stream);
  if (!stream || e != cudaSuccess) {
    (void)release_shared_vram(gpu, segment, handle);
    if (!stream) return fail(stream.error());
    return runtime_failure(e, fmt::format("zeroing {} shareable bytes on {}", size, where));
  }
  segment.handle = new_handle();
  {
    std::lock_guard lock(gpu.mutex);
    gpu.segment_bytes += size;
  }
  const ShareableSegment shareable{segment, ShareableKind::CudaPosixFd};
  shareables_.add(shareable, SharedPayload{MemfdMapping{}, handle});
  return shareable;
}

Result<void> CudaBackend::release_shared_vram(Gpu& gpu, const Segment& segment, Handle handle) {
  const auto base = reinterpret_cast<CUdeviceptr>(segment.ptr);
  Result<void> result = set_device(gpu);
  // Each step runs whatever the one before answered: what can be given back is.
  if (auto r = driver_->mem_unmap(base, segment.size); r != CUDA_SUCCESS && result)
    result = driver_failure(*driver_, r, fmt::format("cuMemUnmap({}) at {:#x}", segment.size, base));
  if (auto r = driver_->mem_address_free(base, segment.size); r != CUDA_SUCCESS && result)
    result = driver_failure(*driver_, r, fmt::format("cuMemAddressFree({})", segment.size));
  if (auto r = driver_->mem_release(handle); r != CUDA_SUCCESS && result)
    result = driver_failure(*driver_, r, "cuMemRelease of a shareable unit");
  return result;
}

Result<void> CudaBackend::free_shareable(const ShareableSegment& shareable) {
  auto found = shareables_.remove(shareable);
  if (!found) return fail(found.error());
  const Segment& segment = found->shareable.segment;
  if (segment.device.kind() == DeviceKind::Cpu) {
    if (Gpu* first = gpu_for(DeviceId::cuda(0))) (void)set_device(*first);
    return unpin_memfd(found->payload.memfd);
  }
  Gpu* gpu = gpu_for(segment.device);
  if (gpu == nullptr)
    return fail(ErrorCode::internal, "shareable segment on {}, which has no GPU",
                segment.device.to_string());
  {
    std::lock_guard lock(gpu->mutex);
    gpu->segment_bytes -= std::min(gpu->segment_bytes, segment.size);
  }
  return release_shared_vram(*gpu, segment, found->payload.handle);
}

Result<int> CudaBackend::export_fd(const ShareableSegment& shareable) {
  return shareables_.with(shareable, [this](const auto& entry) -> Result<int> {
    if (entry.shareable.kind == ShareableKind::Memfd) return duplicate_memfd(entry.payload.memfd.fd);
    int fd = -1;
    if (auto r = driver_->mem_export_to_shareable_handle(
            &fd, entry.payload.handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        r != CUDA_SUCCESS)
      return driver_failure(*driver_, r,
                            fmt::format("cuMemExportToShareableHandle on {}",
                                        entry.shareable.segment.device.to_string()));
    // Close-on-exec like a memfd export: the descriptor is for the process
    // memd sends it to, never for one memd starts.
    (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
  });
}

// --- streams and events -----------------------------------------------------

Result<Stream> CudaBackend::create_stream(DeviceId device) {
  auto found = require_gpu(device);
  if (!found) return fail(found.error());
  if (auto ok = set_device(**found); !ok) return fail(ok.error());
  cudaStream_t stream = nullptr;
  // Non-blocking: memd's copies must not serialise against the legacy
  // default stream of whatever else runs in the process.
  if (auto e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking); e != cudaSuccess)
    return runtime_failure(e, fmt::format("cudaStreamCreateWithFlags on {}", device.to_string()));
  std::lock_guard lock(mutex_);
  const auto handle = next_handle_++;
  streams_.emplace(handle, StreamState{device, stream});
  return Stream{device, handle};
}

Result<Stream> CudaBackend::adopt_stream(DeviceId device, void* native) {
  auto found = require_gpu(device);
  if (!found) return fail(found.error());
  std::lock_guard lock(mutex_);
  const auto handle = next_handle_++;
  // cudaStream_t is the driver's CUstream: valid across the runtimes of one
  // process (PyTorch's and the one linked here), the legacy default stream
  // (null) included.
  streams_.emplace(handle, StreamState{device, static_cast<cudaStream_t>(native), true});
  return Stream{device, handle};
}

Result<void> CudaBackend::destroy_stream(const Stream& stream) {
  if (stream.handle == 0)
    return fail(ErrorCode::invalid_argument, "the default stream of {} cannot be destroyed",
                stream.device.to_string());
  StreamState state;
  {
    std::lock_guard lock(mutex_);
    auto it = find_stream_in(streams_, stream);
    if (!it) return fail(it.error());
    state = (*it)->second;
    streams_.erase(*it);
  }
  if (state.adopted) return {};  // its maker destroys it
  Gpu* gpu = gpu_for(state.device);
  if (gpu != nullptr)
    if (auto ok = set_device(*gpu); !ok) return fail(ok.error());
  // Drain first so destroy means the same on every backend: queued work done.
  const auto synced = cudaStreamSynchronize(state.stream);
  const auto destroyed = cudaStreamDestroy(state.stream);
  if (synced != cudaSuccess) return runtime_failure(synced, "cudaStreamSynchronize");
  if (destroyed != cudaSuccess) return runtime_failure(destroyed, "cudaStreamDestroy");
  return {};
}

Result<cudaStream_t> CudaBackend::stream_for(const Stream& stream, Gpu** gpu_out) {
  auto found = require_gpu(stream.device);
  if (!found) return fail(found.error());
  Gpu& gpu = **found;
  *gpu_out = &gpu;
  if (auto ok = set_device(gpu); !ok) return fail(ok.error());
  if (stream.handle == 0) {
    std::lock_guard lock(gpu.mutex);
    if (gpu.default_stream == nullptr) {
      // A stream of our own rather than the legacy default stream, which
      // would synchronise with every other user of the device.
      if (auto e = cudaStreamCreateWithFlags(&gpu.default_stream, cudaStreamNonBlocking);
          e != cudaSuccess) {
        gpu.default_stream = nullptr;
        return runtime_failure(e, "cudaStreamCreateWithFlags (default stream)");
      }
    }
    return gpu.default_stream;
  }
  std::lock_guard lock(mutex_);
  auto it = find_stream_in(streams_, stream);
  if (!it) return fail(it.error());
  return (*it)->second.stream;
}

Result<void> CudaBackend::copy(void* dst, const void* src, std::uint64_t bytes,
                               const Stream& stream) {
  Gpu* gpu = nullptr;
  auto s = stream_for(stream, &gpu);
  if (!s) return fail(s.error());
  if (bytes == 0) return {};
  if (dst == nullptr || src == nullptr)
    return fail(ErrorCode::invalid_argument, "copy of {} bytes with a null pointer", bytes);
  if (auto e = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, *s); e != cudaSuccess)
    return runtime_failure(e, fmt::format("cudaMemcpyAsync({}) on {}", bytes,
                                          stream.device.to_string()));
  return {};
}

Result<void> CudaBackend::fill(void* dst, std::uint8_t value, std::uint64_t bytes,
                               const Stream& stream) {
  Gpu* gpu = nullptr;
  auto s = stream_for(stream, &gpu);
  if (!s) return fail(s.error());
  if (bytes == 0) return {};
  if (dst == nullptr)
    return fail(ErrorCode::invalid_argument, "fill of {} bytes at a null pointer", bytes);
  if (auto e = cudaMemsetAsync(dst, value, bytes, *s); e != cudaSuccess)
    return runtime_failure(e, fmt::format("cudaMemsetAsync({}) on {}", bytes,
                                          stream.device.to_string()));
  return {};
}

Result<Event> CudaBackend::record(const Stream& stream) {
  Gpu* gpu = nullptr;
  auto s = stream_for(stream, &gpu);
  if (!s) return fail(s.error());
  cudaEvent_t event = nullptr;
  if (auto e = cudaEventCreateWithFlags(&event, cudaEventDisableTiming); e != cudaSuccess)
    return runtime_failure(e, "cudaEventCreateWithFlags");
  if (auto e = cudaEventRecord(event, *s); e != cudaSuccess) {
    (void)cudaEventDestroy(event);
    return runtime_failure(e, "cudaEventRecord");
  }
  std::lock_guard lock(mutex_);
  const auto handle = next_handle_++;
  events_.emplace(handle, EventState{stream.device, gpu, event});
  return Event{stream.device, handle};
}

Result<cudaEvent_t> CudaBackend::event_for(const Event& event) const {
  std::lock_guard lock(mutex_);
  auto it = find_event_in(events_, event);
  if (!it) return fail(it.error());
  return (*it)->second.event;
}

Result<bool> CudaBackend::query(const Event& event) {
  auto handle = event_for(event);
  if (!handle) return fail(handle.error());
  const auto e = cudaEventQuery(*handle);
  if (e == cudaSuccess) return true;
  if (e == cudaErrorNotReady) return false;
  return runtime_failure(e, "cudaEventQuery");
}

Result<void> CudaBackend::wait(const Event& event) {
  auto handle = event_for(event);
  if (!handle) return fail(handle.error());
  if (auto e = cudaEventSynchronize(*handle); e != cudaSuccess)
    return runtime_failure(e, "cudaEventSynchronize");
  return {};
}

Result<void> CudaBackend::destroy_event(const Event& event) {
  cudaEvent_t handle = nullptr;
  {
    std::lock_guard lock(mutex_);
    auto it = find_event_in(events_, event);
    if (!it) return fail(it.error());
    handle = (*it)->second.event;
    events_.erase(*it);
  }
  if (auto e = cudaEventDestroy(handle); e != cudaSuccess)
    return runtime_failure(e, "cudaEventDestroy");
  return {};
}

Result<void> CudaBackend::synchronize(const Stream& stream) {
  Gpu* gpu = nullptr;
  auto s = stream_for(stream, &gpu);
  if (!s) return fail(s.error());
  if (auto e = cudaStreamSynchronize(*s); e != cudaSuccess)
    return runtime_failure(e, fmt::format("cudaStreamSynchronize on {}", stream.device.to_string()));
  return {};
}

bool CudaBackend::capturing(const Stream& stream) {
  Gpu* gpu = nullptr;
  auto s = stream_for(stream, &gpu);
  if (!s) return false;
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(*s, &status) != cudaSuccess) return false;
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace memd
