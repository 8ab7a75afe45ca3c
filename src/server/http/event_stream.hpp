// server/http/event_stream.hpp — GET /api/memory/events: one subscription of
// the event bus written to one connection as server-sent events.
//
// The bus encodes each event once (MemoryEvent::sse_frame); a stream writes
// those shared strings straight from the ring, several per chunk, with the
// chunk framing in a few bytes of its own: a thousand subscribers cost a
// thousand writes of the same bytes, no encoding and no copy per subscriber.
// Between writes a stream holds no coroutine work: it waits on a timer (the
// keep-alive deadline) that a publication cancels. The bus calls the
// subscription's notify on the publisher's thread; notify only posts one
// wake-up to the connection's strand (an atomic flag coalesces a burst into
// one post), so a publisher never blocks on a subscriber and a thousand
// subscribers cost one post each per burst, not per event.
//
// A slow reader costs no memory: the ring is the buffer. Each write must
// finish within the write timeout (the stream is cut otherwise), and a
// reader that falls further behind than the ring is told with a `lost`
// event ({"lost": N, "resumeFrom": oldest sequence available}) after a
// comment `: lost N events`. A readable socket (the client closed it) ends
// the stream at once, so the subscription goes with its client. Server
// shutdown ends every stream at once (close_all): a never-ending response
// must not hold the graceful drain.
//
// Thread safety: EventStreams is thread-safe; serve_event_stream runs on
// the connection's strand.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "monitor/event_bus.hpp"

namespace memd {

struct EventStreamState;

// The open streams: the cap, and the list shutdown closes.
class EventStreams {
 public:
  explicit EventStreams(std::size_t max_streams) : max_(max_streams) {}
  // A place for one more stream; false when max_streams are open or the
  // server is closing. Every successful reserve() is paired with release().
  bool reserve();
  void release();
  // Ends every open stream at once (their last chunk is sent), and every
  // stream that starts from now on.
  void close_all();
  std::size_t open() const;
  std::size_t max() const noexcept { return max_; }

 private:
  friend struct EventStreamState;
  friend class EventStreamRegistration;
  const std::size_t max_;
  mutable std::mutex mu_;
  std::size_t reserved_ = 0;
  bool closing_ = false;
  std::vector<std::weak_ptr<EventStreamState>> streams_;
};

struct EventStreamOptions {
  std::chrono::milliseconds keepalive{15'000};
  std::chrono::milliseconds write_timeout{30'000};
  unsigned http_version = 11;
};

struct EventStreamResult {
  std::uint64_t bytes = 0;   // body bytes written (chunk framing not counted)
  std::uint64_t events = 0;  // events written
  bool closed_by_server = false;
};

// Writes the header (200, text/event-stream, no-cache, chunked) and the
// subscription's events until the client goes, a write stalls past the
// timeout, or close_all(). The connection is not reused afterwards.
boost::asio::awaitable<EventStreamResult> serve_event_stream(boost::beast::tcp_stream& stream,
                                                             std::shared_ptr<Subscription> subscription,
                                                             EventStreams& streams, EventStreamOptions options);

// The same, owning the connection's socket: for a stream moved onto the
// event I/O thread (http_server.cpp), which closes the socket at the end.
boost::asio::awaitable<EventStreamResult> serve_event_stream(boost::asio::ip::tcp::socket socket,
                                                             std::shared_ptr<Subscription> subscription,
                                                             EventStreams& streams, EventStreamOptions options);

}  // namespace memd
