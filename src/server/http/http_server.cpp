// REST transport on Boost.Beast: framing, timeouts, auth, limits and request
// checks on the I/O threads; the action table does the work on the worker
// pool; the data routes stream in pieces (data_streams.hpp).
#include "server/http/http_server.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "protocol/action_table.hpp"
#include "protocol/actions/event_actions.hpp"
#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"
#include "protocol/metrics_text.hpp"
#include "protocol/openapi.hpp"
#include "protocol/params.hpp"
#include "protocol/sse.hpp"
#include "server/http/access_log.hpp"
#include "server/http/caller.hpp"
#include "server/http/dashboard.hpp"
#include "server/http/data_streams.hpp"
#include "server/http/event_stream.hpp"
#include "server/http/request_target.hpp"
#include "server/http/streamed_response.hpp"
#include "server/stdio/stdio_server.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using Response = http::response<http::string_body>;
using Request = http::request<http::string_body>;
// Reads the header alone; the body's reader is chosen once the route is known.
using HeaderParser = http::request_parser<http::empty_body>;

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr const char* kJson = "application/json";

// An event stream once its connection is handed over to the event threads:
// it gives its place among --max-event-streams back when it ends (or when
// its frame is destroyed with the event io_context).
asio::awaitable<void> handed_over(tcp::socket socket, std::shared_ptr<Subscription> subscription,
                                  EventStreams& streams, EventStreamOptions options) {
  struct Release {
    EventStreams& streams;
    ~Release() { streams.release(); }
  } release{streams};
  co_await serve_event_stream(std::move(socket), std::move(subscription), streams, options);
}
constexpr const char* kOctets = "application/octet-stream";
constexpr std::string_view kOpenApiPath = "/api/openapi.json";
// The stdio door over HTTP, for `memd stdio --connect`: one request line in,
// its response line out, answered by the stdio door's own function, so the
// bridge answers as the in-process door does. Errors travel in the line
// (`"ok": false`), so the HTTP status is 200 whenever a line was answered.
constexpr std::string_view kStdioPath = "/api/stdio";
// Prometheus metrics (protocol/metrics_text.hpp), answered from cached state
// on the worker pool. Who may scrape: whoever may call the other read
// routes — the caller is resolved as for every route but /healthz, so with
// --token/--tokens a scraper sends a bearer token (any token: aggregates are
// open to every owner, like memory_status); on loopback without tokens no
// token is needed. It takes no parameters; unknown query keys are ignored,
// as on every route.
constexpr std::string_view kMetricsPath = "/metrics";
// The web dashboard (server/http/dashboard.hpp): its page and its files,
// answered from the binary on the I/O thread (a copy, never blocking).
constexpr std::string_view kDashboardPath = "/";
constexpr std::string_view kDashboardFilePath = "/dashboard/{file}";
// The page loads its own files and calls this daemon's API, nothing else:
// the policy says so to the browser, so an injected reference to another
// origin does not load.
constexpr std::string_view kDashboardPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
// SO_SNDBUF of a connection once it streams a body (see download()).
constexpr int kStreamSendBuffer = 256 * 1024;
// After refusing a request whose body was not read: how long and how much of
// that body to drain before closing, so the close does not reset the
// connection before the client has read the answer.
constexpr auto kDrainTime = std::chrono::seconds(2);
constexpr std::uint64_t kDrainBytes = 256 * kMiB;

Response error_response(unsigned version, const Error& error) {
  Response res{static_cast<http::status>(error_status(error)), version};
  res.set(http::field::content_type, kJson);
  res.body() = to_wire_text(error_body(error));
  return res;
}

// A dashboard file (GET / or GET /dashboard/NAME), or the error that refuses
// it; 304 when If-None-Match names its ETag. "no-cache": a browser asks
// again each time (cheaply, by ETag), so a rebuilt daemon's page is seen at
// once.
Response dashboard_response(const RouteMatch& match, const http::request_header<>& req) {
  const unsigned version = req.version();
  const std::string_view name =
      match.path_template == kDashboardFilePath && !match.path_params.empty() ? match.path_params.front().second
                                                                              : std::string_view();
  const Result<DashboardFile> file = find_dashboard_file(name);
  if (!file) return error_response(version, file.error());
  Response res{http::status::ok, version};
  const auto tag = req.find(http::field::if_none_match);
  if (tag != req.end() && etag_matches(tag->value(), file->file->etag)) res.result(http::status::not_modified);
  else res.body() = std::string(file->file->body);
  res.set(http::field::content_type, file->content_type);
  res.set(http::field::etag, file->file->etag);
  res.set(http::field::cache_control, "no-cache");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Content-Security-Policy", kDashboardPolicy);
  res.set("Referrer-Policy", "no-referrer");
  return res;
}

