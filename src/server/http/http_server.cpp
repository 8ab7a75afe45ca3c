// REST transport on cpp-httplib: framing, auth and limits; the action table
// does the work.
#include "server/http/http_server.hpp"

#include <httplib.h>

#include <algorithm>
#include <charconv>
#include <regex>

#include <spdlog/spdlog.h>

#include "protocol/action_table.hpp"
#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"
#include "protocol/openapi.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

constexpr const char* kJson = "application/json";
constexpr const char* kOctets = "application/octet-stream";

void send_error(httplib::Response& res, const Error& error) {
  res.status = error_status(error);
  res.set_content(to_wire_text(error_body(error)), kJson);
}

// Compares without an early exit so response time does not leak how much of
// a guessed token was right.
bool same_secret(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// "/api/memory/allocations/{allocationId}/data" → "/api/memory/allocations/([^/]+)/data"
std::string route_regex(std::string_view path) {
  std::string out;
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '{') {
      const auto end = path.find('}', i);
      out += "([^/]+)";
      i = end;
    } else if (std::string_view(".+*?^$()[]|\\").find(path[i]) != std::string_view::npos) {
      out += '\\';
      out += path[i];
    } else {
      out += path[i];
    }
  }
  return out;
}

bool is_upload(const httplib::Request& req) {
  return req.method == "PUT" && req.path.size() > 5 && req.path.ends_with("/data");
}

}  // namespace

struct HttpServer::Impl {
  MemoryService& service;
  HttpOptions options;
  httplib::Server server;
  std::string openapi_text;
  bool bound = false;

  Impl(MemoryService& s, HttpOptions o) : service(s), options(std::move(o)) {}

  void handle(const Action& action, const Route& route, const httplib::Request& req,
              httplib::Response& res) {
    nlohmann::json params = nlohmann::json::object();
    if (route.body == RouteBody::Json &&
        (route.method == HttpMethod::Post || route.method == HttpMethod::Put) && !req.body.empty()) {
      // Chunked bodies have no Content-Length for the pre-routing check.
      if (req.body.size() > options.max_body)
        return send_error(res, {ErrorCode::payload_too_large,
                                fmt::format("body larger than {} bytes", options.max_body)});
      auto body = parse_request_json(req.body);
      if (!body) return send_error(res, body.error());
      if (!body->is_object())
        return send_error(res, {ErrorCode::invalid_argument, "the request body must be a JSON object"});
      params = std::move(*body);
    }
    for (const auto& [key, value] : req.params)
      if (!params.contains(key)) params[key] = value;
    const auto names = path_parameters(route.path);
    for (std::size_t i = 0; i < names.size() && i + 1 < req.matches.size(); ++i)
      params[names[i]] = req.matches[i + 1].str();

    CallContext context;
    context.owner = req.has_header("X-Memd-Owner") ? req.get_header_value("X-Memd-Owner") : "anonymous";
    if (context.owner.empty()) context.owner = "anonymous";
    context.read_only = route.read_only;
    if (route.body == RouteBody::BinaryUpload)
      context.payload = std::as_bytes(std::span<const char>(req.body.data(), req.body.size()));
    context.binary_response = route.body == RouteBody::BinaryDownload;

    auto outcome = dispatch(service, action, params, context);
    if (!outcome) return send_error(res, outcome.error());
    res.status = route.success_status;
    if (outcome->bytes) {
      const auto& b = *outcome->bytes;
      res.set_content(std::string(reinterpret_cast<const char*>(b.data()), b.size()), kOctets);
    } else {
      res.set_content(to_wire_text(outcome->result), kJson);
    }
  }

