// JSON shapes of every result (camelCase; enums by name).
#include "protocol/wire_encoding.hpp"

#include <ctime>

#include "memd/version.hpp"

namespace memd {
namespace {

nlohmann::json usage_json(const UsageTotals& t) {
  nlohmann::json out = {{"requestedBytes", t.requested_bytes}, {"allocations", t.allocations}};
  if (t.rounded_bytes) out["roundedBytes"] = *t.rounded_bytes;
  if (t.reserved_bytes) out["reservedBytes"] = *t.reserved_bytes;
  return out;
}

}  // namespace

std::string camel_case(std::string_view snake) {
  std::string out;
  out.reserve(snake.size());
  bool upper = false;
  for (char c : snake) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out.push_back(upper && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c);
    upper = false;
  }
  return out;
}

nlohmann::json to_json(const AllocationRecord& r) {
  return {
      {"allocationId", r.id.to_string()},
      {"owner", r.owner},
      {"name", r.name},
      {"deviceId", r.device.to_string()},
      {"memoryType", to_string(r.memory_type)},
      {"allocationType", to_string(r.allocation_type)},
      {"status", to_string(r.status)},
      {"priority", to_string(r.priority)},
      {"sizeBytes", r.size_bytes},
      {"address", r.address},
      {"tags", r.tags},
      {"pinned", r.pinned},
      {"exportable", r.exportable},
      {"createdAt", iso8601(r.created_at)},
      {"lastUsedAt", iso8601(r.last_used_at)},
  };
}

nlohmann::json to_json(const DeviceInfo& d) {
  nlohmann::json types = nlohmann::json::array();
  for (auto t : d.memory_types) types.push_back(to_string(t));
  nlohmann::json j = {
      {"deviceId", d.id.to_string()},
      {"name", d.name},
      {"backend", d.backend},
      {"simulated", d.simulated},
      {"totalBytes", d.total_bytes},
      {"freeBytes", d.free_bytes},
      {"granularity", d.granularity},
      {"virtualMemory", d.virtual_memory},
      {"memoryTypes", std::move(types)},
  };
  if (d.compute_major != 0)
    j["computeCapability"] = std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor);
  if (!d.bus_id.empty()) j["busId"] = d.bus_id;
  if (!d.uuid.empty()) j["uuid"] = d.uuid;
  nlohmann::json peers = nlohmann::json::array();
  for (const auto& p : d.peers)
    peers.push_back({{"deviceId", p.device.to_string()}, {"access", to_string(p.access)}});
  j["peers"] = std::move(peers);
  return j;
}

nlohmann::json to_json(const PoolStats& stats) {
  nlohmann::json j = nlohmann::json::object();
#define MEMD_STAT_TO_JSON(name, unit, help) j[camel_case(#name)] = stats.name;
  MEMD_POOL_STAT_FIELDS(MEMD_STAT_TO_JSON)
#undef MEMD_STAT_TO_JSON
  return j;
}

nlohmann::json to_json(const DeviceStatus& s) {
  nlohmann::json pools = nlohmann::json::array();
  for (const auto& [type, stats] : s.pools) {
    auto p = to_json(stats);
    p["memoryType"] = to_string(type);
    pools.push_back(std::move(p));
  }
  return {
      {"deviceId", s.info.id.to_string()},
      {"name", s.info.name},
      {"backend", s.info.backend},
      {"simulated", s.info.simulated},
      {"totalBytes", s.total_bytes},
      {"usedBytes", s.used_bytes},
      {"freeBytes", s.free_bytes},
      {"reservedBytes", s.reserved_bytes},
      {"allocatedBytes", s.allocated_bytes},
      {"allocations", s.allocations},
      {"fragmentation", s.fragmentation},
      {"limitBytes", s.limit_bytes ? nlohmann::json(*s.limit_bytes) : nlohmann::json(nullptr)},
      {"health", to_string(s.health)},
      {"healthReasons", s.health_reasons},
      {"pressure", to_json(s.pressure)},
      {"pools", std::move(pools)},
  };
}

nlohmann::json to_json(const MemoryStatusReport& report) {
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : report.devices) devices.push_back(to_json(d));
  nlohmann::json out = {{"health", to_string(report.health)},
                        {"sampledAt", iso8601(report.sampled_at)},
                        {"devices", std::move(devices)}};
  if (report.pinned) {
    const auto& p = *report.pinned;
    out["pinned"] = {{"limitBytes", p.limit_bytes},
                     {"reservedBytes", p.reserved_bytes},
                     {"allocatedBytes", p.allocated_bytes},
                     {"stagingBufferBytes", p.staging.buffer_bytes},
                     {"stagingBuffersInUse", p.staging.buffers_in_use},
                     {"stagingBytesInUse", p.staging.bytes_in_use},
                     {"stagingIdleBuffers", p.staging.idle_buffers},
                     {"stagingLeases", p.staging.leases},
                     {"stagingShortLeases", p.staging.short_leases},
                     {"stagingRefused", p.staging.refused}};
  }
  if (report.transfers) {
    const auto& t = *report.transfers;
    out["transfers"] = {{"submitted", t.submitted}, {"pending", t.pending},     {"inProgress", t.in_progress},
                        {"completed", t.completed}, {"failed", t.failed},       {"cancelled", t.cancelled},
                        {"copies", t.copies},       {"bytesCopied", t.bytes_copied}};
  }
  return out;
}