// Errors that mean the peer went away or stalled: close without an answer.
bool is_disconnect(const beast::error_code& ec) {
  return ec == beast::error::timeout || ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
         ec == asio::error::broken_pipe || ec == http::error::partial_message;
}

// Path placeholders win over query keys of the same name, and a JSON body's
// keys over the query's.
nlohmann::json request_params(const RouteMatch& match, std::string_view target, nlohmann::json body) {
  nlohmann::json params = body.is_object() ? std::move(body) : nlohmann::json::object();
  for (auto& [key, value] : query_pairs(target))
    if (!params.contains(key)) params[key] = std::move(value);
  for (const auto& [key, value] : match.path_params) params[key] = value;
  return params;
}

// Who is calling (resolved from the header, server/http/caller.hpp) and how.
CallContext call_context(const Caller& caller, const Route& route) {
  CallContext context;
  context.caller = caller;
  context.read_only = route.read_only;
  return context;
}

// One request as the access log sees it; recorded when the exchange ends,
// however it ends (status 0: the client went away before an answer).
struct ExchangeLog {
  AccessLog& log;
  SteadyClock::time_point started = SteadyClock::now();
  std::string method, target;
  int status = 0;
  std::uint64_t bytes_in = 0, bytes_out = 0;

  explicit ExchangeLog(AccessLog& l) : log(l) {}
  ExchangeLog(const ExchangeLog&) = delete;
  ExchangeLog& operator=(const ExchangeLog&) = delete;
  ~ExchangeLog() {
    if (method.empty()) return;  // no request header arrived: nothing to log
    log.record({method, target, status, bytes_in, bytes_out,
                std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - started)});
  }
};

// A connection in the server's list: shutdown() closes the idle ones and
// waits for the busy ones, and the idle sweep closes those idle too long.
// Both close an idle connection the same way: shutting its socket's read
// side, which completes its pending wait (the descriptor stays valid: an
// entry leaves the list before its socket closes). Guarded by the list's
// mutex.
struct ConnectionEntry {
  ConnectionEntry* prev = nullptr;
  ConnectionEntry* next = nullptr;
  int fd = -1;
  bool idle = false;  // parked between requests (fixed for the entry's life)
  SteadyClock::time_point idle_until{};
  bool closing = false;  // set when its read side was shut: do not serve it
};

}  // namespace

struct HttpServer::Impl {
  MemoryService& service;
  HttpOptions options;
  CallerResolver callers{options.token, options.tokens};
  RateLimiter limiter{options.rate_limit};
  RouteTable routes{action_table()};
  DataActions upload_actions, download_actions;
  std::string openapi_text;
  AccessLog access;
  mutable std::mutex connections_mutex;
  ConnectionEntry* connections = nullptr;  // guarded by connections_mutex
  std::size_t open_connections = 0;        // guarded by connections_mutex
  std::atomic<bool> stopping{false};
  // Server-sent event streams (event_stream.hpp): outlives the io_context,
  // whose destruction ends the streams' coroutines.
  EventStreams event_streams{options.max_event_streams};
  // Declaration order is destruction order reversed: the acceptor goes first,
  // then the worker pool joins (its last completions post to the stopped
  // io_context), then the io_context destroys what is left of the connections
  // (whose frames unlink themselves from the list above, which outlives them).
  asio::io_context ioc;
  std::optional<asio::thread_pool> workers;
  // Event streams run here, on threads of their own (events() moves each
  // connection over): one publication wakes every subscriber at once, and a
  // thousand wake-ups and writes queued on the request I/O threads held each
  // request behind them (status p99 0.57 -> 6.96 ms with 1,000 subscribers
  // on a 16-core host, docs/benchmarks.md). Destroyed before ioc: a stream's
  // coroutine ending here posts the end of its session to ioc.
  asio::io_context events_ioc{std::max(1, options.io_threads)};
  asio::executor_work_guard<asio::io_context::executor_type> events_work{events_ioc.get_executor()};
  asio::strand<asio::io_context::executor_type> accept_strand{asio::make_strand(ioc)};
  tcp::acceptor acceptor{accept_strand};
  bool bound = false;

  Impl(MemoryService& s, HttpOptions o) : service(s), options(std::move(o)), ioc(std::max(1, options.io_threads)) {
    // spdlog builds its registry lazily, on the first log call; make that
    // happen here, on one thread, before any I/O thread logs (the lazy init
    // inside the uninstrumented library showed as a race under TSan).
    spdlog::default_logger();
    routes.add(HttpMethod::Get, kOpenApiPath);
    routes.add(HttpMethod::Post, kStdioPath);
    routes.add(HttpMethod::Get, kMetricsPath);
    routes.add(HttpMethod::Get, kDashboardPath);
    routes.add(HttpMethod::Get, kDashboardFilePath);
    const Action* details = find_action("memory_allocation_details");
    for (const auto& action : action_table())
      for (const auto& route : action.routes) {
        if (route.body == RouteBody::BinaryUpload) upload_actions = {&action, details};
        if (route.body == RouteBody::BinaryDownload) download_actions = {&action, details};
      }
    openapi_text = to_wire_text(openapi_document());
  }