  httplib::Server::HandlerResponse pre_route(const httplib::Request& req, httplib::Response& res) {
    if (!options.token.empty() && req.path != "/healthz") {
      const auto auth = req.get_header_value("Authorization");
      if (!auth.starts_with("Bearer ") || !same_secret(std::string_view(auth).substr(7), options.token)) {
        // The body (if any) is never read: close rather than misparse it as the next request.
        res.set_header("Connection", "close");
        res.set_header("WWW-Authenticate", "Bearer");
        send_error(res, {ErrorCode::unauthenticated, "missing or wrong bearer token"});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    const std::uint64_t limit = is_upload(req) ? options.max_upload : options.max_body;
    if (req.has_header("Content-Length")) {
      const auto text = req.get_header_value("Content-Length");
      std::uint64_t length = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
      if (ec != std::errc() || end != text.data() + text.size() || length > limit) {
        res.set_header("Connection", "close");
        send_error(res, {ErrorCode::payload_too_large,
                         fmt::format("body of {} bytes is over the {} byte limit", text, limit)});
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  }

  httplib::Server::HandlerResponse on_error(const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // already ours
    Error error;
    switch (res.status) {
      case 404:
        error = {ErrorCode::not_found, fmt::format("no route {} {}", req.method, req.path)};
        break;
      case 413:
        error = {ErrorCode::payload_too_large, "request body over the limit"};
        break;
      case 400:
        error = {ErrorCode::invalid_argument, "malformed HTTP request"};
        break;
      default:
        error = {res.status >= 500 ? ErrorCode::internal : ErrorCode::invalid_argument,
                 fmt::format("HTTP {}", res.status)};
        break;
    }
    const int status = res.status == 405 ? 405 : error_status(error);
    send_error(res, error);
    res.status = status;
    return httplib::Server::HandlerResponse::Handled;
  }

  void register_routes() {
    for (const auto& action : action_table()) {
      for (const auto& route : action.routes) {
        const std::string pattern = route_regex(route.path);
        auto handler = [this, &action, &route](const httplib::Request& req, httplib::Response& res) {
          handle(action, route, req, res);
        };
        switch (route.method) {
          case HttpMethod::Get: server.Get(pattern, handler); break;
          case HttpMethod::Post: server.Post(pattern, handler); break;
          case HttpMethod::Put: server.Put(pattern, handler); break;
          case HttpMethod::Delete: server.Delete(pattern, handler); break;
        }
      }
    }
    openapi_text = to_wire_text(openapi_document());
    server.Get("/api/openapi.json", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(openapi_text, kJson);
    });
    server.set_pre_routing_handler(
        [this](const httplib::Request& req, httplib::Response& res) { return pre_route(req, res); });
    server.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) { return on_error(req, res); }));
    server.set_exception_handler([](const httplib::Request& req, httplib::Response& res,
                                    std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      spdlog::error("{} {}: {}", req.method, req.path, what);
      send_error(res, {ErrorCode::internal, "internal error: " + what});
    });
    server.set_payload_max_length(static_cast<std::size_t>(std::max(options.max_body, options.max_upload)));
    const int threads = options.threads;
    server.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  }
};

HttpServer::HttpServer(MemoryService& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {
  impl_->register_routes();
}

HttpServer::~HttpServer() { stop(); }

Result<int> HttpServer::bind() {
  if (auto ok = validate_http_options(impl_->options); !ok) return fail(ok.error());
  auto& o = impl_->options;
  int port = o.port;
  if (port == 0) {
    port = impl_->server.bind_to_any_port(o.host);
    if (port < 0) return fail(ErrorCode::unavailable, "cannot listen on {}", o.host);
  } else if (!impl_->server.bind_to_port(o.host, port)) {
    return fail(ErrorCode::unavailable, "cannot listen on {}:{} (in use, or not an address of this machine)",
                o.host, port);
  }
  impl_->bound = true;
  return port;
}

Result<void> HttpServer::run() {
  if (!impl_->bound) return fail(ErrorCode::internal, "HttpServer::run before bind");
  if (!impl_->server.listen_after_bind())
    return fail(ErrorCode::unavailable, "the listening socket failed");
  return {};
}

void HttpServer::stop() {
  if (impl_ && impl_->server.is_running()) impl_->server.stop();
}

}  // namespace memd
