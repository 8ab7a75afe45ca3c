// Writing a streamed response: header, then pieces, one written while the
// next is produced.
#include "server/http/streamed_response.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>

#if defined(__linux__)
#include <linux/sockios.h>
#include <sys/ioctl.h>
#endif

namespace memd {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Bytes in the socket's send queue not yet acknowledged by the peer (0
// where the platform cannot tell: progress is then what the kernel accepts).
std::uint64_t unacked_bytes(beast::tcp_stream& stream) {
#if defined(__linux__)
  int queued = 0;
  if (::ioctl(stream.socket().native_handle(), SIOCOUTQ, &queued) == 0 && queued > 0)
    return static_cast<std::uint64_t>(queued);
#endif
  return 0;
}

// A piece write's progress, as the peer sees it: bytes the peer has taken
// since the write began (queued before + accepted since - still queued).
struct PieceProgress {
  std::uint64_t queued_at_start = 0;
  std::uint64_t accepted = 0;  // by the kernel, from this piece
  std::uint64_t delivered(beast::tcp_stream& stream) const {
    const std::uint64_t now = unacked_bytes(stream);
    const std::uint64_t sent = queued_at_start + accepted;
    return sent > now ? sent - now : 0;
  }
};

// Watches a pending piece write: returns when the peer has taken fewer than
// `floor` bytes over the last `timeout` (the write is then cancelled), and
// is cancelled itself when the write finishes first. The timeout is not on
// the piece write's own duration: under TCP memory pressure the kernel
// shrinks the send buffer and keeps the socket unwritable until much of its
// queue drains, so a reader taking 32 KiB/s can wait more than 30 s for
// room for one piece while draining a megabyte.
asio::awaitable<void> watch_piece(beast::tcp_stream& stream, const PieceProgress& progress, std::uint64_t floor,
                                  std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  constexpr std::size_t kChecks = 4;  // per timeout
  const auto period = std::max<std::chrono::milliseconds>(timeout / kChecks, std::chrono::milliseconds(1));
  // delivered() at the last kChecks + 1 checks, oldest first.
  std::array<std::uint64_t, kChecks + 1> seen{};
  std::size_t checks = 0;
  const auto start = Clock::now();
  asio::steady_timer timer(stream.get_executor());
  for (;;) {
    timer.expires_after(period);
    auto [ec] = co_await timer.async_wait(kTuple);
    if (ec) co_return;  // the write finished
    const std::uint64_t delivered = progress.delivered(stream);
    std::rotate(seen.begin(), seen.begin() + 1, seen.end());
    seen.back() = delivered;
    ++checks;
    if (Clock::now() - start < timeout) continue;
    const std::uint64_t window_start = checks > kChecks ? seen.front() : 0;
    if (delivered - window_start >= floor) continue;
    spdlog::debug("http: a piece write stalled: the peer took {} bytes in the last {} ms (at least {} wanted), "
                  "{} of the piece's bytes accepted, {} bytes queued",
                  delivered - window_start, timeout.count(), floor, progress.accepted, unacked_bytes(stream));
    beast::error_code ignored;
    stream.socket().cancel(ignored);
    co_return;
  }
}

// (g++ 12 destroys some temporaries of a co_await expression twice: every
// object with a destructor is named before the co_await that uses it.)
template <class Buffers>
asio::awaitable<beast::error_code> write_watched(beast::tcp_stream& stream, const Buffers& buffers, std::uint64_t floor,
                                                 std::chrono::milliseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  PieceProgress progress;
  progress.queued_at_start = unacked_bytes(stream);
  stream.expires_never();  // the watch is the timeout
  auto note = [&progress](const beast::error_code& ec, std::size_t total) -> std::size_t {
    progress.accepted = total;
    return ec ? 0 : std::size_t{1} << 20;
  };
  beast::error_code result;
  auto write = [&]() -> asio::awaitable<void> {
    auto [ec, n] = co_await asio::async_write(stream, buffers, note, kTuple);
    result = ec;
  };
  auto written = write();
  auto watched = watch_piece(stream, progress, floor, timeout);
  auto either = std::move(written) || std::move(watched);
  const auto which = co_await std::move(either);
  if (which.index() == 1) {
    // The watch gave up and cancelled the socket; the write ended with it.
    co_return beast::error::timeout;
  }
  co_return result;
}

asio::awaitable<beast::error_code> write_piece(beast::tcp_stream& stream, const Piece& piece, bool chunked,
                                               std::chrono::milliseconds timeout) {
  // The policy: a reader may be slow, but it must take a piece's worth of
  // bytes in every `timeout` while a piece waits.
  const std::uint64_t floor = piece.size();
  if (chunked) {
    const auto chunk = http::make_chunk(asio::buffer(piece));
    co_return co_await write_watched(stream, chunk, floor, timeout);
  }
  const auto bytes = asio::buffer(piece);
  co_return co_await write_watched(stream, bytes, floor, timeout);
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
