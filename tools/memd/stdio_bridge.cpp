// The stdio door as a bridge to a running daemon: local framing, one
// `POST /api/stdio` per line, a session whose lease a heartbeat renews.
#include "stdio_bridge.hpp"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "api_client.hpp"
#include "event_client.hpp"
#include "memd/size.hpp"
#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"
#include "protocol/sse.hpp"
#include "server/stdio/line_writer.hpp"
#include "server/stdio/stdio_server.hpp"

namespace memd::cli {
namespace {

// One keep-alive connection to the daemon with the bridge's headers.
class Connection {
 public:
  Connection(const BridgeFlags& flags, std::string owner) : client_(flags.url) {
    client_.set_keep_alive(true);
    client_.set_connection_timeout(3, 0);
    // A line may carry a large write or read: the daemon's own timeouts bound it.
    client_.set_read_timeout(300, 0);
    client_.set_write_timeout(300, 0);
    if (!flags.token.empty()) headers_.emplace("Authorization", "Bearer " + flags.token);
    headers_.emplace("X-Memd-Owner", std::move(owner));
    if (flags.admin) headers_.emplace("X-Memd-Admin", "true");
  }

  bool valid() const { return client_.is_valid(); }
  void set_session(const std::string& id) { headers_.emplace("X-Memd-Session", id); }

  // The raw answer of a request (status and body), or why there is none.
  Result<httplib::Response> send(const std::string& method, const std::string& target, const std::string& body) {
    httplib::Result res = [&] {
      if (method == "DELETE") return client_.Delete(target, headers_);
      if (method == "PUT") return client_.Put(target, headers_, body, "application/json");
      return client_.Post(target, headers_, body, "application/json");
    }();
    if (!res) return fail(ErrorCode::unavailable, "cannot reach memd: {}", httplib::to_string(res.error()));
    return *res;
  }

  // A JSON call: the result object, or the daemon's error as an Error.
  Result<nlohmann::json> call(const std::string& method, const std::string& target, const nlohmann::json& body) {
    auto res = send(method, target, to_wire_text(body));
    if (!res) return fail(res.error());
    auto json = parse_request_json(res->body);
    if (res->status >= 200 && res->status < 300 && json) return std::move(*json);
    if (json && json->is_object() && json->contains("error") && (*json)["error"].is_object()) {
      const auto& e = (*json)["error"];
      return fail(parse_error_code(e.value("code", "internal")).value_or(ErrorCode::internal), "{}",
                  e.value("message", "unknown error"));
    }
    return fail(ErrorCode::internal, "memd answered HTTP {}", res->status);
  }

 private:
  httplib::Client client_;
  httplib::Headers headers_;
};

// The answer to a line the daemon could not answer: the in-process door's
// error shape, with the line's id when it has one.
std::string local_error(std::string_view line, const Error& error) {
  nlohmann::json id = nullptr;
  if (auto request = parse_request_json(line); request && request->is_object())
    if (auto it = request->find("id"); it != request->end()) id = *it;
  return to_wire_text({{"id", id}, {"ok", false}, {"error", error_object(error)}});
}

// Renews the lease every third of its TTL until stopped.
class Heartbeat {
 public:
  Heartbeat(const BridgeFlags& flags, const std::string& owner, std::string session)
      : connection_(flags, owner), path_("/api/sessions/" + url_encode(session)),
        every_(std::max(1, flags.ttl_seconds / 3)), thread_([this] { loop(); }) {}
  ~Heartbeat() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::seconds(every_), [this] { return stop_; })) {
      lock.unlock();
      if (auto ok = connection_.call("PUT", path_, nlohmann::json::object()); !ok)
        spdlog::warn("memd stdio --connect: heartbeat failed: {}", ok.error().message);
      lock.lock();
    }
  }

  Connection connection_;
  std::string path_;
  int every_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members it reads exist
};

