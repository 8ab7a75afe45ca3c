// ImportHandler: memory_import over MemoryService.
#include "server/socket/import_handler.hpp"

#include <spdlog/spdlog.h>

#include "protocol/params.hpp"
#include "service/memory_service.hpp"

namespace memd {

Result<void> ImportHandler::admit(const Caller& caller, const SocketPeer& peer) {
  (void)peer;
  return service_.admit(caller);
}

Result<SocketReply> ImportHandler::handle(const Caller& caller, std::string_view action,
                                          const nlohmann::json& params, const SocketPeer& peer) {
  if (action != "memory_import")
    return fail(ErrorCode::not_found, "the socket serves memory_import; '{}' is not an action here", action);
  if (!params.is_object()) return fail(ErrorCode::invalid_argument, "params must be a JSON object");
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

void ImportHandler::closed(const SocketPeer& peer) { service_.importer_closed(peer.connection); }

}  // namespace memd
