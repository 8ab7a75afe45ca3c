// REST transport on Boost.Beast: framing, timeouts, auth and limits on the
// I/O threads; the action table does the work on the worker pool.
#include "server/http/http_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <regex>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "protocol/action_table.hpp"
#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"
#include "protocol/openapi.hpp"
#include "server/http/caller.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;

// A response body that is either text (JSON) or the bytes a binary download
// returned, sent from the handler's own vector without copying it.
struct ResponseBody {
  struct value_type {
    std::string text;
    std::vector<std::byte> bytes;
  };
  static std::uint64_t size(const value_type& body) { return body.text.size() + body.bytes.size(); }

  class writer {
   public:
    using const_buffers_type = asio::const_buffer;
    template <bool isRequest, class Fields>
    writer(const http::header<isRequest, Fields>&, const value_type& body) : body_(body) {}
    void init(beast::error_code& ec) { ec = {}; }
    boost::optional<std::pair<const_buffers_type, bool>> get(beast::error_code& ec) {
      ec = {};
      if (!body_.bytes.empty()) return {{asio::const_buffer(body_.bytes.data(), body_.bytes.size()), false}};
      return {{asio::const_buffer(body_.text.data(), body_.text.size()), false}};
    }

   private:
    const value_type& body_;
  };
};
using Response = http::response<ResponseBody>;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr const char* kJson = "application/json";
constexpr const char* kOctets = "application/octet-stream";
// Request line plus headers; a longer URL or header block answers 400.
constexpr std::uint32_t kHeaderLimit = 16 * 1024;
// After refusing a request whose body was not read: how long and how much of
// that body to drain before closing, so the close does not reset the
// connection before the client has read the answer.
constexpr auto kDrainTime = std::chrono::seconds(2);
constexpr std::uint64_t kDrainBytes = 256 * kMiB;

Response error_response(unsigned version, const Error& error) {
  Response res{static_cast<http::status>(error_status(error)), version};
  res.set(http::field::content_type, kJson);
  res.body().text = to_wire_text(error_body(error));
  return res;
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

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX decoding (and '+' → ' ' in a query); malformed escapes stay as written.
std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else if (plus_is_space && text[i] == '+') {
      out += ' ';
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string_view target_path(std::string_view target) { return target.substr(0, target.find('?')); }

std::vector<std::pair<std::string, std::string>> query_pairs(std::string_view target) {
  std::vector<std::pair<std::string, std::string>> out;
  const auto q = target.find('?');
  if (q == std::string_view::npos) return out;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    out.emplace_back(percent_decode(pair.substr(0, eq), true),
                     eq == std::string_view::npos ? std::string{} : percent_decode(pair.substr(eq + 1), true));
  }
  return out;
}

bool is_upload(http::verb method, std::string_view path) {
  return method == http::verb::put && path.size() > 5 && path.ends_with("/data");
}

http::verb to_verb(HttpMethod method) {
  switch (method) {
    case HttpMethod::Get: return http::verb::get;
    case HttpMethod::Post: return http::verb::post;
    case HttpMethod::Put: return http::verb::put;
    case HttpMethod::Delete: return http::verb::delete_;
  }
  return http::verb::unknown;
}

// Errors that mean the peer went away or stalled: close without an answer.
bool is_disconnect(const beast::error_code& ec) {
  return ec == beast::error::timeout || ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
         ec == asio::error::broken_pipe || ec == http::error::partial_message;
}

struct CompiledRoute {
  http::verb method;
  std::regex pattern;
  const Action* action;
  const Route* route;
};

}  // namespace

struct HttpServer::Impl {
  MemoryService& service;
  HttpOptions options;
  CallerResolver callers{options.token, options.tokens};
  std::vector<CompiledRoute> routes;
  std::string openapi_text;
  // Declaration order is destruction order reversed: the acceptor goes first,
  // then the worker pool joins (its last completions post to the stopped
  // io_context), then the io_context destroys what is left of the connections.
  asio::io_context ioc;
  std::optional<asio::thread_pool> workers;
  tcp::acceptor acceptor{ioc};
  bool bound = false;

  Impl(MemoryService& s, HttpOptions o)
      : service(s), options(std::move(o)), ioc(std::max(1, options.io_threads)) {
    for (const auto& action : action_table())
      for (const auto& route : action.routes)
        routes.push_back({to_verb(route.method), std::regex(route_regex(route.path)), &action, &route});
    openapi_text = to_wire_text(openapi_document());
  }

  // ---- the worker side: one request in, one response out; may block ------

