// tools/memd/event_client.hpp — the client side of GET /api/memory/events.
//
// One server-sent event stream of a running daemon, read with SseReader
// (protocol/sse.hpp): `memd events`, `memd watch` and the stdio bridge's
// relay of memory_subscribe all read events through it. run() blocks on the
// stream and hands every message to the callback on the calling thread;
// stop(), from any thread, ends it at once (the socket is shut, so even a
// stream waiting for its next keep-alive returns).
//
// Thread safety: run() on one thread; stop() from any.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "api_client.hpp"
#include "memd/error.hpp"
#include "protocol/sse.hpp"

namespace httplib {
class Client;
}

namespace memd::cli {

struct EventQuery {
  std::string kinds;   // "" : every kind
  std::string device;  // "" : every device
  std::optional<std::uint64_t> last_event_id;
};

// The target of a query: /api/memory/events?kinds=…&deviceId=…
std::string events_target(const EventQuery& query);

enum class StreamEnd {
  Stopped,        // the callback returned false, or stop()
  ServerClosed,   // the daemon ended the stream cleanly (shutdown)
};

class EventClient {
 public:
  explicit EventClient(ClientOptions options);
  ~EventClient();
  EventClient(const EventClient&) = delete;
  EventClient& operator=(const EventClient&) = delete;

  // Streams until the callback returns false, stop(), or the stream ends.
  // An error: the daemon refused (its code and message), could not be
  // reached, or the stream broke off (unavailable).
  Result<StreamEnd> run(const EventQuery& query, const std::function<bool(const SseMessage&)>& on_message);
  void stop();
  // The id of the last message received ("" before any): where to resume.
  std::string last_id() const;

 private:
  ClientOptions options_;
  std::atomic<bool> stopped_{false};
  mutable std::mutex mu_;
  std::shared_ptr<httplib::Client> client_;  // while run() streams
  std::string last_id_;
};

}  // namespace memd::cli
