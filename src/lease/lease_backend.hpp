// lease/lease_backend.hpp — a Backend whose virtual memory is leased from
// memd's daemon: client mode (DESIGN.md, "One budget across processes").
//
// It wraps the process's own backend (CUDA, or host in tests) and forwards
// every call to it but three:
//   * map(): each unit is a lease — memory of its own the daemon allocates
//     under this process's owner, quota and the device's limits, sent over
//     the socket as a descriptor (lease_client.hpp) — mapped with the inner
//     backend's map_imported(). A refusal (quota_exceeded, out_of_memory)
//     is map()'s error, so the pool above fails the allocation as it would
//     on a full device.
//   * unmap() and release(): the inner backend drops the mapping first, then
//     the lease goes back to the daemon; the pool's budget (alloc/footprint)
//     decides when, so the lease grows and shrinks with the pool.
//   * remap(): unavailable — leased units do not move; defragmentation copies.
// Everything else (streams, copies, segments, shareable memory) is the inner
// backend's, unleased: pinned host memory is not the daemon's to count.
//
// The daemon ends every lease when the connection closes, so a process that
// dies holds nothing. The GPU is matched by UUID, so a worker whose
// CUDA_VISIBLE_DEVICES numbers GPUs differently still leases on the right one.
//
// Thread safety: as Backend; the lease book has its own mutex, and the
// client serialises calls on its connection.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "backends/backend.hpp"
#include "lease/lease_client.hpp"

namespace memd {

class LeaseBackend final : public Backend {
 public:
  LeaseBackend(std::unique_ptr<Backend> inner, std::shared_ptr<LeaseClient> client);
  ~LeaseBackend() override;

  // Bytes and leases held from the daemon now.
  std::uint64_t leased_bytes() const;
  std::size_t leases() const;

  std::string_view name() const noexcept override { return inner_->name(); }
  std::vector<DeviceInfo> devices() const override { return inner_->devices(); }
  Result<MemoryInfo> memory_info(DeviceId device) override { return inner_->memory_info(device); }
  DeviceHealthInfo health_info(DeviceId device) override { return inner_->health_info(device); }
  bool can_access_peer(DeviceId a, DeviceId b) const override { return inner_->can_access_peer(a, b); }

  Result<VirtualRange> reserve(DeviceId device, std::uint64_t bytes) override { return inner_->reserve(device, bytes); }
  Result<void> release(const VirtualRange& range) override;
  Result<void> map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                   std::uint64_t unit_bytes = 0) override;
  Result<void> unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) override;
  Result<void> remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to, std::uint64_t bytes) override;
  Result<void> map_imported(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes, ShareableKind kind,
                            int fd) override {
    return inner_->map_imported(range, offset, bytes, kind, fd);
  }
  std::uint64_t trim() override { return inner_->trim(); }
  void set_handle_cache_limit(DeviceId device, std::uint64_t bytes) override {
    inner_->set_handle_cache_limit(device, bytes);
  }
  std::uint64_t physical_bytes(DeviceId device) const override { return inner_->physical_bytes(device); }

  Result<Segment> allocate(DeviceId device, MemoryType type, std::uint64_t bytes) override {
    return inner_->allocate(device, type, bytes);
  }
  Result<void> free(const Segment& segment) override { return inner_->free(segment); }
  Result<ShareableSegment> allocate_shareable(DeviceId device, MemoryType type, std::uint64_t bytes) override {
    return inner_->allocate_shareable(device, type, bytes);
  }
  Result<void> free_shareable(const ShareableSegment& shareable) override { return inner_->free_shareable(shareable); }
  Result<int> export_fd(const ShareableSegment& shareable) override { return inner_->export_fd(shareable); }

  Result<Stream> create_stream(DeviceId device) override { return inner_->create_stream(device); }
  Result<Stream> adopt_stream(DeviceId device, void* native) override { return inner_->adopt_stream(device, native); }
  Result<void> destroy_stream(const Stream& stream) override { return inner_->destroy_stream(stream); }
  Result<void> copy(void* dst, const void* src, std::uint64_t bytes, const Stream& stream) override {
    return inner_->copy(dst, src, bytes, stream);
  }
  Result<void> fill(void* dst, std::uint8_t value, std::uint64_t bytes, const Stream& stream) override {
    return inner_->fill(dst, value, bytes, stream);
  }
  Result<Event> record(const Stream& stream) override { return inner_->record(stream); }
  Result<bool> query(const Event& event) override { return inner_->query(event); }
  Result<void> wait(const Event& event) override { return inner_->wait(event); }
  Result<void> destroy_event(const Event& event) override { return inner_->destroy_event(event); }
  Result<void> synchronize(const Stream& stream) override { return inner_->synchronize(stream); }
  bool capturing(const Stream& stream) override { return inner_->capturing(stream); }

 private:
  struct Lease {
    std::string id;
    std::uint64_t bytes = 0;
  };
  using Key = std::pair<std::uint64_t, std::uint64_t>;  // (range handle, offset)

  // One unit: leased, mapped, booked; nothing held when it fails.
  Result<void> map_unit(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes);
  // Gives back the leases of [offset, +bytes) of the range (already unmapped).
  void give_back(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes);

  std::unique_ptr<Backend> inner_;
  std::shared_ptr<LeaseClient> client_;
  std::map<DeviceId, std::string> uuids_;  // GPUs: leased by UUID
  mutable std::mutex mutex_;
  std::map<Key, Lease> leases_;
  std::uint64_t leased_bytes_ = 0;
};

}  // namespace memd
