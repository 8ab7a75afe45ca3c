// server/http/streamed_response.hpp — a response whose body is produced piece
// by piece, without holding a thread and without holding the whole body.
//
// A PieceSource hands out the body's pieces one at a time; write_streamed()
// sends the header, then writes piece N while the source produces piece N+1,
// so at most two pieces of a response are alive at once whatever its length:
// a slow reader holds two pieces of memory, never its whole answer. The
// source runs on the connection's strand; a source whose pieces come from
// work that may block (reading an allocation) co_spawns that work on the
// worker pool and awaits it, so the I/O thread is free meanwhile.
//
// With a known length the response carries Content-Length; without one it is
// chunked (Transfer-Encoding: chunked, ended by the last chunk), which is what
// server-sent events will use: an event source is a PieceSource whose next()
// waits for the next event.
//
// Thread safety: one response per connection, used on its strand only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>

#include "memd/error.hpp"

namespace memd {

using Piece = std::vector<std::byte>;

class PieceSource {
 public:
  virtual ~PieceSource() = default;
  // The body's next piece; an empty piece ends the body, an error aborts it
  // (the connection is closed, so the client sees a short body, never a
  // complete-looking wrong one). Awaited on the connection's strand: it must
  // not block (see the header comment).
  virtual boost::asio::awaitable<Result<Piece>> next() = 0;
};

struct StreamedResponse {
  // Status and fields; write_streamed sets Content-Length or chunked.
  boost::beast::http::response<boost::beast::http::empty_body> header;
  std::optional<std::uint64_t> length;  // nullopt: chunked
  std::unique_ptr<PieceSource> source;
};

struct StreamedResult {
  bool completed = false;        // every byte written; the connection may be kept
  std::uint64_t body_bytes = 0;  // body bytes written (chunk framing not counted)
  std::optional<Error> aborted;  // the source's error, when it ended the body early
};

// Writes the header and, unless head_only, the body. Each write (the header,
// each piece) must finish within piece_timeout: a reader may be slow, but not
// stalled. A source that yields more bytes than the promised length aborts
// the body with `internal`.
boost::asio::awaitable<StreamedResult> write_streamed(boost::beast::tcp_stream& stream, StreamedResponse& response,
                                                      bool head_only, std::chrono::milliseconds piece_timeout);

}  // namespace memd
