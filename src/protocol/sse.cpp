// Parsers of subscriptions and of event streams (protocol/sse.hpp).
#include "protocol/sse.hpp"

#include <charconv>

namespace memd {

Result<EventFilter> parse_event_filter(std::optional<std::string_view> kinds,
                                       std::optional<std::string_view> device) {
  EventFilter filter;
  if (kinds) {
    std::string_view rest = *kinds;
    if (rest.empty()) return fail(ErrorCode::invalid_argument, "kinds is empty; leave it out for every kind");
    while (true) {
      const auto comma = rest.find(',');
      const std::string_view name = rest.substr(0, comma);
      auto kind = parse_event_kind(name);
      if (!kind) {
        std::string known;
        for (EventKind k : all_event_kinds()) known += (known.empty() ? "" : ", ") + std::string(to_string(k));
        return fail(ErrorCode::invalid_argument, "kinds: '{}' is not an event kind (known: {})",
                    name.substr(0, 64), known);
      }
      filter.add(*kind);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  if (device) {
    auto id = DeviceId::parse(*device);
    if (!id) return fail(ErrorCode::invalid_argument, "deviceId: {}", id.error().message);
    filter.device = *id;
  }
  return filter;
}

Result<std::uint64_t> parse_last_event_id(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size())
    return fail(ErrorCode::invalid_argument, "Last-Event-ID must be an event's sequence number (decimal), not '{}'",
                text.substr(0, 32));
  return value;
}

Result<void> SseReader::feed(std::string_view bytes, std::vector<SseMessage>& out) {
  if (failed_) return fail(ErrorCode::invalid_argument, "the event stream already broke its line limit");
  for (char c : bytes) {
    if (after_cr_) {
      after_cr_ = false;
      if (c == '\n') continue;  // CRLF: the CR ended the line
    }
    if (c == '\r' || c == '\n') {
      after_cr_ = c == '\r';
      line(partial_, out);
      partial_.clear();
      if (failed_) return fail(ErrorCode::invalid_argument, "an event's data passed {} bytes", 4 * max_line_);
      continue;
    }
    if (partial_.size() >= max_line_) {
      failed_ = true;
      return fail(ErrorCode::invalid_argument, "an event stream line passed {} bytes", max_line_);
    }
    partial_.push_back(c);
  }
  return {};
}

void SseReader::line(std::string_view text, std::vector<SseMessage>& out) {
  if (text.empty()) {
    if (has_data_) out.push_back(SseMessage{last_id_, event_.empty() ? "message" : event_, data_});
    event_.clear();
    data_.clear();
    has_data_ = false;
    return;
  }
  if (text.front() == ':') {
    text.remove_prefix(1);
    if (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    if (comments_.size() < 1024) comments_.emplace_back(text);
    return;
  }
  const auto colon = text.find(':');
  const std::string_view field = text.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    // One event's data is bounded too (many short data lines add up).
    if (data_.size() + value.size() + 1 > 4 * max_line_) {
      failed_ = true;
      return;
    }
    if (has_data_) data_.push_back('\n');
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_.assign(value);
  }
  // "retry" and unknown fields are ignored, as the grammar says.
}

}  // namespace memd
