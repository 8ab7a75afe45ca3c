// engine/engine.cpp — memd::Engine (memd/engine.hpp) over MemoryService.
//
// Each method is one call into the service (or, for stream-ordered blocks and
// streams, into the manager's pool and the device's backend, the paths the
// service has no operation for), plus copying the internal record into the
// public struct. The in-process user is its engine's host: Caller::host, the
// admin acting as EngineOptions::owner, as `memd stdio` makes its host.
#include "memd/engine.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "memd/memd.h"
#include "lease/lease_backend.hpp"
#include "service/memory_service.hpp"

namespace memd {

static_assert(MEMD_MAX_HOST_DEVICES == kMaxHostDevices, "memd.h's host device limit is the catalog's");

struct Engine::Impl {
  std::unique_ptr<MemoryService> service;
  Caller caller;
  // The blocks allocate_async handed out and not yet freed. Tracked
  // allocations live in the same pools, so without this free_async of a
  // tracked allocation's pointer would free a block the registry still
  // owns; the pool alone cannot tell the two apart.
  // Each maps to its pool: a device's pool (null: the pool free_async's
  // stream and type name, as before regions) or a region's.
  std::mutex raw_mutex;
  std::unordered_map<void*, DevicePool*> raw_blocks;
  // Regions (create_region): pools of their own, never removed before the
  // engine closes, so a DevicePool* looked up under the lock stays valid
  // after it. Declared after the service: destroyed before it (the pools
  // use its backends).
  struct Region {
    std::string name;
    DeviceId device;
    std::unique_ptr<DevicePool> pool;
  };
  mutable std::mutex regions_mutex;
  std::map<std::uint64_t, Region> regions;
  std::uint64_t next_region = 1;