// memory_subscribe through the bridge: the daemon's event stream
// (GET /api/memory/events, the same filter) relayed as the in-process door's
// event lines, from a thread of its own. A stream the daemon ends (its
// shutdown, a stall) is resumed from the last id seen; a refusal, or ten
// failed attempts in a row, ends the relay with one line
// {"event":"error","data":{"error":{"code":…,"message":…}}}.
class EventRelay {
 public:
  EventRelay(ClientOptions client, EventQuery query, LineWriter& out)
      : client_options_(std::move(client)), query_(std::move(query)), out_(out), thread_([this] { loop(); }) {}
  ~EventRelay() {
    stop();
    thread_.join();
  }
  // Never blocks on the output: the relay drops what it holds once it sees
  // the flag (under the output's hold, so nothing is written after the
  // caller's next line).
  void stop() {
    stopped_.store(true);
    std::lock_guard lock(mu_);
    if (client_) client_->stop();
    wake_.notify_all();
  }

 private:
  void loop() {
    int failures = 0;
    while (!stopped_.load()) {
      {
        std::lock_guard lock(mu_);
        if (stopped_.load()) return;  // stop() ran before this client existed
        client_ = std::make_unique<EventClient>(client_options_);
      }
      bool received = false;
      auto ended = client_->run(query_, [&](const SseMessage& m) {
        auto hold = out_.hold();
        if (stopped_.load()) return false;
        received = true;
        if (m.event == "lost") out_.write_line_held(R"({"event":"lost","data":)" + m.data + "}");
        else out_.write_line_held(m.data);  // the event's line, as the bus encoded it
        return true;
      });
      if (const auto id = client_->last_id(); !id.empty())
        if (auto next = parse_last_event_id(id)) query_.last_event_id = *next;
      if (stopped_.load()) return;
      failures = received ? 0 : failures + 1;
      const bool refused = !ended && ended.error().code != ErrorCode::unavailable;
      if (refused || failures >= 10) {
        const Error error = ended ? Error{ErrorCode::unavailable, "the daemon keeps ending the event stream"}
                                  : ended.error();
        auto hold = out_.hold();
        if (!stopped_.load())
          out_.write_line_held(to_wire_text({{"event", "error"}, {"data", {{"error", error_object(error)}}}}));
        return;
      }
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, std::chrono::seconds(1), [this] { return stopped_.load(); });
    }
  }

  ClientOptions client_options_;
  EventQuery query_;
  LineWriter& out_;
  std::atomic<bool> stopped_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::unique_ptr<EventClient> client_;  // guarded by mu_ (run() on the relay's thread)
  std::thread thread_;                   // last: starts once the members it reads exist
};

// The parts of a request line the bridge acts on itself: memory_subscribe's
// and memory_unsubscribe's. Every other line goes to the daemon unread.
struct SubscriptionLine {
  bool subscribe = false;
  nlohmann::json params;
};

std::optional<SubscriptionLine> subscription_line(std::string_view line) {
  if (line.find("memory_subscribe") == std::string_view::npos &&
      line.find("memory_unsubscribe") == std::string_view::npos)
    return std::nullopt;
  auto request = parse_request_json(line);
  if (!request || !request->is_object()) return std::nullopt;
  const auto action = request->find("action");
  if (action == request->end() || !action->is_string()) return std::nullopt;
  SubscriptionLine out;
  if (*action == "memory_subscribe") out.subscribe = true;
  else if (*action != "memory_unsubscribe") return std::nullopt;
  if (auto p = request->find("params"); p != request->end() && p->is_object()) out.params = *p;
  return out;
}

// The query of a memory_subscribe the daemon accepted: its params, resuming
// after lastEventId or else after the lastSequence it answered.
EventQuery subscription_query(const nlohmann::json& params, const nlohmann::json& result) {
  EventQuery query;
  if (auto it = params.find("kinds"); it != params.end() && it->is_string()) query.kinds = *it;
  if (auto it = params.find("deviceId"); it != params.end() && it->is_string()) query.device = *it;
  if (auto it = params.find("lastEventId"); it != params.end()) {
    if (it->is_number_unsigned()) query.last_event_id = it->get<std::uint64_t>();
    else if (it->is_string())
      if (auto id = parse_last_event_id(it->get<std::string>())) query.last_event_id = *id;
  }
  if (!query.last_event_id) query.last_event_id = result.value("lastSequence", std::uint64_t{0});
  return query;
}

}  // namespace

