// server/http/http_server.hpp — the REST door (`memd serve`).
//
// Registers one httplib route per action-table route (path templates become
// regexes; path, query and JSON body merge into the action's params), plus
// GET /api/openapi.json. Cross-cutting rules live in httplib's hooks so no
// route can skip them: the bearer token (all but /healthz) and the body limit
// are checked before a body is read; unknown routes, oversized bodies and
// handler exceptions all answer the JSON error shape.
//
// Thread safety: handlers run on httplib's pool and only call the service.
// stop() may be called from any thread (a signal-waiting thread) and makes
// run() return.
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

  // Validates the options and binds; returns the port bound (useful with port 0).
  Result<int> bind();
  // Serves until stop(). Requires a successful bind().
  Result<void> run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memd
