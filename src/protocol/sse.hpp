// protocol/sse.hpp — server-sent events: what a subscription asks for, and
// the client side of the stream.
//
// The server side of a frame is one string the bus encodes once per event
// (monitor/event.hpp). Here are the two parsers around it:
//   * parse_event_filter — a subscription's filter from its parameters, the
//     same for `GET /api/memory/events?kinds=…&deviceId=…` and stdio's
//     `memory_subscribe {"kinds": "…", "deviceId": "…"}`: kinds is a
//     comma-separated list of event names (unknown names are refused, so a
//     typo never silently subscribes to nothing), deviceId one device;
//   * parse_last_event_id — the Last-Event-ID header (or `lastEventId`
//     parameter): a decimal sequence number;
//   * SseReader — an incremental reader of an event stream for clients
//     (memd events, memd watch, the load client, the stdio bridge), per the
//     WHATWG grammar: fields `id`, `event`, `data` (joined by newlines),
//     comments from ':', LF / CRLF / CR line ends, a blank line dispatches.
//     Lines over its limit are an error, so a hostile server cannot make a
//     client buffer without bound.
//
// Thread safety: the functions are pure; an SseReader is one stream's state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "memd/error.hpp"
#include "monitor/event.hpp"

namespace memd {

Result<EventFilter> parse_event_filter(std::optional<std::string_view> kinds,
                                       std::optional<std::string_view> device);
Result<std::uint64_t> parse_last_event_id(std::string_view text);

struct SseMessage {
  std::string id;     // the last id seen on the stream (SSE keeps it across messages)
  std::string event;  // "message" when the frame names none
  std::string data;
};

class SseReader {
 public:
  explicit SseReader(std::size_t max_line = 1 << 20) : max_line_(max_line) {}
  // Feeds bytes; appends every message they complete. invalid_argument when
  // a line passes the limit (the reader is then spent).
  Result<void> feed(std::string_view bytes, std::vector<SseMessage>& out);
  // Comments seen so far (":" lines): servers use them as keep-alives and
  // to say that events were lost.
  const std::vector<std::string>& comments() const noexcept { return comments_; }
  void clear_comments() { comments_.clear(); }

 private:
  void line(std::string_view text, std::vector<SseMessage>& out);

  const std::size_t max_line_;
  std::string partial_;
  bool after_cr_ = false;
  bool failed_ = false;
  std::string last_id_, event_, data_;
  bool has_data_ = false;
  std::vector<std::string> comments_;
};

}  // namespace memd
