// lease/lease_client.hpp — one connection to memd's socket door that leases
// memory: what a process in client mode (the PyTorch shim's, through
// lease_backend.hpp) uses to hold its memory under the daemon's budget.
//
// DESIGN.md, "One budget across processes". The door speaks JSON lines that
// can carry descriptors (server/socket/unix_socket_server.hpp):
//   → hello {"token" | "owner" | "session"}        (who this process is)
//   → memory_lease {"sizeBytes", "gpuUuid" | "deviceId"}
//   ← {"leaseId", "deviceId", "sizeBytes", "mapSize", "handleType", "gpuUuid",
//      "fds": 1}  + the descriptor of memory of its own, made for this lease
//   → memory_lease_release {"leaseId"}
// The daemon counts every lease against the owner's quota and the device's
// limits, and ends every lease of a connection when it closes, so a process
// that dies leaks nothing. Answers are checked before they are believed
// (parse_lease_answer): a broken or hostile peer is an error, never a crash.
//
// Thread safety: every method may be called from any thread; calls are
// serialised on the one connection (answers come in request order).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "backends/backend.hpp"
#include "memd/error.hpp"

namespace memd {

struct LeaseClientOptions {
  std::string socket_path;             // memd serve --socket
  std::optional<std::string> token;    // the bearer token, where the daemon has tokens
  std::optional<std::string> owner;    // the owner label, where it has none
  std::optional<std::string> session;  // a session GUID to lease in
  std::chrono::milliseconds timeout{30000};  // for each answer
};

// One lease, as the daemon granted it. The descriptor is the receiver's.
struct LeasedMemory {
  std::string lease_id;  // the daemon's allocation id
  std::string device;    // the daemon's name of the device
  std::uint64_t size_bytes = 0;
  std::uint64_t map_size = 0;  // what the descriptor covers
  ShareableKind kind = ShareableKind::Memfd;
  std::string gpu_uuid;  // empty for host devices
  int fd = -1;
};

// The answer's result, checked: every key present with its type, sizes
// non-zero, the handle type known, "fds" exactly 1. invalid_argument
// otherwise, naming the key. Pure; the fuzz target's entry.
Result<LeasedMemory> parse_lease_answer(const nlohmann::json& result);

class LeaseClient {
 public:
  // Connects and says hello: unavailable when nobody listens at the path;
  // the daemon's own code when it refuses the hello.
  static Result<std::unique_ptr<LeaseClient>> connect(const LeaseClientOptions& options);
  ~LeaseClient();
  LeaseClient(const LeaseClient&) = delete;
  LeaseClient& operator=(const LeaseClient&) = delete;

  // `bytes` of memory of its own on the device the daemon knows by
  // `gpu_uuid` (a GPU) or `device` (its name there, for host devices).
  Result<LeasedMemory> lease(std::uint64_t bytes, const std::string& gpu_uuid, const std::string& device);
  Result<void> release(const std::string& lease_id);
  // The owner the daemon resolved this connection to.
  const std::string& owner() const noexcept { return owner_; }

 private:
  explicit LeaseClient(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}
  // Sends one request and waits for its answer: the result and the
  // descriptors it carried (closed by the caller). The daemon's refusal is
  // its own code and message; a broken connection is unavailable.
  Result<std::pair<nlohmann::json, std::vector<int>>> call(const std::string& action, nlohmann::json params);
  Result<void> receive_line(std::string& line);

  std::mutex mutex_;
  int fd_ = -1;
  std::chrono::milliseconds timeout_;
  std::uint64_t next_id_ = 0;
  std::string buffer_;
  std::vector<int> fds_;  // received, not yet claimed by an answer
  std::string owner_;
};

}  // namespace memd
