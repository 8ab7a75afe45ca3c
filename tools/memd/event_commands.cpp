// memd events (a daemon's event stream, one line per event) and memd watch
// (devices and the last events, refreshed in place on a terminal).
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "event_client.hpp"
#include "memd/iso8601.hpp"
#include "memd/size.hpp"
#include "protocol/json_parse.hpp"
#include "table.hpp"

namespace memd::cli {
namespace {

int report(const Error& error) {
  std::cerr << "memd: " << to_string(error.code) << ": " << error.message << "\n";
  return 1;
}

std::string field(const nlohmann::json& v, const char* key) {
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string percent_text(const nlohmann::json& v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f%%", v.is_number() ? v.get<double>() : 0.0);
  return text;
}

// One event as a person reads it: time, sequence, device, kind, and the
// numbers that matter for the kinds that have them.
std::string event_text(const SseMessage& message) {
  auto parsed = parse_request_json(message.data);
  if (!parsed || !parsed->is_object()) return message.event + " " + message.data;
  const auto& e = *parsed;
  if (message.event == "lost")
    return "lost " + field(e, "lost") + " events (the oldest still kept is #" + field(e, "resumeFrom") + ")";
  std::string out = field(e, "time") + " #" + field(e, "sequence") + " " + field(e, "deviceId") + " " +
                    field(e, "event");
  const auto data = e.value("data", nlohmann::json::object());
  if (field(e, "event") == "pressure_changed" && data.is_object()) {
    out += " " + field(data, "previousLevel") + " -> " + field(data, "level") + " (" +
           percent_text(data.value("percent", nlohmann::json(0))) + " of " +
           (data.value("capacityBytes", nlohmann::json()).is_number_unsigned()
                ? format_size(data["capacityBytes"].get<std::uint64_t>())
                : std::string("?")) +
           ")";
  } else if (!data.empty()) {
    out += " " + data.dump();
  }
  return out;
}

}  // namespace

int run_events(const ClientFlags& c, const EventsFlags& f) {
  EventClient client(c.client);
  EventQuery query{f.kinds, f.device, f.last_event_id};
  std::uint64_t seen = 0;
  auto ended = client.run(query, [&](const SseMessage& m) {
    if (c.json) {
      // The same lines the stdio door writes.
      if (m.event == "lost") std::cout << R"({"event":"lost","data":)" << m.data << "}\n";
      else std::cout << m.data << "\n";
    } else {
      std::cout << event_text(m) << "\n";
    }
    std::cout.flush();
    if (m.event != "lost") ++seen;
    return f.count == 0 || seen < f.count;
  });
  if (!ended) return report(ended.error());
  if (*ended == StreamEnd::ServerClosed) {
    std::cerr << "memd: the daemon ended the event stream\n";
    if (f.count != 0 && seen < f.count) return 1;
  }
  return 0;
}

namespace {

// The events a watch shows: the newest few, filled by the stream's thread.
class RecentEvents {
 public:
  void add(const SseMessage& m) {
    std::lock_guard lock(mu_);
    lines_.push_back(event_text(m));
    if (lines_.size() > kKept) lines_.pop_front();
    if (!m.id.empty()) last_id_ = m.id;
    cv_.notify_all();
  }
  std::deque<std::string> lines() const {
    std::lock_guard lock(mu_);
    return lines_;
  }
  // Until an event with a sequence at least `sequence` arrived, or timeout.
  void wait_for_sequence(std::uint64_t sequence, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] {
      return sequence == 0 || (!last_id_.empty() && std::strtoull(last_id_.c_str(), nullptr, 10) >= sequence);
    });
  }
  static constexpr std::size_t kKept = 10;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> lines_;
  std::string last_id_;
};

std::string watch_screen(const std::string& url, const Result<nlohmann::json>& status, const RecentEvents& events,
                         const std::string& stream_error) {
  std::ostringstream out;
  out << "memd watch  " << url << "  " << iso8601(std::chrono::system_clock::now()) << "\n\n";
  if (!status) {
    out << "status: " << status.error().message << "\n";
  } else {
    Table t({"DEVICE", "TOTAL", "USED", "RESERVED", "ALLOCATED", "PRESSURE", "PERCENT", "FRAG", "HEALTH"});
    for (const auto& d : status->value("devices", nlohmann::json::array())) {
      auto bytes = [&](const char* key) {
        auto it = d.find(key);
        return it != d.end() && it->is_number_unsigned() ? format_size(it->get<std::uint64_t>()) : std::string("-");
      };
      const auto pressure = d.value("pressure", nlohmann::json::object());
      char frag[16];
      std::snprintf(frag, sizeof frag, "%.0f%%", d.value("fragmentation", 0.0) * 100);
      t.add({field(d, "deviceId"), bytes("totalBytes"), bytes("usedBytes"), bytes("reservedBytes"),
             bytes("allocatedBytes"), field(pressure, "level"),
             percent_text(pressure.value("percent", nlohmann::json(0))), frag, field(d, "health")});
    }
    out << t.render();
  }
  out << "\nlast events:\n";
  const auto lines = events.lines();
  if (lines.empty()) out << "  (none yet)\n";
  for (const auto& line : lines) out << "  " << line << "\n";
  if (!stream_error.empty()) out << "events: " << stream_error << "\n";
  return out.str();
}

}  // namespace

