// load/http_client.hpp — one HTTP/1.1 client connection of memd-load.
//
// Boost.Beast over Asio coroutines. Each request has one deadline from its
// first byte written to its last byte read; the connection is closed after
// any failure and after an answer that does not keep it alive, so the next
// request reconnects. Failures are sorted into the kinds the report counts.
//
// g++ 12 destroys some temporaries of a co_await expression twice (the
// server's note in src/server/http says the same): requests are built in
// named variables and passed by reference, and nothing with a destructor is
// a temporary inside a co_await expression here.
//
// Thread safety: a Connection belongs to one coroutine on one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/verb.hpp>

namespace memd::load {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Millis = std::chrono::milliseconds;

enum class Failure {
  none,
  connect,   // connect() refused or failed
  timeout,   // no complete answer within the deadline
  closed,    // the peer closed or reset the connection mid-request
  protocol,  // a malformed or over-long answer
  status,    // an answer with an unexpected HTTP status (the caller decides)
  body,      // an answer of the wrong size or shape (the caller decides)
  aborted,   // memd-load itself cancelled it (shutting down)
};
const char* failure_name(Failure f);
Failure classify(const beast::error_code& ec);

struct RequestSpec {
  http::verb method = http::verb::get;
  std::string_view target;
  std::string_view body;          // sent as is; empty: no body
  std::string_view content_type;  // empty: none
  std::uint64_t body_limit = 1 << 20;  // largest answer body accepted
  bool close = false;  // ask the server to close after answering; the caller closes the socket
  std::string_view owner = "memd-load";  // X-Memd-Owner
  bool admin = false;                    // X-Memd-Admin: true (loopback without tokens)
  std::string_view session;              // X-Memd-Session (empty: none)
};

struct Reply {
  Failure failure = Failure::none;
  unsigned status = 0;
  bool keep_alive = false;
  std::string body;
  std::string detail;  // the error's message, for the first few failures
};

class Connection {
 public:
  // buffer_limit bounds what is read ahead of the parser (slow readers).
  explicit Connection(const asio::any_io_executor& executor, std::size_t buffer_limit = 0)
      : stream_(executor), buffer_(buffer_limit ? buffer_limit : std::numeric_limits<std::size_t>::max()) {}

  bool is_open() const { return open_; }
  // Successful connects so far (a client's first is not a reconnect).
  std::uint64_t connects() const { return connects_; }
  // Opens a socket (with SO_RCVBUF = rcvbuf when > 0, set before connecting
  // so the window is small from the start) and connects within `timeout`.
  asio::awaitable<Failure> connect(const tcp::endpoint& endpoint, Millis timeout, int rcvbuf = 0);
  // One request and its whole answer within `timeout`; closes on failure or
  // when the answer does not keep the connection alive.
  asio::awaitable<Reply> request(const RequestSpec& spec, Millis timeout);
  void close();
  // Cancels what is pending (the owner's coroutine sees `aborted`).
  void cancel();

  beast::tcp_stream& stream() { return stream_; }
  beast::flat_buffer& buffer() { return buffer_; }
  void set_closed() { open_ = false; }

 private:
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  bool open_ = false;
  std::uint64_t connects_ = 0;
};

}  // namespace memd::load
