// backends/forwarding_backend.hpp — a Backend that wraps another and passes
// every call through to it.
//
// The base of the backends that change only a few calls of the one they wrap:
// LeaseBackend (map/unmap/release lease from the daemon), FaultBackend (fails
// the Nth call of a kind), tests' gated or counting backends. Each overrides
// what it changes and inherits the rest, so a call added to Backend reaches
// the wrapped backend everywhere by default rather than silently falling to
// Backend's own default (which would, for example, make a wrapped CUDA
// backend report no peers).
//
// Thread safety: as the wrapped backend.
#pragma once

#include <memory>
#include <utility>

#include "backends/backend.hpp"

namespace memd {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  Backend& inner() noexcept { return *inner_; }
  const Backend& inner() const noexcept { return *inner_; }

  std::string_view name() const noexcept override { return inner_->name(); }
  std::vector<DeviceInfo> devices() const override { return inner_->devices(); }
  Result<MemoryInfo> memory_info(DeviceId device) override { return inner_->memory_info(device); }
  DeviceHealthInfo health_info(DeviceId device) override { return inner_->health_info(device); }
  bool can_access_peer(DeviceId a, DeviceId b) const override { return inner_->can_access_peer(a, b); }

  Result<VirtualRange> reserve(DeviceId device, std::uint64_t bytes) override { return inner_->reserve(device, bytes); }
  Result<void> release(const VirtualRange& range) override { return inner_->release(range); }
  Result<void> map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                   std::uint64_t unit_bytes = 0) override {
    return inner_->map(range, offset, bytes, unit_bytes);
  }
  Result<void> unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) override {
    return inner_->unmap(range, offset, bytes);
  }
  Result<void> remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to, std::uint64_t bytes) override {
    return inner_->remap(range, from, to, bytes);
  }
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

 protected:
  std::unique_ptr<Backend> inner_;
};

}  // namespace memd
