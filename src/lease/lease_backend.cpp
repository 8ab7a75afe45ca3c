// LeaseBackend: units leased from the daemon; see lease_backend.hpp.
#include "lease/lease_backend.hpp"

#include <unistd.h>

#include <vector>

#include <spdlog/spdlog.h>

namespace memd {

LeaseBackend::LeaseBackend(std::unique_ptr<Backend> inner, std::shared_ptr<LeaseClient> client)
    : ForwardingBackend(std::move(inner)), client_(std::move(client)) {
  for (const auto& d : inner_->devices())
    if (!d.uuid.empty()) uuids_.emplace(d.id, d.uuid);
}

LeaseBackend::~LeaseBackend() = default;  // the connection's close ends every lease

std::uint64_t LeaseBackend::leased_bytes() const {
  std::lock_guard lock(mutex_);
  return leased_bytes_;
}

std::size_t LeaseBackend::leases() const {
  std::lock_guard lock(mutex_);
  return leases_.size();
}

Result<void> LeaseBackend::map_unit(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) {
  const auto uuid = uuids_.find(range.device);
  auto grant = client_->lease(bytes, uuid == uuids_.end() ? std::string() : uuid->second, range.device.to_string());
  if (!grant) return fail(grant.error());
  auto undo = [&](const Error& why) -> Result<void> {
    ::close(grant->fd);
    (void)client_->release(grant->lease_id);
    return fail(why);
  };
  if (uuid != uuids_.end() && grant->gpu_uuid != uuid->second)
    return undo(Error{ErrorCode::backend_error,
                      fmt::format("memd leased memory on GPU {} where {} ({}) was asked", grant->gpu_uuid,
                                  range.device.to_string(), uuid->second)});
  if (grant->map_size != bytes)
    return undo(Error{ErrorCode::backend_error,
                      fmt::format("memd leased {} bytes where a unit of {} was asked", grant->map_size, bytes)});
  if (auto mapped = inner_->map_imported(range, offset, bytes, grant->kind, grant->fd); !mapped)
    return undo(mapped.error());
  ::close(grant->fd);
  std::lock_guard lock(mutex_);
  leases_.emplace(Key{range.handle, offset}, Lease{grant->lease_id, bytes});
  leased_bytes_ += bytes;
  return {};
}

Result<void> LeaseBackend::map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                               std::uint64_t unit_bytes) {
  // The inner backend checks the range, alignment and free pages when it
  // maps each unit (map_imported), after that unit's lease came.
  if (bytes == 0) return fail(ErrorCode::invalid_argument, "map of 0 bytes");
  std::vector<std::pair<std::uint64_t, std::uint64_t>> done;
  Result<void> status;
  for_each_map_unit(bytes, unit_bytes, [&](std::uint64_t at, std::uint64_t n) {
    if (!status) return;
    status = map_unit(range, offset + at, n);
    if (status) done.emplace_back(offset + at, n);
  });
  if (!status) {
    // All or nothing, as map() promises.
    for (const auto& [at, n] : done) {
      (void)inner_->unmap(range, at, n);
      give_back(range, at, n);
    }
    return status;
  }
  return {};
}

void LeaseBackend::give_back(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) {
  std::vector<std::string> ids;
  {
    std::lock_guard lock(mutex_);
    auto it = leases_.lower_bound(Key{range.handle, offset});
    while (it != leases_.end() && it->first.first == range.handle && it->first.second < offset + bytes) {
      ids.push_back(std::move(it->second.id));
      leased_bytes_ -= it->second.bytes;
      it = leases_.erase(it);
    }
  }
  for (const auto& id : ids)
    if (auto ok = client_->release(id); !ok)
      // The mapping is gone already; the lease ends with the connection.
      spdlog::warn("lease {}: could not give it back to memd: {}", id, ok.error().message);
}

Result<void> LeaseBackend::unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) {
  if (auto ok = inner_->unmap(range, offset, bytes); !ok) return ok;
  give_back(range, offset, bytes);
  return {};
}

Result<void> LeaseBackend::remap(const VirtualRange& range, std::uint64_t, std::uint64_t, std::uint64_t) {
  return fail(ErrorCode::unavailable, "leased memory on {} does not move (it is the daemon's); copy instead",
              range.device.to_string());
}

Result<void> LeaseBackend::release(const VirtualRange& range) {
  auto ok = inner_->release(range);
  give_back(range, 0, range.size);
  return ok;
}

}  // namespace memd