  Response handle(const Action& action, const Route& route, const Request& req, const std::smatch& match,
                  const Caller& caller) {
    const unsigned version = req.version();
    nlohmann::json params = nlohmann::json::object();
    if (route.body == RouteBody::Json &&
        (route.method == HttpMethod::Post || route.method == HttpMethod::Put) && !req.body().empty()) {
      if (req.body().size() > options.max_body)
        return error_response(version, {ErrorCode::payload_too_large,
                                         fmt::format("body larger than {} bytes", options.max_body)});
      auto body = parse_request_json(req.body());
      if (!body) return error_response(version, body.error());
      if (!body->is_object())
        return error_response(version, {ErrorCode::invalid_argument, "the request body must be a JSON object"});
      params = std::move(*body);
    }
    for (auto& [key, value] : query_pairs(req.target()))
      if (!params.contains(key)) params[key] = std::move(value);
    const auto names = path_parameters(route.path);
    for (std::size_t i = 0; i < names.size() && i + 1 < match.size(); ++i) params[names[i]] = match[i + 1].str();

    CallContext context;
    context.caller = caller;
    context.read_only = route.read_only;
    if (route.body == RouteBody::BinaryUpload)
      context.payload = std::as_bytes(std::span<const char>(req.body().data(), req.body().size()));
    context.binary_response = route.body == RouteBody::BinaryDownload;

    auto outcome = dispatch(service, action, params, context);
    if (!outcome) return error_response(version, outcome.error());
    Response res{static_cast<http::status>(route.success_status), version};
    if (outcome->bytes) {
      res.set(http::field::content_type, kOctets);
      res.body().bytes = std::move(*outcome->bytes);
    } else {
      res.set(http::field::content_type, kJson);
      res.body().text = to_wire_text(outcome->result);
    }
    return res;
  }

  Response respond(const Request& req, const Caller& caller) {
    try {
      const std::string path = percent_decode(target_path(req.target()), false);
      // HEAD is answered as GET would be; the session sends only the header.
      const http::verb method = req.method() == http::verb::head ? http::verb::get : req.method();
      for (const auto& r : routes) {
        if (r.method != method) continue;
        std::smatch match;
        if (std::regex_match(path, match, r.pattern)) return handle(*r.action, *r.route, req, match, caller);
      }
      if (method == http::verb::get && path == "/api/openapi.json") {
        Response res{http::status::ok, req.version()};
        res.set(http::field::content_type, kJson);
        res.body().text = openapi_text;
        return res;
      }
      return error_response(req.version(), {ErrorCode::not_found,
                                             fmt::format("no route {} {}", std::string(req.method_string()), path)});
    } catch (const std::exception& e) {
      spdlog::error("{} {}: {}", std::string(req.method_string()), std::string(req.target()), e.what());
      return error_response(req.version(), {ErrorCode::internal, std::string("internal error: ") + e.what()});
    }
  }

  // ---- the I/O side: never blocks -----------------------------------------

