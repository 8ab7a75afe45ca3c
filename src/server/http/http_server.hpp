// server/http/http_server.hpp — the REST door (`memd serve`).
//
// Boost.Beast on Asio with C++20 coroutines: a few I/O threads
// (HttpOptions::io_threads) run every connection as a coroutine, so idle
// keep-alive connections and slow clients cost memory, never a thread. Each
// request's handler — the action table's, which may allocate and copy — runs
// on a worker pool (HttpOptions::threads), never on an I/O thread.
//
// Routes come only from the action table (path templates become regexes;
// path, query and JSON body merge into the action's params), plus
// GET /api/openapi.json. Cross-cutting rules are checked after the header and
// before the body is read, so no route can skip them: who is calling (bearer
// token, X-Memd-* headers → a Caller, server/http/caller.hpp; all but
// /healthz) and the body limit (--max-upload for PUT …/data, --max-body
// otherwise). Unknown routes, oversized bodies, malformed requests and handler
// exceptions all answer the JSON error shape. Every accepted socket gets
// TCP_NODELAY; keep-alive has no request cap; header, body, idle and write
// timeouts are per connection (HttpOptions).
//
// One daemon per address: the listening socket sets SO_REUSEADDR (rebinding
// over TIME_WAIT) but never SO_REUSEPORT, so bind() on an address another
// process listens on fails at once with `unavailable`.
//
// Request bodies and binary responses are held whole in memory (bounded by
// the limits above), each in one buffer the handler reads from or returned,
// without a second copy; streaming them in pieces is issue 12's remaining
// work.
//
// Thread safety: stop() may be called from any thread (a signal-waiting
// thread) and makes run() return.
#pragma once

#include <memory>

#include "memd/error.hpp"
#include "server/http/http_options.hpp"

namespace memd {

class MemoryService;

class HttpServer {
 public:
  HttpServer(MemoryService& service, HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Validates the options, binds and listens; returns the port bound (useful
  // with port 0). Fails with `unavailable` naming the address when it is busy.
  Result<int> bind();
  // Serves until stop(). Requires a successful bind().
  Result<void> run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memd
