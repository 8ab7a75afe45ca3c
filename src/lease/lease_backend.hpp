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

#include "backends/forwarding_backend.hpp"
#include "lease/lease_client.hpp"

namespace memd {

class LeaseBackend final : public ForwardingBackend {
 public:
  LeaseBackend(std::unique_ptr<Backend> inner, std::shared_ptr<LeaseClient> client);
  ~LeaseBackend() override;

  // Bytes and leases held from the daemon now.
  std::uint64_t leased_bytes() const;
  std::size_t leases() const;

  // Leased: every unit mapped is a lease, released with its mapping.
  Result<void> release(const VirtualRange& range) override;
  Result<void> map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                   std::uint64_t unit_bytes = 0) override;
  Result<void> unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) override;
  Result<void> remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to, std::uint64_t bytes) override;

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

  std::shared_ptr<LeaseClient> client_;
  std::map<DeviceId, std::string> uuids_;  // GPUs: leased by UUID
  mutable std::mutex mutex_;
  std::map<Key, Lease> leases_;
  std::uint64_t leased_bytes_ = 0;
};

}  // namespace memd
