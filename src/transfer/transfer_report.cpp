// TransferReport and BatchReport helpers.
#include "transfer/transfer_report.hpp"

namespace memd {

std::string_view to_string(TransferKind kind) noexcept { return kind == TransferKind::Move ? "move" : "copy"; }

double TransferReport::rate(SystemTime now) const {
  if (!started_at) return 0;
  const auto end = finished_at.value_or(now);
  const double seconds = std::chrono::duration<double>(end - *started_at).count();
  return seconds > 0 ? static_cast<double>(bytes_done) / seconds : 0;
}

MemoryTransferStatus batch_status(const std::vector<TransferReport>& members) {
  bool any_started = false, all_finished = true, any_failed = false, any_cancelled = false;
  for (const auto& m : members) {
    if (m.status != MemoryTransferStatus::Pending) any_started = true;
    if (!m.finished()) all_finished = false;
    if (m.status == MemoryTransferStatus::Failed) any_failed = true;
    if (m.status == MemoryTransferStatus::Cancelled) any_cancelled = true;
  }
  if (!any_started) return MemoryTransferStatus::Pending;
  if (!all_finished) return MemoryTransferStatus::InProgress;
  if (any_failed) return MemoryTransferStatus::Failed;
  if (any_cancelled) return MemoryTransferStatus::Cancelled;
  return MemoryTransferStatus::Completed;
}

}  // namespace memd
