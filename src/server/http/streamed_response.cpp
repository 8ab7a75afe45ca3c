// Writing a streamed response: header, then pieces, one written while the
// next is produced.
#include "server/http/streamed_response.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>

namespace memd {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// (g++ 12 destroys some temporaries of a co_await expression twice: every
// object with a destructor is named before the co_await that uses it.)
asio::awaitable<beast::error_code> write_piece(beast::tcp_stream& stream, const Piece& piece, bool chunked,
                                               std::chrono::milliseconds timeout) {
  stream.expires_after(timeout);
  if (chunked) {
    const auto chunk = http::make_chunk(asio::buffer(piece));
    auto [ec, n] = co_await asio::async_write(stream, chunk, kTuple);
    co_return ec;
  }
  const auto bytes = asio::buffer(piece);
  auto [ec, n] = co_await asio::async_write(stream, bytes, kTuple);
  co_return ec;
}

}  // namespace

asio::awaitable<StreamedResult> write_streamed(beast::tcp_stream& stream, StreamedResponse& response, bool head_only,
                                               std::chrono::milliseconds piece_timeout) {
  using namespace asio::experimental::awaitable_operators;
  StreamedResult out;
  const bool chunked = !response.length.has_value();
  if (chunked) response.header.chunked(true);
  else response.header.content_length(*response.length);

  http::response_serializer<http::empty_body> serializer{response.header};
  stream.expires_after(piece_timeout);
  {
    auto [ec, n] = co_await http::async_write_header(stream, serializer, kTuple);
    if (ec) co_return out;
  }
  if (head_only) {
    out.completed = true;
    co_return out;
  }

  Result<Piece> piece = co_await response.source->next();
  for (;;) {
    if (!piece) {
      out.aborted = piece.error();
      co_return out;
    }
    if (piece->empty()) break;
    if (response.length && out.body_bytes + piece->size() > *response.length) {
      out.aborted = Error{ErrorCode::internal, "a streamed body ran past its Content-Length"};
      co_return out;
    }
    // Two pieces alive: this one on the wire, the next one being produced.
    auto both = write_piece(stream, *piece, chunked, piece_timeout) && response.source->next();
    auto [ec, next] = co_await std::move(both);
    if (ec) co_return out;
    out.body_bytes += piece->size();
    piece = std::move(next);
  }
  if (response.length && out.body_bytes != *response.length) {
    out.aborted = Error{ErrorCode::internal, "a streamed body ended before its Content-Length"};
    co_return out;
  }
  if (chunked) {
    stream.expires_after(piece_timeout);
    const auto last = http::make_chunk_last();
    auto [ec, n] = co_await asio::async_write(stream, last, kTuple);
    if (ec) co_return out;
  }
  out.completed = true;
  co_return out;
}

}  // namespace memd
