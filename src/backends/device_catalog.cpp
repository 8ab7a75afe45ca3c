// Device discovery and routing of (device, memory type) to a backend.
#include "backends/device_catalog.hpp"

#include "backends/host/host_backend.hpp"
#if defined(MEMD_WITH_CUDA)
#include "backends/cuda/cuda_backend.hpp"
#endif

#include <algorithm>

namespace memd {

Result<std::unique_ptr<DeviceCatalog>> DeviceCatalog::discover(const BackendOptions& options) {
  if (options.host_device_sizes.size() > kMaxHostDevices)
    return fail(ErrorCode::invalid_argument, "at most {} host devices, not {}", kMaxHostDevices,
                options.host_device_sizes.size());
  if (options.host_granularity == 0 || (options.host_granularity & (options.host_granularity - 1)) != 0 ||
      options.host_granularity < 4096)
    return fail(ErrorCode::invalid_argument, "host granularity must be a power of two >= 4096");
  // A host:N that cannot hold one page would list a device nothing fits on.
  for (std::size_t i = 0; i < options.host_device_sizes.size(); ++i)
    if (options.host_device_sizes[i] < options.host_granularity)
      return fail(ErrorCode::invalid_argument,
                  "host:{} capacity {} is smaller than one {}-byte page", i,
                  options.host_device_sizes[i], options.host_granularity);
  auto catalog = std::unique_ptr<DeviceCatalog>(new DeviceCatalog());
#if defined(MEMD_WITH_CUDA)
  if (options.enable_cuda) {
    auto cuda = make_cuda_backend();
    if (options.wrap) cuda = options.wrap(std::move(cuda));
    catalog->cuda_ = cuda.get();
    catalog->backends_.push_back(std::move(cuda));
  }
#endif
  std::unique_ptr<Backend> host = make_host_backend(options);
  if (options.wrap) host = options.wrap(std::move(host));
  catalog->host_ = host.get();
  catalog->backends_.push_back(std::move(host));
  // GPUs first, then host:N, then cpu: the order users see in `memd devices`.
  for (const auto& b : catalog->backends_)
    for (auto& d : b->devices()) catalog->devices_.push_back(std::move(d));
  std::stable_sort(catalog->devices_.begin(), catalog->devices_.end(),
                   [](const DeviceInfo& a, const DeviceInfo& b) { return a.id < b.id; });
  // Peers are the catalog's to fill: only it sees devices of both backends.
  for (auto& d : catalog->devices_) {
    if (!d.id.is_gpu_like()) continue;
    for (const auto& other : catalog->devices_)
      if (other.id.is_gpu_like() && other.id != d.id)
        d.peers.push_back({other.id, catalog->peer_access(d.id, other.id)});
  }
  return catalog;
}

Backend* DeviceCatalog::owner_of(DeviceId device) const noexcept {
  switch (device.kind()) {
    case DeviceKind::Cuda: return cuda_;
    case DeviceKind::Host: return host_;
    case DeviceKind::Cpu: return nullptr;
  }
  return nullptr;
}

PeerAccess DeviceCatalog::peer_access(DeviceId a, DeviceId b) const {
  if (a == b) return PeerAccess::Direct;
  Backend* owner = owner_of(a);
  if (owner == nullptr || owner != owner_of(b)) return PeerAccess::Staged;
  return owner->can_access_peer(a, b) && owner->can_access_peer(b, a) ? PeerAccess::Direct
                                                                        : PeerAccess::Staged;
}

Result<DeviceInfo> DeviceCatalog::info(DeviceId device) const {
  for (const auto& d : devices_)
    if (d.id == device) return d;
  return fail(ErrorCode::not_found, "no device {}", device.to_string());
}

bool DeviceCatalog::has_cuda_devices() const noexcept {
  return std::any_of(devices_.begin(), devices_.end(),
                     [](const DeviceInfo& d) { return d.id.kind() == DeviceKind::Cuda; });
}

Result<Backend*> DeviceCatalog::backend_for(DeviceId device, MemoryType type) const {
  auto found = info(device);
  if (!found) return fail(found.error());
  const auto& types = found->memory_types;
  if (std::find(types.begin(), types.end(), type) == types.end())
    // The device exists but has no pool of this type: like a device that is
    // not there, a fact of this daemon's devices, not of the request's shape.
    return fail(ErrorCode::not_found, "device {} does not provide {} memory",
                device.to_string(), to_string(type));
  switch (device.kind()) {
    case DeviceKind::Cuda: return cuda_;
    case DeviceKind::Host: return host_;
    case DeviceKind::Cpu:
      // Real pinned and managed memory need the CUDA runtime; plain RAM never does.
      if (type != MemoryType::RAM && cuda_ != nullptr && has_cuda_devices()) return cuda_;
      return host_;
  }
  return fail(ErrorCode::internal, "unroutable device");
}

DeviceId DeviceCatalog::default_device() const noexcept {
  for (const auto& d : devices_)
    if (d.id.kind() == DeviceKind::Cuda) return d.id;
  for (const auto& d : devices_)
    if (d.id.kind() == DeviceKind::Host) return d.id;
  return DeviceId::cpu();
}

}  // namespace memd