  asio::any_io_executor worker() { return workers->get_executor(); }

  // ---- the connection list ------------------------------------------------

  struct Registration {
    Impl& impl;
    ConnectionEntry entry;
    Registration(Impl& i, int fd, std::optional<SteadyClock::time_point> idle_until = std::nullopt) : impl(i) {
      entry.fd = fd;
      entry.idle = idle_until.has_value();
      entry.idle_until = idle_until.value_or(SteadyClock::time_point{});
      std::lock_guard lock(impl.connections_mutex);
      entry.next = impl.connections;
      if (impl.connections) impl.connections->prev = &entry;
      impl.connections = &entry;
      ++impl.open_connections;
    }
    ~Registration() {
      std::lock_guard lock(impl.connections_mutex);
      if (entry.prev) entry.prev->next = entry.next;
      else impl.connections = entry.next;
      if (entry.next) entry.next->prev = entry.prev;
      --impl.open_connections;
    }
    bool closing() const {
      std::lock_guard lock(impl.connections_mutex);
      return entry.closing;
    }
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
  };

  // A kept-alive connection between requests: its socket and its list entry,
  // waiting for the socket to become readable. No coroutine, no stream
  // timers, no buffer: this is what 10,000 idle clients cost (see
  // docs/architecture.md, "Memory per connection").
  struct Parked {
    tcp::socket socket;
    Registration registration;
    Parked(Impl& impl, tcp::socket s)
        : socket(std::move(s)),
          registration(impl, socket.native_handle(), SteadyClock::now() + impl.options.idle_timeout) {}
  };

  // Parks a connection until its next request's first byte (or its close, an
  // idle timeout, a shutdown); a readable one gets a session coroutine.
  void park(tcp::socket connection) {
    if (stopping.load()) return;  // closes it
    auto parked = std::make_unique<Parked>(*this, std::move(connection));
    tcp::socket& waiting = parked->socket;
    waiting.async_wait(tcp::socket::wait_read, [this, parked = std::move(parked)](const beast::error_code& ec) mutable {
      if (ec || stopping.load() || parked->registration.closing()) return;
      tcp::socket socket = std::move(parked->socket);
      parked.reset();
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
    });
  }

  std::size_t connection_count() {
    std::lock_guard lock(connections_mutex);
    return open_connections;
  }

  // ---- the worker side: may block -----------------------------------------

  Response handle_json(const RouteMatch& match, const Request& req, const Caller& caller) {
    const unsigned version = req.version();
    try {
      if (match.path_template == kMetricsPath) {
        auto text = metrics_text(service);
        if (!text) return error_response(version, text.error());
        Response res{http::status::ok, version};
        res.set(http::field::content_type, kMetricsContentType);
        res.body() = std::move(*text);
        return res;
      }
      if (match.action == nullptr) {  // a transport route
        Response res{http::status::ok, version};
        res.set(http::field::content_type, kJson);
        res.body() = match.path_template == kStdioPath ? handle_stdio_line(service, req.body(), caller) : openapi_text;
        return res;
      }
      const Route& route = *match.route;
      nlohmann::json body = nlohmann::json::object();
      if (route.body == RouteBody::Json && (route.method == HttpMethod::Post || route.method == HttpMethod::Put) &&
          !req.body().empty()) {
        auto parsed = parse_request_json(req.body());
        if (!parsed) return error_response(version, parsed.error());
        if (!parsed->is_object())
          return error_response(version, {ErrorCode::invalid_argument, "the request body must be a JSON object"});
        body = std::move(*parsed);
      }
      const nlohmann::json params = request_params(match, req.target(), std::move(body));
      const CallContext context = call_context(caller, route);
      auto outcome = dispatch(service, *match.action, params, context);
      if (!outcome) return error_response(version, outcome.error());
      Response res{static_cast<http::status>(route.success_status), version};
      res.set(http::field::content_type, kJson);
      res.body() = to_wire_text(outcome->result);
      return res;
    } catch (const std::exception& e) {
      spdlog::error("{} {}: {}", std::string(req.method_string()), std::string(req.target()), e.what());
      return error_response(version, {ErrorCode::internal, std::string("internal error: ") + e.what()});
    }
  }

  // ---- the I/O side: never blocks -----------------------------------------
  //
  // (g++ 12 destroys some temporaries of a co_await expression twice: callers
  // build responses in named variables, and co_await expressions here hold no
  // temporaries with destructors.)