nlohmann::json to_json(const UsageReport& report) {
  nlohmann::json by_device = nlohmann::json::object(), by_type = nlohmann::json::object(),
                 by_owner = nlohmann::json::object();
  for (const auto& [d, t] : report.by_device) by_device[d.to_string()] = usage_json(t);
  for (const auto& [m, t] : report.by_memory_type) by_type[std::string(to_string(m))] = usage_json(t);
  for (const auto& [o, t] : report.by_owner) by_owner[o] = usage_json(t);
  return {{"total", usage_json(report.total)},
          {"byDevice", std::move(by_device)},
          {"byMemoryType", std::move(by_type)},
          {"byOwner", std::move(by_owner)}};
}

nlohmann::json to_json(const AllocationPage& page) {
  nlohmann::json items = nlohmann::json::array();
  for (const auto& r : page.items) items.push_back(to_json(r));
  return {{"items", std::move(items)},
          {"total", page.total},
          {"offset", page.offset},
          {"limit", page.limit}};
}

nlohmann::json to_json(const Limits& limits) {
  nlohmann::json per_device = nlohmann::json::object(), per_type = nlohmann::json::object(),
                 per_owner = nlohmann::json::object();
  for (const auto& [d, b] : limits.per_device) per_device[d.to_string()] = b;
  for (const auto& [m, b] : limits.per_memory_type) per_type[std::string(to_string(m))] = b;
  for (const auto& [o, b] : limits.per_owner) per_owner[o] = b;
  return {{"perDevice", std::move(per_device)},
          {"perMemoryType", std::move(per_type)},
          {"perOwner", std::move(per_owner)}};
}

nlohmann::json to_json(const ClearReport& report) {
  nlohmann::json ids = nlohmann::json::array();
  for (const auto& r : report.freed) ids.push_back(r.id.to_string());
  return {{"freedAllocations", report.freed.size()},
          {"freedBytes", report.freed_bytes},
          {"releasedBytes", report.released_bytes},
          {"allocationIds", std::move(ids)}};
}

nlohmann::json to_json(const OptimizeReport& report) {
  return {{"releasedBytes", report.released_bytes},
          {"reservedBeforeBytes", report.reserved_before},
          {"reservedAfterBytes", report.reserved_after}};
}

nlohmann::json to_json(const DeviceHealthInfo& h) {
  // Absent fields are null: the device does not report them.
  auto field = [](const auto& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  return {{"eccCorrected", field(h.ecc_corrected)},
          {"eccUncorrected", field(h.ecc_uncorrected)},
          {"retiredPages", field(h.retired_pages)},
          {"retiredPagesPending", field(h.retired_pages_pending)},
          {"remappedRowsCorrectable", field(h.remapped_rows_correctable)},
          {"remappedRowsUncorrectable", field(h.remapped_rows_uncorrectable)},
          {"remappingPending", field(h.remapping_pending)},
          {"remappingFailed", field(h.remapping_failed)}};
}

nlohmann::json to_json(const HealthReport& report) {
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : report.devices)
    devices.push_back({{"deviceId", d.device.to_string()},
                       {"health", to_string(d.health)},
                       {"reasons", d.reasons},
                       {"pressure", std::string(to_string(d.pressure))},
                       {"hardware", to_json(d.hardware)}});
  return {{"status", to_string(report.status)},
          {"version", std::string(version())},
          {"uptimeSeconds", report.uptime.count()},
          {"devices", std::move(devices)}};
}

nlohmann::json to_json(const SessionReport& report) {
  return {{"sessionId", report.id.to_string()},
          {"owner", report.owner},
          {"ttlSeconds", report.ttl.count()},
          {"expiresAt", iso8601(report.expires_at)},
          {"allocations", report.allocations},
          {"allocatedBytes", report.allocated_bytes}};
}

nlohmann::json to_json(const SessionCloseReport& report) {
  nlohmann::json ids = nlohmann::json::array();
  for (const auto& r : report.released) ids.push_back(r.id.to_string());
  return {{"sessionId", report.session.id.to_string()},
          {"owner", report.session.owner},
          {"releasedAllocations", report.released.size()},
          {"releasedBytes", report.released_bytes},
          {"allocationIds", std::move(ids)}};
}

}  // namespace memd
