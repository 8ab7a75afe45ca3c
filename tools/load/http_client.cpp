#include "http_client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>

namespace memd::load {
namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::uint32_t kHeaderLimit = 16 * 1024;

}  // namespace

const char* failure_name(Failure f) {
  switch (f) {
    case Failure::none: return "none";
    case Failure::connect: return "connect";
    case Failure::timeout: return "timeout";
    case Failure::closed: return "closed";
    case Failure::protocol: return "protocol";
    case Failure::status: return "status";
    case Failure::body: return "body";
    case Failure::aborted: return "aborted";
  }
  return "unknown";
}

Failure classify(const beast::error_code& ec) {
  if (!ec) return Failure::none;
  if (ec == beast::error::timeout) return Failure::timeout;
  if (ec == asio::error::operation_aborted) return Failure::aborted;
  if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == asio::error::broken_pipe || ec == http::error::partial_message || ec == asio::error::not_connected ||
      ec == asio::error::bad_descriptor)
    return Failure::closed;
  return Failure::protocol;
}

asio::awaitable<Failure> Connection::connect(const tcp::endpoint& endpoint, Millis timeout, int rcvbuf) {
  close();
  buffer_.clear();
  beast::error_code ec;
  stream_.socket().open(endpoint.protocol(), ec);
  if (ec) co_return Failure::connect;  // out of descriptors, most likely
  if (rcvbuf > 0) stream_.socket().set_option(asio::socket_base::receive_buffer_size(rcvbuf), ec);
  stream_.expires_after(timeout);
  auto [e] = co_await stream_.async_connect(endpoint, kTuple);
  if (e) {
    const Failure f = e == beast::error::timeout ? Failure::timeout
                      : e == asio::error::operation_aborted ? Failure::aborted
                                                            : Failure::connect;
    close();
    co_return f;
  }
  stream_.socket().set_option(tcp::no_delay(true), ec);
  open_ = true;
  ++connects_;
  co_return Failure::none;
}

asio::awaitable<Reply> Connection::request(const RequestSpec& spec, Millis timeout) {
  Reply reply;
  if (!open_) {
    reply.failure = Failure::closed;
    reply.detail = "not connected";
    co_return reply;
  }
  http::request<http::buffer_body> req{spec.method, beast::string_view(spec.target.data(), spec.target.size()), 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::user_agent, "memd-load");
  req.set("X-Memd-Owner", beast::string_view(spec.owner.data(), spec.owner.size()));
  if (spec.admin) req.set("X-Memd-Admin", "true");
  if (!spec.session.empty()) req.set("X-Memd-Session", beast::string_view(spec.session.data(), spec.session.size()));
  if (!spec.content_type.empty())
    req.set(http::field::content_type, beast::string_view(spec.content_type.data(), spec.content_type.size()));
  req.keep_alive(!spec.close);
  req.body().data = const_cast<char*>(spec.body.data());
  req.body().size = spec.body.size();
  req.body().more = false;
  if (!spec.body.empty() || spec.method == http::verb::put || spec.method == http::verb::post)
    req.content_length(spec.body.size());

  stream_.expires_after(timeout);
  {
    auto [ec, n] = co_await http::async_write(stream_, req, kTuple);
    if (ec) {
      reply.failure = classify(ec);
      reply.detail = ec.message();
      close();
      co_return reply;
    }
  }
  http::response_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(spec.body_limit);
  {
    auto [ec, n] = co_await http::async_read(stream_, buffer_, parser, kTuple);
    if (ec) {
      reply.failure = classify(ec);
      reply.detail = ec.message();
      close();
      co_return reply;
    }
  }
  auto res = parser.release();
  reply.status = res.result_int();
  reply.keep_alive = res.keep_alive();
  reply.body = std::move(res.body());
  // With spec.close the caller waits for the server's close before closing
  // (so TIME_WAIT stays on the server's side); otherwise close at once.
  if (!reply.keep_alive || spec.close) {
    open_ = false;
    if (!spec.close) close();
  }
  co_return reply;
}

void Connection::close() {
  beast::error_code ignored;
  if (stream_.socket().is_open()) {
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }
  open_ = false;
}

void Connection::cancel() { stream_.cancel(); }

}  // namespace memd::load