  Result<DevicePool*> region_pool(const RegionHandle& handle) const {
    std::lock_guard lock(regions_mutex);
    auto it = regions.find(handle.id);
    if (it == regions.end() || it->second.device != handle.device)
      return fail(ErrorCode::not_found, "no region {} on {}", handle.id, handle.device.to_string());
    return it->second.pool.get();
  }
};

namespace {

AllocationInfo info_of(const AllocationRecord& r) {
  AllocationInfo info;
  info.id = r.id;
  info.device = r.device;
  info.memory_type = r.memory_type;
  info.status = r.status;
  info.size_bytes = r.size_bytes;
  info.pointer = reinterpret_cast<void*>(static_cast<std::uintptr_t>(r.address));
  info.owner = r.owner;
  info.name = r.name;
  info.pinned = r.pinned;
  return info;
}

ModelInfo info_of(const ModelStatus& s) {
  ModelInfo info;
  info.name = s.name;
  info.path = s.path;
  switch (s.state) {
    case ModelState::Loading: info.state = ModelLoadState::Loading; break;
    case ModelState::Loaded: info.state = ModelLoadState::Loaded; break;
    case ModelState::Failed: info.state = ModelLoadState::Failed; break;
  }
  switch (s.tier) {
    case ModelTier::VRAM: info.residency = ModelResidency::VRAM; break;
    case ModelTier::RAM: info.residency = ModelResidency::RAM; break;
    case ModelTier::Disk: info.residency = ModelResidency::Disk; break;
  }
  info.device = s.device;
  info.bytes = s.bytes;
  info.vram_bytes = s.vram_bytes;
  info.tensors = s.tensors;
  info.components = s.components.size();
  info.error = s.error;
  return info;
}

// The public slice of a pool's counters.
PoolUsage usage_of(const PoolStats& c) {
  PoolUsage out;
  out.allocated_bytes = c.allocated_bytes;
  out.reserved_bytes = c.reserved_bytes;
  out.peak_allocated_bytes = c.peak_allocated_bytes;
  out.peak_reserved_bytes = c.peak_reserved_bytes;
  out.live_allocations = c.live_allocations;
  out.stream_syncs = c.stream_syncs;
  return out;
}

Result<ModelInfo> model_result(Result<ModelStatus> status) {
  if (!status) return fail(status.error());
  return info_of(*status);
}

}  // namespace

Result<Engine> Engine::open(const EngineOptions& options) {
  if (auto ok = check_owner(options.owner); !ok) return fail(ok.error());
  ServiceOptions service_options;
  service_options.backends.host_device_sizes = options.host_device_sizes;
  service_options.backends.host_granularity = options.host_granularity;
  service_options.backends.enable_cuda = options.enable_cuda;
  if (!options.model_roots.empty()) {
    std::vector<std::filesystem::path> roots(options.model_roots.begin(), options.model_roots.end());
    auto made = ModelRoots::create(std::move(roots));
    if (!made) return fail(ErrorCode::invalid_argument, "model_roots: {}", made.error().message);
    service_options.models.roots = std::move(*made);
  }
  service_options.models.ram_cache_bytes = options.model_ram_cache_bytes;
  // An in-process engine's models move only when its user asks: no usage
  // guesses loading models in the background of someone else's program.
  service_options.models.preload = false;
  if (!options.lease_socket.empty()) {
    LeaseClientOptions lease;
    lease.socket_path = options.lease_socket;
    if (!options.lease_token.empty()) lease.token = options.lease_token;
    else lease.owner = options.owner;
    auto client = LeaseClient::connect(lease);
    if (!client) return fail(client.error());
    std::shared_ptr<LeaseClient> shared = std::move(*client);
    service_options.backends.wrap = [shared](std::unique_ptr<Backend> inner) -> std::unique_ptr<Backend> {
      return std::make_unique<LeaseBackend>(std::move(inner), shared);
    };
  }
  auto service = MemoryService::create(service_options);
  if (!service) return fail(service.error());
  auto impl = std::make_unique<Impl>();
  impl->service = std::move(*service);
  impl->caller = Caller::host(options.owner);
  return Engine(std::move(impl));
}

Engine::Engine(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Engine::Engine(Engine&&) noexcept = default;
Engine& Engine::operator=(Engine&&) noexcept = default;
Engine::~Engine() = default;

std::vector<DeviceInfo> Engine::devices() const { return impl_->service->devices(); }

Result<AllocationInfo> Engine::allocate(const AllocateOptions& options) {
  AllocationRequest request;
  request.size_bytes = options.size_bytes;
  request.memory_type = options.memory_type;
  request.device = options.device;
  request.name = options.name;
  request.priority = options.priority;
  request.allocation_type = options.allocation_type;
  request.pinned = options.pinned;
  auto record = impl_->service->allocate(impl_->caller, request);
  if (!record) return fail(record.error());
  return info_of(*record);
}

Result<void> Engine::free(const AllocationId& id) {
  auto record = impl_->service->deallocate(impl_->caller, id);
  if (!record) return fail(record.error());
  return {};
}

Result<AllocationInfo> Engine::allocation(const AllocationId& id) const {
  auto record = impl_->service->allocation(impl_->caller, id);
  if (!record) return fail(record.error());
  return info_of(*record);
}

Result<void> Engine::write(const AllocationId& id, std::uint64_t offset, std::span<const std::byte> data) {
  return impl_->service->write(impl_->caller, id, offset, data);
}

Result<void> Engine::read(const AllocationId& id, std::uint64_t offset, std::span<std::byte> out) const {
  auto bytes = impl_->service->read(impl_->caller, id, offset, out.size());
  if (!bytes) return fail(bytes.error());
  if (bytes->size() != out.size())
    return fail(ErrorCode::internal, "read {} bytes of allocation {} where {} were asked", bytes->size(),
                id.to_string(), out.size());
  if (!out.empty()) std::memcpy(out.data(), bytes->data(), out.size());
  return {};
}

Result<CopyInfo> Engine::copy(const AllocationId& source, std::uint64_t source_offset,
                              const AllocationId& destination, std::uint64_t destination_offset,
                              std::uint64_t bytes) {
  TransferSpec spec;
  spec.source = source;
  spec.source_offset = source_offset;
  spec.destination = destination;
  spec.destination_offset = destination_offset;
  spec.size = bytes;
  auto done = impl_->service->copy(impl_->caller, spec);
  if (!done) return fail(done.error());
  return CopyInfo{.bytes = done->bytes, .elapsed = done->elapsed};
}

namespace {

// The backend that runs the device's streams: the one serving its VRAM
// (cuda:N, host:N). cpu has no streams.
Result<Backend*> stream_backend(const DeviceCatalog& catalog, DeviceId device) {
  if (!device.is_gpu_like())
    return fail(ErrorCode::invalid_argument, "{} has no streams: streams belong to cuda:N and host:N devices",
                device.to_string());
  return catalog.backend_for(device, MemoryType::VRAM);
}

}  // namespace

Result<StreamHandle> Engine::create_stream(DeviceId device) {
  auto backend = stream_backend(impl_->service->catalog(), device);
  if (!backend) return fail(backend.error());
  auto stream = (*backend)->create_stream(device);
  if (!stream) return fail(stream.error());
  return StreamHandle{stream->device, stream->handle};
}

Result<StreamHandle> Engine::adopt_stream(DeviceId device, void* native_stream) {
  auto backend = stream_backend(impl_->service->catalog(), device);
  if (!backend) return fail(backend.error());
  auto stream = (*backend)->adopt_stream(device, native_stream);
  if (!stream) return fail(stream.error());
  return StreamHandle{stream->device, stream->handle};
}

Result<PoolUsage> Engine::pool_usage(DeviceId device, MemoryType type) const {
  if (!impl_->service->catalog().info(device)) return fail(ErrorCode::not_found, "no device {}", device.to_string());
  const auto counters = impl_->service->manager().device_counters(device);
  if (auto it = counters.pools.find(type); it != counters.pools.end()) return usage_of(it->second);
  return PoolUsage{};
}

Result<void> Engine::destroy_stream(const StreamHandle& stream) {
  auto backend = stream_backend(impl_->service->catalog(), stream.device);
  if (!backend) return fail(backend.error());
  return (*backend)->destroy_stream(Stream{stream.device, stream.handle});
}

Result<void> Engine::synchronize(const StreamHandle& stream) {
  auto backend = stream_backend(impl_->service->catalog(), stream.device);
  if (!backend) return fail(backend.error());
  return (*backend)->synchronize(Stream{stream.device, stream.handle});
}

Result<void*> Engine::allocate_async(std::uint64_t size_bytes, const StreamHandle& stream, MemoryType type) {
  // The service's own request checks, for the path that does not go through it.
  if (size_bytes == 0) return fail(ErrorCode::invalid_argument, "size_bytes must be positive");
  if (size_bytes > kMaxRequestBytes)
    return fail(ErrorCode::out_of_memory, "size_bytes {} exceeds the maximum request of {} bytes", size_bytes,
                kMaxRequestBytes);
  if (auto backend = stream_backend(impl_->service->catalog(), stream.device); !backend)
    return fail(backend.error());
  auto pool = impl_->service->manager().pool(stream.device, type);
  if (!pool) return fail(pool.error());
  auto block = (*pool)->allocate(size_bytes, Stream{stream.device, stream.handle});
  if (!block) return block;
  std::lock_guard lock(impl_->raw_mutex);
  impl_->raw_blocks.emplace(*block, nullptr);
  return block;
}

Result<void> Engine::free_async(void* pointer, const StreamHandle& stream, MemoryType type) {
  if (pointer == nullptr) return fail(ErrorCode::invalid_argument, "free_async of a null pointer");
  if (auto backend = stream_backend(impl_->service->catalog(), stream.device); !backend)
    return fail(backend.error());
  DevicePool* owner = nullptr;
  {
    // Taken out before the pool frees it: once freed, another thread's
    // allocate_async may get the same address and insert it again.
    std::lock_guard lock(impl_->raw_mutex);
    auto it = impl_->raw_blocks.find(pointer);
    if (it == impl_->raw_blocks.end())
      return fail(ErrorCode::invalid_argument,
                  "free_async: {} is not a live block from allocate_async (a double free, or a tracked "
                  "allocation's pointer: free those by id)",
                  pointer);
    owner = it->second;
    impl_->raw_blocks.erase(it);
  }
  auto give_back_to_caller = [&] {
    std::lock_guard lock(impl_->raw_mutex);
    impl_->raw_blocks.emplace(pointer, owner);
  };
  DevicePool* pool = owner;
  if (pool == nullptr) {
    auto device_pool = impl_->service->manager().pool(stream.device, type);
    if (!device_pool) {
      give_back_to_caller();
      return fail(device_pool.error());
    }
    pool = *device_pool;
  } else if (pool->options().device != stream.device) {
    give_back_to_caller();
    return fail(ErrorCode::invalid_argument, "free_async: {} is a block of region '{}' of {}, not of {}'s stream",
                pointer, pool->options().region, pool->options().device.to_string(), stream.device.to_string());
  }
  auto freed = pool->deallocate(pointer, Stream{stream.device, stream.handle});
  // Wrong device or type for the block: it is still the caller's.
  if (!freed) give_back_to_caller();
  return freed;
}

std::uint64_t Engine::trim() {
  std::uint64_t released = impl_->service->manager().trim();
  std::lock_guard lock(impl_->regions_mutex);
  for (auto& [id, r] : impl_->regions)
    if (!r.pool->asleep()) released += r.pool->trim();
  return released;
}

Result<RegionHandle> Engine::create_region(DeviceId device, std::string_view name) {
  if (name.empty() || name.size() > 128)
    return fail(ErrorCode::invalid_argument, "a region name has 1 to 128 bytes, not {}", name.size());
  for (char c : name)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F)
      return fail(ErrorCode::invalid_argument, "a region name has no control characters");
  if (auto backend = stream_backend(impl_->service->catalog(), device); !backend) return fail(backend.error());
  std::lock_guard lock(impl_->regions_mutex);
  for (const auto& [id, r] : impl_->regions)
    if (r.device == device && r.name == name)
      return fail(ErrorCode::conflict, "{} already has a region '{}'", device.to_string(), name);
  auto pool = impl_->service->manager().create_pool(device, MemoryType::VRAM, std::string(name));
  if (!pool) return fail(pool.error());
  const std::uint64_t id = impl_->next_region++;
  impl_->regions.emplace(id, Impl::Region{std::string(name), device, std::move(*pool)});
  return RegionHandle{device, id};
}

Result<void*> Engine::allocate_async(std::uint64_t size_bytes, const StreamHandle& stream,
                                     const RegionHandle& region) {
  if (size_bytes == 0) return fail(ErrorCode::invalid_argument, "size_bytes must be positive");
  if (size_bytes > kMaxRequestBytes)
    return fail(ErrorCode::out_of_memory, "size_bytes {} exceeds the maximum request of {} bytes", size_bytes,
                kMaxRequestBytes);
  auto pool = impl_->region_pool(region);
  if (!pool) return fail(pool.error());
  if (stream.device != region.device)
    return fail(ErrorCode::invalid_argument, "a stream of {} for a region of {}", stream.device.to_string(),
                region.device.to_string());
  auto block = (*pool)->allocate(size_bytes, Stream{stream.device, stream.handle});
  if (!block) return block;
  std::lock_guard lock(impl_->raw_mutex);
  impl_->raw_blocks.emplace(*block, *pool);
  return block;
}

Result<SleepReport> Engine::sleep_region(const RegionHandle& region, bool keep_contents) {
  auto pool = impl_->region_pool(region);
  if (!pool) return fail(pool.error());
  return (*pool)->sleep(keep_contents);
}

Result<WakeReport> Engine::wake_region(const RegionHandle& region) {
  auto pool = impl_->region_pool(region);
  if (!pool) return fail(pool.error());
  return (*pool)->wake();
}

Result<PoolUsage> Engine::region_usage(const RegionHandle& region) const {
  auto pool = impl_->region_pool(region);
  if (!pool) return fail(pool.error());
  return usage_of((*pool)->counters());
}

Result<bool> Engine::region_asleep(const RegionHandle& region) const {
  auto pool = impl_->region_pool(region);
  if (!pool) return fail(pool.error());
  return (*pool)->asleep();
}

Result<std::vector<DeviceStats>> Engine::stats(std::optional<DeviceId> device) const {
  auto report = impl_->service->status(device);
  if (!report) return fail(report.error());
  std::vector<DeviceStats> out;
  out.reserve(report->devices.size());
  for (const DeviceStatus& d : report->devices) {
    DeviceStats s;
    s.device = d.info.id;
    s.name = d.info.name;
    s.simulated = d.info.simulated;
    s.total_bytes = d.total_bytes;
    s.free_bytes = d.free_bytes;
    s.reserved_bytes = d.reserved_bytes;
    s.allocated_bytes = d.allocated_bytes;
    s.allocations = d.allocations;
    for (const auto& [type, pool] : d.pools) s.peak_allocated_bytes += pool.peak_allocated_bytes;
    s.fragmentation = d.fragmentation;
    s.health = d.health;
    out.push_back(std::move(s));
  }
  return out;
}

Result<ModelInfo> Engine::load_model(const ModelLoadOptions& options) {
  ModelLoadRequest request;
  request.name = options.name;
  request.path = options.path;
  request.device = options.device;
  request.priority = static_cast<int>(options.priority);
  request.keep_alive = options.keep_alive;
  request.pinned = options.pinned;
  return model_result(impl_->service->models().load(request));
}

Result<ModelInfo> Engine::wait_model(std::string_view name, std::chrono::milliseconds timeout) {
  return model_result(impl_->service->models().wait(name, timeout));
}

Result<ModelInfo> Engine::model(std::string_view name) const {
  return model_result(impl_->service->models().status(name));
}

std::vector<ModelInfo> Engine::models() const {
  std::vector<ModelInfo> out;
  for (const auto& s : impl_->service->models().status()) out.push_back(info_of(s));
  return out;
}

Result<ModelInfo> Engine::unload_model(std::string_view name) {
  return model_result(impl_->service->models().unload(name));
}

}  // namespace memd
