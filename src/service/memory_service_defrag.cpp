// MemoryService::defragment: the service's one domain check (the device),
// then the defragmenter. See memory_service.hpp for why every caller may ask.
#include "service/memory_service.hpp"

#include <set>

#include <spdlog/spdlog.h>

#include "transfer/defrag_json.hpp"

namespace memd {

Result<DefragReport> MemoryService::defragment(const Caller& caller, const DefragOptions& options) {
  if (auto ok = admit(caller); !ok) return fail(ok.error());
  if (options.device && !catalog_->info(*options.device))
    return fail(ErrorCode::not_found, "no device {}", options.device->to_string());
  return defragmenter_->run(options);
}

void MemoryService::defrag_event(const DefragEvent& event) {
  if (event.kind == DefragEvent::Kind::Started) {
    events_->publish(EventKind::defragment_started, event.device,
                     {{"deviceId", event.device ? nlohmann::json(event.device->to_string()) : nlohmann::json(nullptr)},
                      {"plannedMoves", event.planned_moves},
                      {"plannedBytes", event.planned_bytes}});
    return;
  }
  events_->publish(EventKind::defragment_finished, event.device, to_json(event.report));
  std::set<DeviceId> devices;
  for (const auto& p : event.report.pools) devices.insert(p.device);
  for (DeviceId d : devices) monitor_->note_usage(d);
}

void MemoryService::scheduled_defrag(const MemoryStatusReport& report, const DefragScheduleOptions& schedule) {
  // On the monitor's thread, after a sample: one device at a time, only
  // devices with a pool (the sample's fragmentation is over all of them).
  for (const DeviceStatus& d : report.devices) {
    if (d.pools.empty()) continue;
    if (!should_defragment(d.fragmentation, monitor_->idle_for(d.info.id), schedule)) continue;
    DefragOptions options;
    options.device = d.info.id;
    spdlog::info("scheduled defragmentation of {}: fragmentation {:.2f}, idle", d.info.id.to_string(),
                 d.fragmentation);
    auto ran = defragmenter_->run(options);
    if (!ran) spdlog::warn("scheduled defragmentation of {} failed: {}", d.info.id.to_string(), ran.error().message);
  }
}

}  // namespace memd
