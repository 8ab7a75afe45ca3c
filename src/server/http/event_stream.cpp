// Server-sent events on one connection: wake-ups posted to its strand, the
// bus's shared frames written as chunks (event_stream.hpp).
#include "server/http/event_stream.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <fmt/format.h>

namespace memd {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using SteadyClock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Events per chunk: a reader far behind catches up in chunks of at most this
// many frames (a few tens of KiB), so one slow stream never holds a large
// batch of pointers into the ring.
constexpr std::size_t kBatch = 128;
// The comment sent after event_keepalive without an event, as one chunk.
constexpr std::string_view kKeepAliveChunk = "e\r\n: keep-alive\n\n\r\n";
constexpr std::string_view kLastChunk = "0\r\n\r\n";
constexpr std::string_view kCrlf = "\r\n";
// How long the last chunk may take at shutdown (then the socket just closes).
constexpr auto kCloseWrite = std::chrono::milliseconds(500);

// A non-owning view of buffers, so async_write copies two pointers rather
// than a vector (which it would, once per write).
struct BufferRange {
  using value_type = asio::const_buffer;
  using const_iterator = const asio::const_buffer*;
  const asio::const_buffer* first = nullptr;
  const asio::const_buffer* last = nullptr;
  const_iterator begin() const noexcept { return first; }
  const_iterator end() const noexcept { return last; }
};

asio::awaitable<bool> write_buffers(beast::tcp_stream& stream, const std::vector<asio::const_buffer>& buffers,
                                    std::chrono::milliseconds timeout) {
  // A stalled reader: the stream closes the socket when the write is not
  // done in time (a slow one keeps up: the ring absorbs what it has not
  // read, and it hears of what fell off the ring).
  stream.expires_after(timeout);
  const BufferRange range{buffers.data(), buffers.data() + buffers.size()};
  auto [ec, n] = co_await asio::async_write(stream, range, kTuple);
  co_return !ec;
}

asio::awaitable<bool> write_text(beast::tcp_stream& stream, std::string_view text, std::chrono::milliseconds timeout) {
  stream.expires_after(timeout);
  auto [ec, n] = co_await asio::async_write(stream, asio::buffer(text.data(), text.size()), kTuple);
  co_return !ec;
}

}  // namespace

// What the publisher's notify and the strand share. The flags are atomics
// (set from any thread); timer and peer_gone are touched on the strand only.
struct EventStreamState : std::enable_shared_from_this<EventStreamState> {
  explicit EventStreamState(asio::any_io_executor e) : executor(std::move(e)) {}

  // From the publisher's thread (the bus's notify): one post per burst.
  void wake() {
    if (wake_posted.exchange(true, std::memory_order_acq_rel)) return;
    asio::post(executor, [self = shared_from_this()] {
      self->wake_posted.store(false, std::memory_order_release);
      if (self->timer != nullptr) self->timer->cancel();
    });
  }
  // From shutdown's thread.
  void close() {
    closing.store(true, std::memory_order_release);
    asio::post(executor, [self = shared_from_this()] {
      if (self->timer != nullptr) self->timer->cancel();
    });
  }

  asio::any_io_executor executor;
  std::atomic<bool> wake_posted{false};
  std::atomic<bool> closing{false};
  asio::steady_timer* timer = nullptr;  // while the stream waits for events
  bool peer_gone = false;
};

// A stream in EventStreams' list for its lifetime (so close_all reaches it).
class EventStreamRegistration {
 public:
  EventStreamRegistration(EventStreams& streams, const std::shared_ptr<EventStreamState>& state)
      : streams_(streams), state_(state.get()) {
    std::lock_guard lock(streams_.mu_);
    if (streams_.closing_) state->closing.store(true);
    streams_.streams_.push_back(state);
  }
  ~EventStreamRegistration() {
    std::lock_guard lock(streams_.mu_);
    std::erase_if(streams_.streams_, [this](const std::weak_ptr<EventStreamState>& w) {
      auto s = w.lock();
      return s == nullptr || s.get() == state_;
    });
  }
  EventStreamRegistration(const EventStreamRegistration&) = delete;
  EventStreamRegistration& operator=(const EventStreamRegistration&) = delete;

 private:
  EventStreams& streams_;
  const EventStreamState* state_;
};

bool EventStreams::reserve() {
  std::lock_guard lock(mu_);
  if (closing_ || reserved_ >= max_) return false;
  ++reserved_;
  return true;
}

void EventStreams::release() {
  std::lock_guard lock(mu_);
  if (reserved_ > 0) --reserved_;
}

void EventStreams::close_all() {
  std::vector<std::shared_ptr<EventStreamState>> open;
  {
    std::lock_guard lock(mu_);
    closing_ = true;
    for (const auto& w : streams_)
      if (auto s = w.lock()) open.push_back(std::move(s));
  }
  for (const auto& s : open) s->close();
}

