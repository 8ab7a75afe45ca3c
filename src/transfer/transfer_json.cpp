// Transfer reports as the wire shows them (transfer/transfer_json.hpp).
#include "transfer/transfer_json.hpp"

#include "memd/iso8601.hpp"

namespace memd {

nlohmann::json to_json(const TransferReport& r) {
  const auto now = std::chrono::system_clock::now();
  auto time = [](const std::optional<SystemTime>& t) -> nlohmann::json {
    return t ? nlohmann::json(iso8601(*t)) : nlohmann::json(nullptr);
  };
  nlohmann::json j = {
      {"transferId", r.id.to_string()},
      {"batchId", r.batch ? nlohmann::json(r.batch->to_string()) : nlohmann::json(nullptr)},
      {"kind", std::string(to_string(r.kind))},
      {"status", std::string(to_string(r.status))},
      {"owner", r.owner},
      {"sourceAllocationId", r.source.to_string()},
      {"destinationAllocationId", r.destination.to_string()},
      {"sourceOffset", r.source_offset},
      {"destinationOffset", r.destination_offset},
      {"sourceDeviceId", r.source_device.to_string()},
      {"destinationDeviceId", r.destination_device.to_string()},
      {"sourceMemoryType", std::string(to_string(r.source_type))},
      {"destinationMemoryType", std::string(to_string(r.destination_type))},
      {"sizeBytes", r.size_bytes},
      {"bytesDone", r.bytes_done},
      {"progress", r.size_bytes ? static_cast<double>(r.bytes_done) / static_cast<double>(r.size_bytes) : 1.0},
      {"rateBytesPerSecond", r.rate(now)},
      {"path", r.path ? nlohmann::json(std::string(to_string(*r.path))) : nlohmann::json(nullptr)},
      {"cancelRequested", r.cancel_requested},
      {"maxBytesPerSecond", r.max_bytes_per_second ? nlohmann::json(r.max_bytes_per_second) : nlohmann::json(nullptr)},
      {"createdAt", iso8601(r.created_at)},
      {"startedAt", time(r.started_at)},
      {"finishedAt", time(r.finished_at)},
      {"error", nullptr},
  };
  if (r.error)
    j["error"] = {{"code", std::string(to_string(r.error->code))}, {"message", r.error->message}};
  return j;
}

nlohmann::json to_json(const BatchReport& b) {
  nlohmann::json ids = nlohmann::json::array();
  nlohmann::json members = nlohmann::json::array();
  nlohmann::json failed = nlohmann::json::array();
  for (const auto& t : b.transfers) {
    ids.push_back(t.id.to_string());
    members.push_back(to_json(t));
  }
  for (const auto& f : b.failed) failed.push_back(f.to_string());
  return {{"batchId", b.id.to_string()},
          {"owner", b.owner},
          {"status", std::string(to_string(b.status))},
          {"sizeBytes", b.size_bytes},
          {"bytesDone", b.bytes_done},
          {"progress", b.size_bytes ? static_cast<double>(b.bytes_done) / static_cast<double>(b.size_bytes) : 1.0},
          {"createdAt", iso8601(b.created_at)},
          {"transferIds", std::move(ids)},
          {"failed", std::move(failed)},
          {"transfers", std::move(members)}};
}

}  // namespace memd
