// StreamPool: idle streams per (backend, device).
#include "transfer/stream_pool.hpp"

namespace memd {

StreamPool::~StreamPool() {
  for (auto& [key, streams] : idle_)
    for (const auto& s : streams) (void)key.first->destroy_stream(s);
}

Result<StreamPool::Lease> StreamPool::acquire(Backend& backend, DeviceId device) {
  {
    std::lock_guard lock(mutex_);
    auto& idle = idle_[{&backend, device}];
    if (!idle.empty()) {
      Stream s = idle.back();
      idle.pop_back();
      return Lease(this, &backend, s);
    }
  }
  auto created = backend.create_stream(device);
  if (!created) return fail(created.error());
  std::lock_guard lock(mutex_);
  ++created_;
  return Lease(this, &backend, *created);
}

void StreamPool::release(Backend& backend, const Stream& stream) {
  std::lock_guard lock(mutex_);
  idle_[{&backend, stream.device}].push_back(stream);
}

std::size_t StreamPool::created() const {
  std::lock_guard lock(mutex_);
  return created_;
}

}  // namespace memd