  asio::awaitable<bool> write_response(beast::tcp_stream& stream, Response& res, bool keep_alive, bool head_only,
                                       ExchangeLog& x) {
    keep_alive = keep_alive && !stopping.load();  // a shutdown may have begun since the header
    res.keep_alive(keep_alive);
    res.prepare_payload();
    x.status = res.result_int();
    stream.expires_after(options.write_timeout +
                         options.write_per_mib * static_cast<std::int64_t>(res.body().size() / kMiB));
    beast::error_code ec;
    if (head_only) {
      http::response_serializer<http::string_body> serializer{res};
      auto [e, n] = co_await http::async_write_header(stream, serializer, kTuple);
      ec = e;
    } else {
      auto [e, n] = co_await http::async_write(stream, res, kTuple);
      ec = e;
      if (!ec) x.bytes_out += res.body().size();
    }
    co_return !ec && keep_alive;
  }

  // Answers and closes a connection whose request body was not (fully) read.
  asio::awaitable<void> refuse(beast::tcp_stream& stream, Response& res, ExchangeLog& x) {
    res.keep_alive(false);
    res.prepare_payload();
    x.status = res.result_int();
    stream.expires_after(options.write_timeout);
    auto [ec, n] = co_await http::async_write(stream, res, kTuple);
    if (ec) co_return;
    x.bytes_out += res.body().size();
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

  // A request refused from its header alone: with a body (unread) the
  // connection closes after the answer; without one it stays open.
  asio::awaitable<bool> answer_early(beast::tcp_stream& stream, Response& res, bool has_body, bool keep_alive,
                                     bool head_only, ExchangeLog& x) {
    if (has_body) {
      co_await refuse(stream, res, x);
      co_return false;
    }
    co_return co_await write_response(stream, res, keep_alive, head_only, x);
  }

  asio::awaitable<bool> send_continue(beast::tcp_stream& stream, const http::request_header<>& req) {
    if (!beast::iequals(req[http::field::expect], "100-continue")) co_return true;
    http::response<http::empty_body> go_on{http::status::continue_, req.version()};
    stream.expires_after(options.write_timeout);
    auto [ec, n] = co_await http::async_write(stream, go_on, kTuple);
    co_return !ec;
  }

  // Reads the rest of a request into a string (at most `limit` bytes). On
  // failure the refusal is sent and nullopt returned: the connection is done.
  asio::awaitable<std::optional<Request>> read_body(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                                    HeaderParser& head, std::uint64_t limit, ExchangeLog& x) {
    const unsigned version = head.get().version();
    if (!head.is_done() && !co_await send_continue(stream, head.get())) co_return std::nullopt;
    http::request_parser<http::string_body> parser{std::move(head)};
    parser.body_limit(limit);  // chunked bodies carry no Content-Length
    while (!parser.is_done()) {
      stream.expires_after(options.body_timeout);  // a pause limit, not a total
      auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, kTuple);
      if (!ec) continue;
      if (ec == http::error::body_limit) {
        Response res = error_response(version, {ErrorCode::payload_too_large,
                                                fmt::format("body over the {} byte limit", limit)});
        co_await refuse(stream, res, x);
      } else if (!is_disconnect(ec)) {
        Response res = error_response(version, header_parse_error(ec));
        co_await refuse(stream, res, x);
      }
      co_return std::nullopt;
    }
    x.bytes_in += parser.get().body().size();
    co_return parser.release();
  }

