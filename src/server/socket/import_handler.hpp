// server/socket/import_handler.hpp — the socket door's actions over the
// service: memory_import, memory_lease and memory_lease_release, and ending
// what a connection held (imports and leases) when it goes.
//
// memory_lease {"sizeBytes", "deviceId" | "gpuUuid"} (client mode, DESIGN.md
// "One budget across processes"; the leasing side is lease/lease_client.hpp)
// allocates exportable VRAM as the caller (its quota and the device's limits
// apply) and answers {"leaseId", "owner", "deviceId", "sizeBytes", "mapSize",
// "handleType", "gpuUuid"} with the descriptor attached; the lease is the
// connection's until memory_lease_release {"leaseId"} or the connection
// closes. Unknown keys are refused.
//
// memory_import {"exportId"} answers the export, the allocation and where its
// bytes are in what the descriptor maps ("mapOffset", "mapSize": the whole
// descriptor; "offset", "sizeBytes": the allocation within it), the handle
// type ("memfd": mmap it MAP_SHARED; "cuda-posix-fd": import it with
// cuMemImportFromShareableHandle, map and set access), device and GPU UUID,
// with the descriptor attached. The connection then holds the allocation
// until it closes (MemoryService::import_export).
//
// Thread safety: called by the door's one thread (socket_handler.hpp); the
// service is thread-safe.
#pragma once

#include "server/socket/socket_handler.hpp"

namespace memd {

class MemoryService;

class ImportHandler final : public SocketHandler {
 public:
  explicit ImportHandler(MemoryService& service) : service_(service) {}

  Result<void> admit(const Caller& caller, const SocketPeer& peer) override;
  Result<SocketReply> handle(const Caller& caller, std::string_view action, const nlohmann::json& params,
                             const SocketPeer& peer) override;
  void closed(const SocketPeer& peer) override;

 private:
  Result<SocketReply> lease(const Caller& caller, const nlohmann::json& params, const SocketPeer& peer);
  Result<SocketReply> release_lease(const Caller& caller, const nlohmann::json& params, const SocketPeer& peer);

  MemoryService& service_;
};

}  // namespace memd
