// server/socket/unix_socket_server.hpp — the Unix socket door: JSON lines
// that can carry file descriptors (`memd serve --socket PATH`).
//
// DESIGN.md, "Memory other processes use": descriptors of exported memory
// travel over a Unix socket. Each connection speaks JSON lines both ways,
// the stdio door's shapes:
//   → {"id": "1", "action": "hello", "params": {"token": "…"}}
//   ← {"id": "1", "ok": true, "result": {"owner": "alice", "admin": false,
//       "session": null, "connection": 7}}
//   → {"id": "2", "action": "memory_import", "params": {"exportId": "…"}}
//   ← {"id": "2", "ok": true, "result": {…, "fds": 1}}   (+ 1 descriptor)
//   ← {"id": "3", "ok": false, "error": {"code": "not_found", "message": "…"}}
// Answers come in request order. Descriptors go as SCM_RIGHTS on the
// sendmsg() that carries the answer's first byte (at most kMaxSocketFds), and
// the answer's result says how many ("fds": N). A peer receives them with
// the bytes that start that line (or earlier ones), so taking N from the
// front of everything received so far, when the line is parsed, is right.
//
// Who may talk: two gates. The socket file is created mode 0660 (before
// listen(), so no peer connects in between): only its user and group can
// connect at all. Then the first request of a connection must be `hello`
// (socket_hello.hpp), resolved by the REST door's CallerResolver and then
// SocketHandler::admit(); any other request before it is answered
// `unauthenticated` (the connection stays). A refused hello ends the
// connection, so tokens cannot be guessed at line rate on one connection.
// SO_PEERCRED (pid, uid, gid) is read at accept and logged at info with the
// owner on hello and on close.
//
// Bounds (socket_options.hpp): at most max_connections (1024) connections —
// one more is answered `unavailable` and closed; lines at most max_line
// (64 KiB) — a longer one is answered `payload_too_large` and the connection
// closed, because where the next request starts is then unknown; a line
// that is not a request (not JSON, wrong shape) is answered
// `invalid_argument` and the connection stays; a peer that does not read
// its answers stops being read past max_pending_output; a connection that
// says no hello within hello_timeout is closed. Sockets are non-blocking and
// each wake-up reads at most 64 KiB from a connection, so a slow, silent or
// greedy peer never holds up another. Nothing a peer sends — handler
// exceptions included, answered `internal` — can take the daemon down.
//
// The path: start() refuses (`conflict`) a path where a live process listens
// or that is not a socket, and removes a socket file nobody listens on (left
// by a daemon that died). stop() closes every connection (SocketHandler::
// closed() for each admitted one), then unlinks the path if it is still the
// socket this server made. The directory holding the path should be one
// only memd's user can write (/run/memd, not /tmp): whoever can write the
// directory can replace the file, whatever its mode.
//
// Thread safety: start() and stop() may be called from any thread but not
// from a handler; the handler is called from the server's one thread only
// (socket_handler.hpp). The handler and resolver must outlive the server.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "memd/error.hpp"
#include "server/http/caller.hpp"
#include "server/socket/socket_handler.hpp"
#include "server/socket/socket_options.hpp"

namespace memd {

class UnixSocketServer {
 public:
  UnixSocketServer(std::string path, SocketHandler& handler, CallerResolver resolver, SocketOptions options = {});
  ~UnixSocketServer();  // stop()
  UnixSocketServer(const UnixSocketServer&) = delete;
  UnixSocketServer& operator=(const UnixSocketServer&) = delete;

  // Binds (after clearing a stale socket file), sets mode 0660, listens and
  // starts the server's thread. invalid_argument for a path that cannot be a
  // socket address (empty, over 107 bytes) or bad options; conflict for a live
  // socket, a non-socket file at the path, or a second start(); unavailable
  // when the system refuses (directory missing, no permission).
  Result<void> start();
  // Closes every connection and the socket and removes the file. Idempotent.
  void stop();

  const std::string& path() const noexcept;
  // Connections open now (admitted or not).
  std::size_t connections() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memd
