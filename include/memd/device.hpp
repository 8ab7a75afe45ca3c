// memd/device.hpp — how devices are named and described.
//
// Devices are named `cuda:N` (GPU N), `host:N` (a host-backed device that
// stands in for a GPU: its device memory answers to MemoryType::VRAM and it
// reports simulated = true) and `cpu` (system RAM and pinned host memory).
// Each GPU-like device also lists how it reaches every other one (its peers):
// directly (one address space, or CUDA peer access both ways) or staged
// through host memory.
//
// Thread safety: values.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "memd/error.hpp"
#include "memd/memory_types.hpp"

namespace memd {

enum class DeviceKind : std::uint8_t { Cuda, Host, Cpu };

std::string_view to_string(DeviceKind kind) noexcept;

class DeviceId {
 public:
  DeviceId() = default;  // cpu
  DeviceId(DeviceKind kind, int index) : kind_(kind), index_(kind == DeviceKind::Cpu ? 0 : index) {}

  static DeviceId cuda(int index) { return {DeviceKind::Cuda, index}; }
  static DeviceId host(int index) { return {DeviceKind::Host, index}; }
  static DeviceId cpu() { return {DeviceKind::Cpu, 0}; }

  // "cuda:0", "host:1", "cpu". Indices are decimal, 0..1023, no sign or spaces.
  static Result<DeviceId> parse(std::string_view text);
  std::string to_string() const;

  DeviceKind kind() const noexcept { return kind_; }
  int index() const noexcept { return index_; }
  // True for devices whose "device memory" is VRAM (cuda:N and host:N).
  bool is_gpu_like() const noexcept { return kind_ != DeviceKind::Cpu; }

  friend bool operator==(const DeviceId&, const DeviceId&) = default;
  friend auto operator<=>(const DeviceId&, const DeviceId&) = default;

 private:
  DeviceKind kind_ = DeviceKind::Cpu;
  int index_ = 0;
};

// How one GPU-like device reaches another's memory. Direct: loads, stores and
// copies go straight between them (host:N devices share one address space;
// two GPUs with CUDA peer access both ways). Staged: bytes pass through host
// memory on the way (a GPU and a host:N device; GPUs without peer access).
enum class PeerAccess : std::uint8_t { Direct, Staged };

// "direct" or "staged": the wire and CLI spelling.
std::string_view to_string(PeerAccess access) noexcept;

struct PeerLink {
  DeviceId device;  // the other device
  PeerAccess access = PeerAccess::Staged;
  friend bool operator==(const PeerLink&, const PeerLink&) = default;
};

// What a backend knows of one device. Byte counts are the device's, not memd's:
// memd's own use is in the pool statistics.
struct DeviceInfo {
  DeviceId id;
  std::string name;               // "NVIDIA H200", "host-backed device", "system RAM"
  std::string backend;            // "cuda" or "host"
  bool simulated = false;         // true for host:N
  std::uint64_t total_bytes = 0;  // capacity
  std::uint64_t free_bytes = 0;   // free as the driver/OS sees it at discovery
  std::uint64_t granularity = 0;  // physical mapping granularity (0: no virtual memory)
  bool virtual_memory = false;    // reserve/map/unmap supported
  std::vector<MemoryType> memory_types;  // what can be allocated on it
  int compute_major = 0, compute_minor = 0;  // CUDA compute capability; 0 elsewhere
  std::string bus_id;             // PCI bus id for GPUs
  std::string uuid;               // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (as nvidia-smi); empty elsewhere
  // Every other GPU-like device and how this one reaches it, in device order;
  // empty for cpu. Filled by DeviceCatalog::discover, not by the backends.
  std::vector<PeerLink> peers;
};

}  // namespace memd
