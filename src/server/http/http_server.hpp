// server/http/http_server.hpp — the REST door (`memd serve`).
//
// Boost.Beast on Asio with C++20 coroutines: a few I/O threads
// (HttpOptions::io_threads) run every connection as a coroutine, so idle
// keep-alive connections and slow clients cost memory, never a thread. Each
// request's handler — the action table's, which may allocate and copy — runs
// on a worker pool (HttpOptions::threads), never on an I/O thread.
//
// Routes come only from the action table (path templates matched segment by
// segment in request_target.hpp; path, query and JSON body merge into the
// action's params), plus GET /api/openapi.json, POST /api/stdio and GET
// /metrics (Prometheus text: protocol/metrics_text.hpp). Every check that needs only
// the header runs before the body is read, so no route can skip them and a
// refused body is never read: the request target's length (414 over 8 KiB),
// who is calling (bearer token and X-Memd-* headers → a Caller,
// server/http/caller.hpp; all but /healthz), the route (404; 405 with Allow for a
// known path and another method), a JSON route's Content-Type (415), the
// body limit (--max-upload for PUT …/data, --max-body otherwise: 413).
// Unknown routes, oversized bodies, malformed requests (conflicting
// Content-Length headers included) and handler exceptions all answer the
// JSON error shape. Every accepted socket gets TCP_NODELAY; keep-alive has
// no request cap; header, body, idle and write timeouts are per connection
// (HttpOptions).
//
// The data routes stream (data_streams.hpp): an upload is checked whole
// (allocation, permission, offset + Content-Length in bounds) before its body
// is read, then written in 256 KiB pieces as it arrives, each piece one
// memory_write dispatch; a download is checked whole, then sent with
// Content-Length in 64 KiB pieces, each read by one memory_read dispatch on
// the worker pool, at most two alive per response (streamed_response.hpp). GET /api/memory/events
// (memory_subscribe, RouteBody::EventStream) is checked by its dispatch, then
// served as server-sent events until the client goes (event_stream.hpp; at
// most HttpOptions::max_event_streams, ended at once by shutdown()). JSON bodies and answers are
// held whole (bounded by --max-body). A connection between requests is
// parked: its socket waits for readability with no coroutine, timer or
// buffer (under 1 KiB each; docs/architecture.md, "Memory per connection"),
// and one sweep closes those idle past the idle timeout.
//
// One daemon per address: the listening socket sets SO_REUSEADDR (rebinding
// over TIME_WAIT) but never SO_REUSEPORT, so bind() on an address another
// process listens on fails at once with `unavailable`.
//
// Each request is logged at debug level (method, target, status, body bytes,
// µs), and a summary of the last interval at info when there was traffic
// (access_log.hpp).
//
// Thread safety: stop() and shutdown() may be called from any thread (a
// signal-waiting thread) and make run() return.
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
  // Graceful: stops accepting, closes idle connections, lets requests in
  // flight finish (their connections then close) for up to
  // HttpOptions::shutdown_grace, then makes run() return.
  void shutdown();
  // At once: run() returns; connections are dropped mid-request.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memd
