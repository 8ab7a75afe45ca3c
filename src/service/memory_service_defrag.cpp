// MemoryService::defragment: the service's one domain check (the device),
// then the defragmenter. See memory_service.hpp for why every caller may ask.
#include "service/memory_service.hpp"

namespace memd {

Result<DefragReport> MemoryService::defragment(const Caller& caller, const DefragOptions& options) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  if (options.device && !catalog_->info(*options.device))
    return fail(ErrorCode::not_found, "no device {}", options.device->to_string());
  return defragmenter_->run(options);
}

}  // namespace memd