  // PUT …/data: checked whole on the worker pool before a body byte is read,
  // then written piece by piece as the body arrives.
  asio::awaitable<bool> upload(beast::tcp_stream& stream, beast::flat_buffer& buffer, HeaderParser& head,
                               const RouteMatch& match, const Caller& caller, bool keep_alive, ExchangeLog& x) {
    const auto& req = head.get();
    const unsigned version = req.version();
    const bool has_body = !head.is_done();
    const std::optional<std::uint64_t> length =
        head.chunked() ? std::nullopt : std::optional<std::uint64_t>(head.content_length().value_or(0));
    if (length && *length > options.max_upload) {
      Response res = error_response(version, {ErrorCode::payload_too_large,
                                              fmt::format("body of {} bytes is over the {} byte limit", *length,
                                                          options.max_upload)});
      co_return co_await answer_early(stream, res, has_body, keep_alive, false, x);
    }
    const nlohmann::json params = request_params(match, req.target(), {});
    const CallContext context = call_context(caller, *match.route);
    auto open = [&]() -> asio::awaitable<Result<UploadTarget>> {
      co_return UploadTarget::open(service, upload_actions, params, context, length);
    };
    Result<UploadTarget> target = co_await asio::co_spawn(worker(), open, asio::use_awaitable);
    if (!target) {
      Response res = error_response(version, target.error());
      co_return co_await answer_early(stream, res, has_body, keep_alive, false, x);
    }
    if (has_body) {
      if (!co_await send_continue(stream, req)) co_return false;
      http::request_parser<http::buffer_body> parser{std::move(head)};  // `req` is gone from here on
      parser.body_limit(options.max_upload);
      Piece piece(static_cast<std::size_t>(std::min(kUploadPieceBytes, length.value_or(kUploadPieceBytes))));
      std::size_t filled = 0;
      while (!parser.is_done()) {
        parser.get().body().data = piece.data() + filled;
        parser.get().body().size = piece.size() - filled;
        stream.expires_after(options.body_timeout);  // a pause limit, not a total
        auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, kTuple);
        if (ec && ec != http::error::need_buffer) {
          if (is_disconnect(ec)) co_return false;  // pieces already written stay written
          Error error = header_parse_error(ec);
          if (ec == http::error::body_limit)
            error = {ErrorCode::payload_too_large, fmt::format("body over the {} byte limit", options.max_upload)};
          Response res = error_response(version, error);
          co_await refuse(stream, res, x);
          co_return false;
        }
        filled = piece.size() - parser.get().body().size;
        if (filled < piece.size() && !(parser.is_done() && filled > 0)) continue;
        const std::span<const std::byte> bytes(piece.data(), filled);
        auto write = [&]() -> asio::awaitable<Result<void>> { co_return target->write(bytes); };
        Result<void> wrote = co_await asio::co_spawn(worker(), write, asio::use_awaitable);
        if (!wrote) {
          Error error = wrote.error();
          error.message += fmt::format(" (the body's first {} bytes were written)", target->written());
          Response res = error_response(version, error);
          co_await refuse(stream, res, x);
          co_return false;
        }
        x.bytes_in += filled;
        filled = 0;
      }
    }
    Response res{static_cast<http::status>(match.route->success_status), version};
    res.set(http::field::content_type, kJson);
    res.body() = to_wire_text(target->result());
    co_return co_await write_response(stream, res, keep_alive, false, x);
  }

  // GET …/data: checked whole on the worker pool, then streamed.
  asio::awaitable<bool> download(beast::tcp_stream& stream, const Request& req, const RouteMatch& match,
                                 const Caller& caller, bool keep_alive, bool head_only, ExchangeLog& x) {
    const nlohmann::json params = request_params(match, req.target(), {});
    const CallContext context = call_context(caller, *match.route);
    auto open = [&]() -> asio::awaitable<Result<std::unique_ptr<DownloadSource>>> {
      co_return DownloadSource::open(service, download_actions, params, context, worker());
    };
    Result<std::unique_ptr<DownloadSource>> source = co_await asio::co_spawn(worker(), open, asio::use_awaitable);
    if (!source) {
      Response res = error_response(req.version(), source.error());
      co_return co_await write_response(stream, res, keep_alive, head_only, x);
    }
    StreamedResponse out;
    out.header.result(static_cast<http::status>(match.route->success_status));
    out.header.version(req.version());
    out.header.set(http::field::content_type, kOctets);
    keep_alive = keep_alive && !stopping.load();
    out.header.keep_alive(keep_alive);
    out.length = (*source)->length();
    {
      beast::error_code ec;
      const auto peer = stream.socket().remote_endpoint(ec);
      limiter.charge_bytes(caller.owner, !ec && peer.address().is_loopback(), out.length.value_or(0),
                           RateLimiter::Clock::now());
    }
    out.source = std::move(*source);
    x.status = match.route->success_status;
    // A bounded send buffer for a streamed body: Linux autotunes a socket's
    // up to 4 MiB, and 1,000 slow readers then queued ~4 GB in the kernel,
    // past tcp_mem, which put every socket of the host under TCP memory
    // pressure: a fast reader of the same daemon stalled for minutes
    // (HttpLoad long test). 256 KiB (the kernel doubles it) still feeds a
    // loopback reader at GB/s.
    {
      beast::error_code ignored;
      stream.socket().set_option(asio::socket_base::send_buffer_size(kStreamSendBuffer), ignored);
    }
    const StreamedResult sent = co_await write_streamed(stream, out, head_only, options.write_timeout);
    x.bytes_out += sent.body_bytes;
    if (sent.aborted)
      spdlog::warn("{} {}: body cut short after {} bytes: {}", x.method, x.target, sent.body_bytes,
                   sent.aborted->message);
    co_return sent.completed && keep_alive;
  }

  // GET /api/memory/events: checked by memory_subscribe's dispatch on the
  // worker pool (parameters, the caller's session), then a subscription of
  // the bus streamed until the client goes (event_stream.hpp).
  asio::awaitable<bool> events(beast::tcp_stream& stream, const Request& req, const RouteMatch& match,
                               const Caller& caller, bool keep_alive, bool head_only, ExchangeLog& x) {
    const unsigned version = req.version();
    nlohmann::json params = request_params(match, req.target(), {});
    // EventSource reconnects with the id it saw last in this header; it wins
    // over the lastEventId of the URL it first opened.
    if (const auto field = req.find("Last-Event-ID"); field != req.end()) {
      auto id = parse_last_event_id(field->value());
      if (!id) {
        Response res = error_response(version, id.error());
        co_return co_await write_response(stream, res, keep_alive, head_only, x);
      }
      params["lastEventId"] = *id;
    }
    if (!event_streams.reserve()) {
      Response res = error_response(
          version, {ErrorCode::unavailable,
                    stopping.load() ? std::string("memd is shutting down")
                                    : fmt::format("{} event streams are open, the most this daemon serves "
                                                  "(memd serve --max-event-streams); try again later",
                                                  event_streams.max())});
      co_return co_await write_response(stream, res, keep_alive, head_only, x);
    }
    struct Release {
      EventStreams& streams;
      bool armed = true;
      ~Release() {
        if (armed) streams.release();
      }
    } release{event_streams};
    const CallContext context = call_context(caller, *match.route);
    auto check = [&]() -> asio::awaitable<Result<Outcome>> {
      co_return dispatch(service, *match.action, params, context);
    };
    Result<Outcome> checked = co_await asio::co_spawn(worker(), check, asio::use_awaitable);
    if (!checked) {
      Response res = error_response(version, checked.error());
      co_return co_await write_response(stream, res, keep_alive, head_only, x);
    }
    Result<SubscriptionRequest> request = subscription_request(Params(params));  // checked just now
    if (!request || head_only) {
      Response res = request ? Response{http::status::ok, version} : error_response(version, request.error());
      if (request) res.set(http::field::content_type, "text/event-stream");
      co_return co_await write_response(stream, res, keep_alive, head_only, x);
    }
    const std::uint64_t after =
        request->last_event_id.value_or(checked->result.value("lastSequence", std::uint64_t{0}));
    auto subscription = service.events().subscribe(request->filter, after);
    {
      beast::error_code ignored;
      stream.socket().set_option(asio::socket_base::send_buffer_size(kStreamSendBuffer), ignored);
    }
    x.status = 200;
    // The connection is handed over to the event threads (events_ioc): its
    // socket moves there and the stream runs detached, giving its place
    // back when it ends; this session ends now. Nothing on ioc's side keeps
    // a handle into events_ioc (a session awaiting the stream across the two
    // contexts had its frame, and the strand it held, outlive events_ioc at
    // teardown).
    beast::error_code ec;
    const tcp::endpoint local = stream.socket().local_endpoint(ec);
    if (ec) co_return false;  // the client already went
    const int fd = stream.socket().release(ec);
    if (ec) co_return false;
    tcp::socket moved(asio::make_strand(events_ioc));
    moved.assign(local.protocol(), fd, ec);
    if (ec) {
      ::close(fd);
      co_return false;
    }
    release.armed = false;
    const auto executor = moved.get_executor();
    asio::co_spawn(executor,
                   handed_over(std::move(moved), std::move(subscription), event_streams,
                               {.keepalive = options.event_keepalive,
                                .write_timeout = options.write_timeout,
                                .http_version = version}),
                   asio::detached);
    co_return false;
  }

  // One request and its answer. Returns whether the connection goes on.
  asio::awaitable<bool> exchange(beast::tcp_stream& stream, beast::flat_buffer& buffer) {
    ExchangeLog x(access);
    HeaderParser head;
    head.header_limit(kMaxHeaderBytes);
    head.body_limit(boost::none);  // each route's own limit is applied below
    stream.expires_after(options.header_timeout);
    {
      auto [ec, n] = co_await http::async_read_header(stream, buffer, head, kTuple);
      if (ec) {
        if (is_disconnect(ec)) co_return false;
        const auto raw = buffer.cdata();
        Response res = error_response(11, header_parse_error(ec, head.get().target(),
                                                             std::string_view(static_cast<const char*>(raw.data()),
                                                                              raw.size())));
        x.method = "-";
        co_await refuse(stream, res, x);
        co_return false;
      }
    }
    const auto& req = head.get();
    x.method = std::string(req.method_string());
    x.target = std::string(req.target().substr(0, 256));
    const unsigned version = req.version();
    const bool has_body = !head.is_done();
    const bool keep_alive = req.keep_alive() && !stopping.load();
    const Verb verb = parse_verb(req.method_string());
    const bool head_only = verb == Verb::Head;

    if (auto ok = check_target(req.target()); !ok) {
      Response res = error_response(version, ok.error());
      co_return co_await answer_early(stream, res, has_body, keep_alive, head_only, x);
    }
    const std::string_view path = target_path(req.target());
    // Who is asking (server/http/caller.hpp): every route but /healthz and
    // the dashboard's files (public: they hold no data, and the page sends
    // the user's token with each API call it makes).
    const Result<Caller> caller =
        path == "/healthz" || is_dashboard_path(path) ? Result<Caller>(Caller{}) : callers.resolve(req);
    if (!caller) {
      Response res = error_response(version, caller.error());
      if (caller.error().code == ErrorCode::unauthenticated) res.set(http::field::www_authenticate, "Bearer");
      co_return co_await answer_early(stream, res, has_body, keep_alive, head_only, x);
    }
    // The owner's rates (rate_limiter.hpp): after who is asking is known,
    // before any work, so a flood costs the daemon a table lookup each.
    bool loopback = true;
    if (limiter.options().enabled() && caller->owner.size() != 0) {
      beast::error_code ec;
      const auto peer = stream.socket().remote_endpoint(ec);
      loopback = !ec && peer.address().is_loopback();
      const auto now = RateLimiter::Clock::now();
      if (auto wait = limiter.admit(caller->owner, loopback, now)) {
        Response res = error_response(
            version, {ErrorCode::rate_limited,
                      fmt::format("owner '{}' is over its rate ({} requests/s, {} bytes/s); retry in {} ms",
                                  caller->owner, options.rate_limit.requests_per_second,
                                  options.rate_limit.bytes_per_second, wait->count())});
        res.set(http::field::retry_after, std::to_string((wait->count() + 999) / 1000));
        co_return co_await answer_early(stream, res, has_body, keep_alive, head_only, x);
      }
      if (const auto length = head.content_length()) limiter.charge_bytes(caller->owner, loopback, *length, now);
    }
    RouteLookup lookup = routes.find(verb, path);
    if (!lookup.match) {
      const std::string shown = percent_decode(path, false);
      Response res = error_response(
          version, lookup.allow.empty()
                       ? Error{ErrorCode::not_found, fmt::format("no route {} {}", x.method, shown)}
                       : Error{ErrorCode::method_not_allowed,
                               fmt::format("{} is not allowed on {}; it takes {}", x.method, shown, lookup.allow)});
      if (!lookup.allow.empty()) res.set(http::field::allow, lookup.allow);
      co_return co_await answer_early(stream, res, has_body, keep_alive, head_only, x);
    }
    const RouteMatch& match = *lookup.match;
    if (match.action == nullptr &&
        (match.path_template == kDashboardPath || match.path_template == kDashboardFilePath)) {
      Response res = dashboard_response(match, req);
      co_return co_await answer_early(stream, res, has_body, keep_alive, head_only, x);
    }
    const RouteBody kind = match.route ? match.route->body : RouteBody::Json;
    if (kind == RouteBody::BinaryUpload) co_return co_await upload(stream, buffer, head, match, *caller, keep_alive, x);

    if ((match.route || match.path_template == kStdioPath) && kind == RouteBody::Json &&
        (verb == Verb::Post || verb == Verb::Put)) {
      const auto field = req.find(http::field::content_type);
      const auto type = field == req.end() ? std::nullopt : std::optional<std::string_view>(field->value());
      if (auto ok = check_json_content_type(type, has_body); !ok) {
        Response res = error_response(version, ok.error());
        co_return co_await answer_early(stream, res, has_body, keep_alive, head_only, x);
      }
    }
    if (const auto length = head.content_length(); length && *length > options.max_body) {
      Response res = error_response(version, {ErrorCode::payload_too_large,
                                              fmt::format("body of {} bytes is over the {} byte limit", *length,
                                                          options.max_body)});
      co_return co_await answer_early(stream, res, has_body, keep_alive, head_only, x);
    }
    std::optional<Request> full = co_await read_body(stream, buffer, head, options.max_body, x);
    if (!full) co_return false;
    if (kind == RouteBody::BinaryDownload) co_return co_await download(stream, *full, match, *caller, keep_alive, head_only, x);
    if (kind == RouteBody::EventStream) co_return co_await events(stream, *full, match, *caller, keep_alive, head_only, x);

    auto work = [this, &match, &full, &caller]() -> asio::awaitable<Response> {
      co_return handle_json(match, *full, *caller);
    };
    Response res = co_await asio::co_spawn(worker(), work, asio::use_awaitable);
    limiter.charge_bytes(caller->owner, loopback, res.body().size(), RateLimiter::Clock::now());
    co_return co_await write_response(stream, res, keep_alive, head_only, x);
  }

  // A connection with a request arriving: requests are served until it
  // closes or has nothing more buffered, then it is parked again.
  asio::awaitable<void> session(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    Registration registration(*this, stream.socket().native_handle());
    beast::flat_buffer buffer;
    for (;;) {
      if (!co_await exchange(stream, buffer)) {
        beast::error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        co_return;
      }
      if (buffer.size() == 0) break;  // else a pipelined request is waiting
    }
    park(stream.release_socket());
  }

  asio::awaitable<void> accept_loop() {
    while (!stopping.load()) {
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
      park(std::move(socket));
    }
  }

  // Closes connections parked longer than the idle timeout. A sweep every
  // quarter of the timeout (10 ms to 1 s) instead of a timer per connection:
  // a timer and its pending wait would cost an idle connection more than all
  // the rest it holds.
  asio::awaitable<void> sweep_idle() {
    asio::steady_timer timer(ioc);
    const auto period = std::clamp<std::chrono::milliseconds>(options.idle_timeout / 4, std::chrono::milliseconds(10),
                                                               std::chrono::milliseconds(1000));
    while (!stopping.load()) {
      timer.expires_after(period);
      co_await timer.async_wait(kTuple);
      const auto now = SteadyClock::now();
      std::lock_guard lock(connections_mutex);
      for (auto* e = connections; e != nullptr; e = e->next) {
        if (!e->idle || e->closing || e->idle_until > now) continue;
        e->closing = true;
        ::shutdown(e->fd, SHUT_RD);
      }
    }
  }

  asio::awaitable<void> summarize() {
    asio::steady_timer timer(ioc);
    while (!stopping.load()) {
      timer.expires_after(options.access_summary);
      co_await timer.async_wait(kTuple);
      if (auto line = access.take_summary()) spdlog::info("{}", *line);
    }
  }

  // Stops the io_context once every connection has ended, or at the deadline.
  asio::awaitable<void> stop_when_drained(SteadyClock::time_point deadline) {
    asio::steady_timer timer(ioc);
    for (;;) {
      const std::size_t open = connection_count();
      if (open == 0) break;
      if (SteadyClock::now() >= deadline) {
        spdlog::warn("http: {} connection(s) still busy after {} ms; closing them", open,
                     options.shutdown_grace.count());
        break;
      }
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(kTuple);
    }
    ioc.stop();
  }

  void shutdown() {
    if (stopping.exchange(true)) return;
    // Event streams never end by themselves: closed now, not waited for.
    event_streams.close_all();
    asio::post(accept_strand, [this] {
      beast::error_code ignored;
      acceptor.close(ignored);
    });
    // Idle connections are closed at once (ConnectionEntry); busy ones finish
    // their request and then close instead of parking.
    std::size_t idle = 0, busy = 0;
    {
      std::lock_guard lock(connections_mutex);
      for (auto* e = connections; e != nullptr; e = e->next) {
        if (e->idle) {
          e->closing = true;
          ::shutdown(e->fd, SHUT_RD);
          ++idle;
        } else {
          ++busy;
        }
      }
    }
    spdlog::info("http: stopped accepting; closing {} idle connection(s), letting {} busy one(s) finish (up to {} ms)",
                 idle, busy, options.shutdown_grace.count());
    asio::co_spawn(ioc, stop_when_drained(SteadyClock::now() + options.shutdown_grace), asio::detached);
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
  asio::co_spawn(impl_->accept_strand, impl_->accept_loop(), asio::detached);
  asio::co_spawn(ioc, impl_->summarize(), asio::detached);
  asio::co_spawn(ioc, impl_->sweep_idle(), asio::detached);
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
  // As many event threads as request I/O threads: one thread writing a
  // publication to 1,000 streams took 200 ms to reach the last (p50 of
  // delivery on an H100 host).
  auto run_events = [this] {
    for (;;) {
      try {
        impl_->events_ioc.run();
        return;
      } catch (const std::exception& e) {
        spdlog::error("http event thread: {}", e.what());
      }
    }
  };
  std::vector<std::thread> event_threads;
  for (int i = 0; i < std::max(1, impl_->options.io_threads); ++i) event_threads.emplace_back(run_events);
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->options.io_threads; ++i) threads.emplace_back(run_io);
  run_io();
  for (auto& t : threads) t.join();
  // Every session has ended (or the deadline passed). After shutdown() the
  // event streams were told to close and write their last chunk on the event
  // threads: a moment for that (they never wait on a client for long: the
  // last chunk has its own 500 ms write bound).
  if (impl_->stopping.load()) {
    const auto until = SteadyClock::now() + std::chrono::milliseconds(600);
    while (impl_->event_streams.open() > 0 && SteadyClock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->events_work.reset();
  impl_->events_ioc.stop();
  for (auto& t : event_threads) t.join();
  if (auto line = impl_->access.take_summary()) spdlog::info("{}", *line);
  return {};
}

void HttpServer::shutdown() {
  if (impl_) impl_->shutdown();
}

void HttpServer::stop() {
  if (!impl_) return;
  impl_->ioc.stop();
  impl_->events_ioc.stop();
}

}  // namespace memd