  // Answers and closes a connection whose request body was not (fully) read.
  // (g++ 12 destroys some temporaries of a co_await expression twice: callers
  // build the response in a named variable, and co_await expressions here
  // hold no temporaries with destructors.)
  asio::awaitable<void> refuse(beast::tcp_stream& stream, Response& res) {
    res.keep_alive(false);
    res.prepare_payload();
    stream.expires_after(options.write_timeout);
    auto [ec, n] = co_await http::async_write(stream, res, kTuple);
    if (ec) co_return;
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.expires_after(kDrainTime);
    std::array<char, 16384> sink;
    std::uint64_t drained = 0;
    while (drained < kDrainBytes) {
      auto [e, m] = co_await stream.async_read_some(asio::buffer(sink), kTuple);
      if (e) break;
      drained += m;
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
      // Idle: wait for a request's first byte; from there the header timeout runs.
      if (buffer.size() == 0) {
        stream.expires_after(options.idle_timeout);
        auto [ec, n] = co_await stream.async_read_some(buffer.prepare(16384), kTuple);
        if (ec) co_return;
        buffer.commit(n);
      }
      http::request_parser<http::string_body> parser;
      parser.header_limit(kHeaderLimit);
      // The parser checks Content-Length against its body limit as soon as the
      // header is complete; the route's own limit is applied below.
      parser.body_limit(std::max(options.max_body, options.max_upload));
      stream.expires_after(options.header_timeout);
      {
        auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, kTuple);
        if (ec) {
          if (is_disconnect(ec)) co_return;
          if (ec == http::error::body_limit) {
            auto res = error_response(11, {ErrorCode::payload_too_large, "request body over the limit"});
            co_await refuse(stream, res);
            co_return;
          }
          const std::string what = ec == http::error::header_limit
                                       ? fmt::format("request line and headers over {} bytes", kHeaderLimit)
                                       : "malformed HTTP request: " + ec.message();
          auto res = error_response(11, {ErrorCode::invalid_argument, what});
          co_await refuse(stream, res);
          co_return;
        }
      }
      const auto& header = parser.get();
      const unsigned version = header.version();
      const std::string_view path = target_path(header.target());

      // Who is asking (server/http/caller.hpp): every route but /healthz.
      Result<Caller> caller = path == "/healthz" ? Result<Caller>(Caller{}) : callers.resolve(header);
      if (!caller) {
        auto res = error_response(version, caller.error());
        if (caller.error().code == ErrorCode::unauthenticated) res.set(http::field::www_authenticate, "Bearer");
        co_await refuse(stream, res);
        co_return;
      }
      const std::uint64_t limit = is_upload(header.method(), path) ? options.max_upload : options.max_body;
      if (const auto length = parser.content_length(); length && *length > limit) {
        auto res = error_response(version, {ErrorCode::payload_too_large,
                                            fmt::format("body of {} bytes is over the {} byte limit", *length,
                                                        limit)});
        co_await refuse(stream, res);
        co_return;
      }
      parser.body_limit(limit);  // chunked bodies carry no Content-Length
      if (beast::iequals(header[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, version};
        stream.expires_after(options.write_timeout);
        auto [ec, n] = co_await http::async_write(stream, go_on, kTuple);
        if (ec) co_return;
      }
      while (!parser.is_done()) {
        stream.expires_after(options.body_timeout);  // a pause limit, not a total
        auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, kTuple);
        if (!ec) continue;
        if (ec == http::error::body_limit) {
          auto res = error_response(version, {ErrorCode::payload_too_large,
                                              fmt::format("body over the {} byte limit", limit)});
          co_await refuse(stream, res);
        } else if (!is_disconnect(ec)) {
          auto res = error_response(version, {ErrorCode::invalid_argument, "malformed HTTP request: " + ec.message()});
          co_await refuse(stream, res);
        }
        co_return;
      }

      Request req = parser.release();
      const bool keep_alive = req.keep_alive();
      const bool head_only = req.method() == http::verb::head;
      auto work = [this, &req, &caller]() -> asio::awaitable<Response> { co_return respond(req, *caller); };
      auto worker = workers->get_executor();
      Response res = co_await asio::co_spawn(worker, work, asio::use_awaitable);
      res.keep_alive(keep_alive);
      res.prepare_payload();
      stream.expires_after(options.write_timeout +
                           options.write_per_mib * static_cast<std::int64_t>(ResponseBody::size(res.body()) / kMiB));
      beast::error_code ec;
      if (head_only) {
        http::response_serializer<ResponseBody> serializer{res};
        auto [e, n] = co_await http::async_write_header(stream, serializer, kTuple);
        ec = e;
      } else {
        auto [e, n] = co_await http::async_write(stream, res, kTuple);
        ec = e;
      }
      if (ec || !keep_alive) {
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
      }
    }
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto strand = asio::make_strand(ioc);
      auto [ec, socket] = co_await acceptor.async_accept(strand, kTuple);
      if (ec) {
        if (!acceptor.is_open() || ec == asio::error::operation_aborted) co_return;
        // Out of descriptors or a connection reset before accept: pause, go on.
        spdlog::warn("accept: {}", ec.message());
        asio::steady_timer pause(ioc, std::chrono::milliseconds(50));
        co_await pause.async_wait(kTuple);
        continue;
      }
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      auto executor = socket.get_executor();
      asio::co_spawn(executor, session(std::move(socket)), [](const std::exception_ptr& error) {
        if (!error) return;
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          spdlog::warn("connection: {}", e.what());
        } catch (...) {
        }
      });
    }
  }
};

HttpServer::HttpServer(MemoryService& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

Result<int> HttpServer::bind() {
  auto& o = impl_->options;
  if (auto ok = validate_http_options(o); !ok) return fail(ok.error());
  const std::string host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  const std::string address = fmt::format("{}:{}", host, o.port);
  beast::error_code ec;
  tcp::resolver resolver(impl_->ioc);
  auto endpoints = resolver.resolve(o.host, std::to_string(o.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty())
    return fail(ErrorCode::unavailable, "cannot listen on {}: {}", address,
                ec ? ec.message() : "no such address");
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  auto& acceptor = impl_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  // SO_REUSEADDR lets a restarted daemon bind over connections in TIME_WAIT;
  // on Linux it never lets two sockets listen on one address (SO_REUSEPORT
  // would, and is never set), so a second daemon fails here.
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (ec == asio::error::address_in_use) {
    return fail(ErrorCode::unavailable,
                "cannot listen on {}: address already in use (is another memd serving there?)", address);
  }
  if (!ec) acceptor.listen(o.backlog, ec);
  if (ec) return fail(ErrorCode::unavailable, "cannot listen on {}: {}", address, ec.message());
  const int port = acceptor.local_endpoint().port();
  impl_->workers.emplace(static_cast<std::size_t>(o.threads));
  impl_->bound = true;
  return port;
}

Result<void> HttpServer::run() {
  if (!impl_->bound) return fail(ErrorCode::internal, "HttpServer::run before bind");
  auto& ioc = impl_->ioc;
  asio::co_spawn(ioc, impl_->accept_loop(), asio::detached);
  auto run_io = [&ioc] {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("http I/O thread: {}", e.what());
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->options.io_threads; ++i) threads.emplace_back(run_io);
  run_io();
  for (auto& t : threads) t.join();
  return {};
}

void HttpServer::stop() {
  if (impl_) impl_->ioc.stop();
}

}  // namespace memd
