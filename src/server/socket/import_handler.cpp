// ImportHandler: memory_import over MemoryService.
#include "server/socket/import_handler.hpp"

#include <algorithm>
#include <initializer_list>

#include <spdlog/spdlog.h>

#include "protocol/params.hpp"
#include "service/memory_service.hpp"

namespace memd {

Result<void> ImportHandler::admit(const Caller& caller, const SocketPeer& peer) {
  (void)peer;
  return service_.admit(caller);
}

namespace {

// A key the action does not know is refused rather than ignored: a misspelt
// "sizeByte" must not lease a default.
Result<void> only_keys(const nlohmann::json& params, std::initializer_list<std::string_view> keys) {
  for (const auto& [key, value] : params.items())
    if (std::find(keys.begin(), keys.end(), key) == keys.end())
      return fail(ErrorCode::invalid_argument, "unknown parameter '{}'", key.substr(0, 64));
  return {};
}

}  // namespace

Result<SocketReply> ImportHandler::handle(const Caller& caller, std::string_view action,
                                          const nlohmann::json& params, const SocketPeer& peer) {
  if (!params.is_object()) return fail(ErrorCode::invalid_argument, "params must be a JSON object");
  if (action == "memory_lease") return lease(caller, params, peer);
  if (action == "memory_lease_release") return release_lease(caller, params, peer);
  if (action != "memory_import")
    return fail(ErrorCode::not_found,
                "the socket serves memory_import, memory_lease and memory_lease_release; '{}' is not an action here",
                action);
  const Params p(params);
  auto id = required(p.export_id("exportId"), "exportId");
  if (!id) return fail(id.error());
  auto grant = service_.import_export(caller, *id, peer.connection);
  if (!grant) return fail(grant.error());
  SocketReply reply;
  const auto& a = grant->allocation;
  reply.result = {{"exportId", id->to_string()},
                  {"allocationId", a.id.to_string()},
                  {"owner", a.owner},
                  {"deviceId", a.device.to_string()},
                  {"memoryType", std::string(to_string(a.memory_type))},
                  {"sizeBytes", a.size_bytes},
                  {"offset", 0},
                  {"mapOffset", 0},
                  {"mapSize", grant->segment.segment.size},
                  {"handleType", std::string(to_string(grant->segment.kind))},
                  {"gpuUuid", grant->gpu_uuid.empty() ? nlohmann::json(nullptr) : nlohmann::json(grant->gpu_uuid)}};
  reply.fds.push_back(grant->fd);
  spdlog::info("socket: '{}' (pid {}, uid {}) imported export {}", caller.owner, peer.pid, peer.uid, id->to_string());
  return reply;
}

Result<SocketReply> ImportHandler::lease(const Caller& caller, const nlohmann::json& params, const SocketPeer& peer) {
  if (auto ok = only_keys(params, {"sizeBytes", "deviceId", "gpuUuid"}); !ok) return fail(ok.error());
  const Params p(params);
  auto size = required(p.size("sizeBytes", 1), "sizeBytes");
  if (!size) return fail(size.error());
  auto device = p.device("deviceId");
  if (!device) return fail(device.error());
  auto uuid = p.text("gpuUuid", 1, 128);
  if (!uuid) return fail(uuid.error());
  auto grant = service_.lease(caller, *device, *uuid, *size, peer.connection, peer.pid);
  if (!grant) return fail(grant.error());
  SocketReply reply;
  const auto& a = grant->allocation;
  reply.result = {{"leaseId", a.id.to_string()},
                  {"owner", a.owner},
                  {"deviceId", a.device.to_string()},
                  {"sizeBytes", a.size_bytes},
                  {"mapSize", grant->segment.segment.size},
                  {"handleType", std::string(to_string(grant->segment.kind))},
                  {"gpuUuid", grant->gpu_uuid.empty() ? nlohmann::json(nullptr) : nlohmann::json(grant->gpu_uuid)}};
  reply.fds.push_back(grant->fd);
  return reply;
}

Result<SocketReply> ImportHandler::release_lease(const Caller& caller, const nlohmann::json& params,
                                                 const SocketPeer& peer) {
  if (auto ok = only_keys(params, {"leaseId"}); !ok) return fail(ok.error());
  const Params p(params);
  auto id = required(p.allocation_id("leaseId"), "leaseId");
  if (!id) return fail(id.error());
  auto record = service_.release_lease(caller, *id, peer.connection);
  if (!record) return fail(record.error());
  SocketReply reply;
  reply.result = {{"leaseId", id->to_string()}, {"releasedBytes", record->size_bytes}};
  return reply;
}

void ImportHandler::closed(const SocketPeer& peer) { service_.importer_closed(peer.connection); }

}  // namespace memd
