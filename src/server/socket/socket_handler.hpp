// server/socket/socket_handler.hpp — what the Unix socket door asks of the
// service behind it.
//
// The door (unix_socket_server.hpp) owns framing, authentication and
// descriptor passing; a SocketHandler decides what requests do. For each
// connection: admit() once, after its hello resolved to a Caller (the service
// checks, for one, that the caller's session is live); handle() for every
// later request line; closed() exactly once when a connection admit()
// accepted is gone — the peer closed it, it broke, or the door stopped — so
// the service can drop what the connection held (its imports). A connection
// whose hello was refused was never admitted and gets no closed().
//
// Descriptors in a SocketReply are the door's from then on: it sends them
// with the answer and closes its copies, or closes them when the answer
// cannot be sent. A handler that fails returns its Error; one that throws is
// answered `internal` and the connection stays up.
//
// Thread safety: the door calls a handler from its one thread only, one call
// at a time, so calls for one connection never overlap and are in order.
// That thread serves every connection: a handler must not block (an import is
// a table lookup and a descriptor dup), and must not call the door's stop().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"
#include "service/caller.hpp"

namespace memd {

// Who is at the other end: the door's number for the connection (unique
// while the door lives, never 0) and the peer's SO_PEERCRED, read at accept.
struct SocketPeer {
  std::uint64_t connection = 0;
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct SocketReply {
  nlohmann::json result = nlohmann::json::object();  // must be an object; the door adds "fds": N
  std::vector<int> fds;  // owned; at most kMaxSocketFds; the door closes them after sending (or on failure)
};

class SocketHandler {
 public:
  virtual ~SocketHandler() = default;
  // After hello resolved to `caller`; an error refuses the connection.
  virtual Result<void> admit(const Caller& caller, const SocketPeer& peer) = 0;
  // Every request after hello.
  virtual Result<SocketReply> handle(const Caller& caller, std::string_view action, const nlohmann::json& params,
                                     const SocketPeer& peer) = 0;
  // The admitted connection is gone; called exactly once for each.
  virtual void closed(const SocketPeer& peer) = 0;
};

}  // namespace memd
