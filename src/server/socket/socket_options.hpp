// server/socket/socket_options.hpp — the bounds of the Unix socket door.
//
// Every resource a peer can make the door hold is bounded here: connections,
// the bytes of one request line, the answers queued for a peer that does not
// read them, the time a connection may stay anonymous, and how long a peer
// that is being shown out may take to read its last answer.
//
// Thread safety: a value.
#pragma once

#include <chrono>
#include <cstddef>

#include "memd/size.hpp"

namespace memd {

// One request line, without its newline. Requests are small JSON objects
// (an import names an export id); data never travels on this socket.
inline constexpr std::size_t kMaxSocketLine = 64 * 1024;
// Descriptors one answer may carry (SCM_RIGHTS, with its first byte).
inline constexpr std::size_t kMaxSocketFds = 16;

struct SocketOptions {
  std::size_t max_connections = 1024;  // more are accepted, answered `unavailable` and closed
  std::size_t max_line = kMaxSocketLine;
  // A peer that sends requests but does not read the answers: past this many
  // queued bytes the door stops reading its requests until it reads.
  std::size_t max_pending_output = 1 * kMiB;
  // A connection must say hello within this, or it is closed: anonymous
  // connections would otherwise hold slots of max_connections for free.
  std::chrono::milliseconds hello_timeout{10'000};
  // After a refusal that ends a connection (a refused hello, an over-long
  // line), the time its last answer may take to leave before the close.
  std::chrono::milliseconds close_linger{1'000};
};

}  // namespace memd