std::size_t EventStreams::open() const {
  std::lock_guard lock(mu_);
  return reserved_;
}

asio::awaitable<EventStreamResult> serve_event_stream(beast::tcp_stream& stream,
                                                      std::shared_ptr<Subscription> subscription,
                                                      EventStreams& streams, EventStreamOptions options) {
  EventStreamResult result;
  auto state = std::make_shared<EventStreamState>(stream.get_executor());
  EventStreamRegistration registration(streams, state);
  subscription->set_notify([state] { state->wake(); });

  {
    http::response<http::empty_body> header{http::status::ok, options.http_version};
    header.set(http::field::content_type, "text/event-stream");
    header.set(http::field::cache_control, "no-cache");
    header.set("X-Accel-Buffering", "no");  // reverse proxies: pass events through at once
    header.keep_alive(false);                // the connection ends with its stream
    header.chunked(true);
    http::response_serializer<http::empty_body> serializer{header};
    stream.expires_after(options.write_timeout);
    auto [ec, n] = co_await http::async_write_header(stream, serializer, kTuple);
    if (ec) co_return result;
  }

  asio::steady_timer timer(stream.get_executor());
  state->timer = &timer;
  // The client closing its end makes the socket readable: the stream ends
  // then, not at its next write (which may be a keep-alive 15 s away).
  stream.socket().async_wait(asio::socket_base::wait_read, [state](const beast::error_code&) {
    state->peer_gone = true;
    if (state->timer != nullptr) state->timer->cancel();
  });

  std::vector<EventPtr> batch;
  batch.reserve(kBatch);
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(kBatch + 3);
  std::string lost_text;
  char chunk_size[24];
  auto last_write = SteadyClock::now();

  for (;;) {
    if (state->closing.load(std::memory_order_acquire)) {
      result.closed_by_server = true;
      break;
    }
    if (state->peer_gone) break;
    const std::uint64_t before = subscription->cursor();
    subscription->poll_into(batch, kBatch);
    const std::uint64_t lost = subscription->take_gap();
    if (batch.empty() && lost == 0) {
      // Polling and starting the wait happen in one run on the strand, so a
      // wake-up posted after the poll finds the wait and cancels it.
      timer.expires_at(last_write + options.keepalive);
      auto [ec] = co_await timer.async_wait(kTuple);
      if (ec || state->closing.load(std::memory_order_acquire) || state->peer_gone) continue;
      if (!co_await write_text(stream, kKeepAliveChunk, options.write_timeout)) break;
      last_write = SteadyClock::now();
      continue;
    }
    buffers.clear();
    buffers.emplace_back();  // the chunk's size line, filled below
    std::size_t size = 0;
    if (lost != 0) {
      // The comment for people reading the raw stream, the event for
      // programs: how many were lost and the oldest sequence still there.
      lost_text = fmt::format(": lost {} events\nevent: lost\ndata: {{\"lost\":{},\"resumeFrom\":{}}}\n\n", lost,
                              lost, before + lost + 1);
      buffers.emplace_back(lost_text.data(), lost_text.size());
      size += lost_text.size();
    }
    for (const EventPtr& e : batch) {
      buffers.emplace_back(e->sse_frame.data(), e->sse_frame.size());
      size += e->sse_frame.size();
    }
    auto [end, ec] = std::to_chars(chunk_size, chunk_size + sizeof chunk_size - 2, size, 16);
    *end++ = '\r';
    *end++ = '\n';
    buffers.front() = asio::const_buffer(chunk_size, static_cast<std::size_t>(end - chunk_size));
    buffers.emplace_back(kCrlf.data(), kCrlf.size());
    const bool written = co_await write_buffers(stream, buffers, options.write_timeout);
    const std::size_t sent = batch.size();
    batch.clear();  // the ring's events, not held until the next poll
    if (!written) break;
    result.events += sent;
    result.bytes += size;
    last_write = SteadyClock::now();
  }

  state->timer = nullptr;
  subscription.reset();  // unsubscribed now, whatever the connection does next
  beast::error_code ignored;
  stream.socket().cancel(ignored);  // the readability wait
  if (result.closed_by_server && !state->peer_gone) co_await write_text(stream, kLastChunk, kCloseWrite);
  co_return result;
}

asio::awaitable<EventStreamResult> serve_event_stream(asio::ip::tcp::socket socket,
                                                      std::shared_ptr<Subscription> subscription,
                                                      EventStreams& streams, EventStreamOptions options) {
  beast::tcp_stream stream(std::move(socket));
  const EventStreamResult result = co_await serve_event_stream(stream, std::move(subscription), streams, options);
  beast::error_code ignored;
  stream.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  co_return result;
}

}  // namespace memd