int run_stdio_bridge(const BridgeFlags& flags) {
  auto max_line = parse_size(flags.max_line);
  if (!max_line || *max_line == 0) {
    std::cerr << "memd: --max-line must be a positive size\n";
    return 1;
  }
  if (flags.ttl_seconds < 1) {
    std::cerr << "memd: --ttl must be at least 1 second\n";
    return 1;
  }
  // A host that goes away must not kill the bridge before it closes the session.
  ::signal(SIGPIPE, SIG_IGN);
  const std::string owner = flags.owner.empty() ? "stdio-" + std::to_string(::getpid()) : flags.owner;
  Connection daemon(flags, owner);
  if (!daemon.valid()) {
    std::cerr << "memd: invalid daemon URL '" << flags.url << "'\n";
    return 1;
  }
  auto opened = daemon.call("POST", "/api/sessions", {{"ttlSeconds", flags.ttl_seconds}});
  if (!opened) {
    std::cerr << "memd: cannot open a session at " << flags.url << ": " << opened.error().message << "\n";
    return 1;
  }
  const std::string session = opened->value("sessionId", "");
  const std::string session_owner = opened->value("owner", owner);
  daemon.set_session(session);
  spdlog::info("memd stdio --connect: session {} of '{}' at {} (lease {} s)", session, session_owner, flags.url,
               flags.ttl_seconds);

  int exit_code = 0;
  {
    Heartbeat heartbeat(flags, owner, session);
    StdioOptions options;
    options.max_line = *max_line;
    LineWriter out(STDOUT_FILENO);
    const ClientOptions relay_client{.url = flags.url, .token = flags.token, .owner = owner, .admin = flags.admin,
                                     .session = session};
    std::unique_ptr<EventRelay> relay;
    auto answer = [&](std::string_view line) -> std::string {
      auto res = daemon.send("POST", "/api/stdio", std::string(line));
      if (!res) return local_error(line, res.error());
      if (res->status == 200) {
        std::string body = std::move(res->body);
        while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
        return body;
      }
      // The transport refused the line (token, session lapsed, size): its error.
      auto json = parse_request_json(res->body);
      Error error{ErrorCode::internal, fmt::format("memd answered HTTP {}", res->status)};
      if (json && json->is_object() && json->contains("error") && (*json)["error"].is_object()) {
        const auto& e = (*json)["error"];
        error = {parse_error_code(e.value("code", "internal")).value_or(ErrorCode::internal),
                 e.value("message", "unknown error")};
      }
      return local_error(line, error);
    };
    exit_code = serve_lines(options, STDIN_FILENO, out, [&](std::string_view line, LineWriter& writer) {
      auto subscription = subscription_line(line);
      if (!subscription) return writer.write_line(answer(line));
      // The daemon answers (and checks) the request; the relay changes and
      // the answer is written under one hold of the output, as in-process.
      std::unique_ptr<EventRelay> old;
      bool written = false;
      {
        auto hold = writer.hold();
        const std::string text = answer(line);
        auto response = parse_request_json(text);
        if (response && response->is_object() && response->value("ok", false)) {
          old = std::move(relay);
          if (old) old->stop();
          if (subscription->subscribe)
            relay = std::make_unique<EventRelay>(
                relay_client, subscription_query(subscription->params, (*response)["result"]), writer);
        }
        written = writer.write_line_held(text);
      }
      old.reset();  // joins its thread, outside the hold it may be waiting for
      return written;
    });
    relay.reset();
  }
  auto closed = daemon.call("DELETE", "/api/sessions/" + url_encode(session), nlohmann::json::object());
  if (!closed) {
    spdlog::error("memd stdio --connect: closing session {} failed ({}); its lease will lapse", session,
                  closed.error().message);
  } else {
    spdlog::info("memd stdio --connect: end of input; session {} closed: {}", session, to_wire_text(*closed));
  }
  return exit_code;
}

}  // namespace memd::cli
