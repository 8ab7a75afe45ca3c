// A server-sent event stream of memd serve, read with SseReader.
#include "event_client.hpp"

#include <httplib.h>

#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"

namespace memd::cli {
namespace {
// The daemon sends a comment at least every 15 s; a stream silent four
// times as long is dead.
constexpr int kReadTimeoutSeconds = 60;
// An error answer is read up to this much.
constexpr std::size_t kMaxErrorBody = 64 * 1024;
}  // namespace

std::string events_target(const EventQuery& query) {
  std::string target = "/api/memory/events";
  auto add = [&](const char* key, const std::string& value) {
    target += (target.find('?') == std::string::npos ? "?" : "&");
    target += key;
    target += "=" + url_encode(value);
  };
  if (!query.kinds.empty()) add("kinds", query.kinds);
  if (!query.device.empty()) add("deviceId", query.device);
  if (query.last_event_id) add("lastEventId", std::to_string(*query.last_event_id));
  return target;
}

EventClient::EventClient(ClientOptions options) : options_(std::move(options)) {}

EventClient::~EventClient() = default;

void EventClient::stop() {
  stopped_.store(true);
  std::lock_guard lock(mu_);
  if (client_) client_->stop();
}

std::string EventClient::last_id() const {
  std::lock_guard lock(mu_);
  return last_id_;
}

Result<StreamEnd> EventClient::run(const EventQuery& query,
                                   const std::function<bool(const SseMessage&)>& on_message) {
  try {
    auto client = std::make_shared<httplib::Client>(options_.url);
    if (!client->is_valid()) return fail(ErrorCode::invalid_argument, "invalid daemon URL '{}'", options_.url);
    client->set_connection_timeout(3, 0);
    client->set_read_timeout(kReadTimeoutSeconds, 0);
    httplib::Headers headers{{"Accept", "text/event-stream"}};
    if (!options_.token.empty()) headers.emplace("Authorization", "Bearer " + options_.token);
    if (!options_.owner.empty()) headers.emplace("X-Memd-Owner", options_.owner);
    if (options_.admin) headers.emplace("X-Memd-Admin", "true");
    if (!options_.session.empty()) headers.emplace("X-Memd-Session", options_.session);
    {
      std::lock_guard lock(mu_);
      if (stopped_.load()) return StreamEnd::Stopped;
      client_ = client;
    }
    SseReader reader;
    std::vector<SseMessage> messages;
    int status = 0;
    std::string error_body;
    bool callback_stopped = false;
    std::optional<Error> broken;
    auto on_header = [&](const httplib::Response& res) {
      status = res.status;
      return true;
    };
    auto on_bytes = [&](const char* data, std::size_t size) {
      if (stopped_.load()) return false;
      if (status != 200) {
        error_body.append(data, std::min(size, kMaxErrorBody - std::min(kMaxErrorBody, error_body.size())));
        return true;
      }
      messages.clear();
      if (auto fed = reader.feed(std::string_view(data, size), messages); !fed) {
        broken = fed.error();
        return false;
      }
      reader.clear_comments();
      for (const auto& m : messages) {
        {
          std::lock_guard lock(mu_);
          last_id_ = m.id;
        }
        if (!on_message(m)) {
          callback_stopped = true;
          return false;
        }
      }
      return true;
    };
    httplib::Result res = client->Get(events_target(query), headers, on_header, on_bytes);
    {
      std::lock_guard lock(mu_);
      client_.reset();
    }
    if (callback_stopped || stopped_.load()) return StreamEnd::Stopped;
    if (broken) return fail(ErrorCode::unavailable, "the event stream broke: {}", broken->message);
    if (status != 0 && status != 200) {
      auto json = parse_request_json(error_body);
      if (json && json->is_object() && json->contains("error") && (*json)["error"].is_object()) {
        const auto& e = (*json)["error"];
        return fail(parse_error_code(e.value("code", "internal")).value_or(ErrorCode::internal), "{}",
                    e.value("message", "unknown error"));
      }
      return fail(ErrorCode::internal, "memd answered HTTP {}", status);
    }
    if (!res)
      return fail(ErrorCode::unavailable, "event stream from {}: {}", options_.url, httplib::to_string(res.error()));
    return StreamEnd::ServerClosed;
  } catch (const std::exception& e) {
    return fail(ErrorCode::internal, "event stream failed: {}", e.what());
  }
}

}  // namespace memd::cli