int run_watch(const ClientFlags& c, const WatchFlags& f) {
  if (!(f.interval_seconds >= 0.1 && f.interval_seconds <= 3600))
    return report({ErrorCode::invalid_argument, "--interval must be 0.1..3600 seconds"});
  ApiClient api(c.client);
  // Where the event history starts: memory_subscribe answers the newest
  // sequence, and the stream resumes a few events before it (the ring
  // still holds them).
  auto subscribed = api.post("/api/stdio", {{"id", "watch"}, {"action", "memory_subscribe"}, {"params", nlohmann::json::object()}});
  if (!subscribed) return report(subscribed.error());
  if (!subscribed->value("ok", false))
    return report({ErrorCode::internal, "memory_subscribe was refused: " + subscribed->dump()});
  const std::uint64_t last = (*subscribed)["result"].value("lastSequence", std::uint64_t{0});
  RecentEvents recent;
  EventClient stream(c.client);
  std::mutex error_mu;
  std::string stream_error;
  std::thread reader([&] {
    EventQuery query;
    query.last_event_id = last > RecentEvents::kKept ? last - RecentEvents::kKept : 0;
    auto ended = stream.run(query, [&](const SseMessage& m) {
      recent.add(m);
      return true;
    });
    std::lock_guard lock(error_mu);
    if (!ended) stream_error = ended.error().message;
    else if (*ended == StreamEnd::ServerClosed) stream_error = "the daemon ended the event stream";
  });
  const bool tty = ::isatty(STDOUT_FILENO) == 1 && !f.once;
  const auto interval = std::chrono::milliseconds(static_cast<std::int64_t>(f.interval_seconds * 1000));
  int exit_code = 0;
  if (f.once) recent.wait_for_sequence(last, std::chrono::seconds(2));
  for (;;) {
    auto status = api.get("/api/memory/status");
    std::string error;
    {
      std::lock_guard lock(error_mu);
      error = stream_error;
    }
    const std::string screen = watch_screen(c.client.url, status, recent, error);
    // On a terminal: home, clear, redraw; elsewhere plain appended screens.
    if (tty) std::cout << "\x1b[H\x1b[2J";
    std::cout << screen << (tty ? "" : "\n");
    std::cout.flush();
    if (!status) exit_code = 1;
    if (f.once || !status) break;
    std::this_thread::sleep_for(interval);
  }
  stream.stop();
  reader.join();
  return exit_code;
}

}  // namespace memd::cli
