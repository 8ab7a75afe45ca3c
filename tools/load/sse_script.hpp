// load/sse_script.hpp — what one event subscriber of memd-load must see of
// the scripted sequence, and the tally of many subscribers.
//
// The script (load_run.cpp) sets a 1 MiB limit on its own owner, then asks
// for K allocations of that owner of base + i bytes (i = 0 … K-1), each
// refused with quota_exceeded: one `limit_reached` event each, whose
// data.sizeBytes says i. A subscriber of GET /api/memory/events checks, for
// every message of its stream:
//   * the SSE id, the JSON's `sequence` and `event` agree with the frame and
//     sequences only grow (the whole stream, whatever the kind);
//   * the script's events (its kind, its owner) come as i = 0, 1, 2, … with
//     none missing, repeated or out of place;
//   * a `lost` event (the subscriber fell behind the daemon's ring) is
//     counted, and fails the subscriber.
// Everything else (other kinds, other owners: the load's own traffic) is
// only counted. Malformed data is a problem named in the tally, never
// thrown: the stream comes from another process.
//
// Thread safety: a ScriptCheck belongs to one subscriber (one thread at a
// time); summarize_subscribers reads finished checks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "latency.hpp"

namespace memd::load {

struct ScriptSpec {
  std::string owner = "memd-load-script";  // only this owner's events are the script's
  std::string kind = "limit_reached";
  std::uint64_t base_size = 2ull << 20;  // event i asked for base_size + i bytes
  std::uint64_t count = 100;             // K
};

class ScriptCheck {
 public:
  explicit ScriptCheck(const ScriptSpec& spec) : spec_(&spec), receipt_ns_(spec.count, 0) {}

  // One message of the stream: its SSE id, event name and data, and when it
  // arrived (steady clock, ns).
  void on_message(std::string_view id, std::string_view event, std::string_view data, std::int64_t now_ns);
  // The stream itself failed (malformed bytes, over-long line).
  void stream_error(std::string_view why) { problem(std::string(why)); }

  // Every script event arrived (in order or not).
  bool complete() const noexcept { return seen_ == spec_->count; }
  bool ok() const noexcept { return complete() && !misordered_ && lost_ == 0 && problem_.empty(); }

  std::uint64_t seen() const noexcept { return seen_; }            // distinct script events
  std::uint64_t received() const noexcept { return received_; }    // script events, repeats included
  std::uint64_t others() const noexcept { return others_; }        // events not of the script
  std::uint64_t lost() const noexcept { return lost_; }
  bool misordered() const noexcept { return misordered_; }
  const std::string& first_problem() const noexcept { return problem_; }
  // Receipt time of script event i; 0 while not seen.
  const std::vector<std::int64_t>& receipt_ns() const noexcept { return receipt_ns_; }

 private:
  void problem(std::string why) {
    if (problem_.empty()) problem_ = std::move(why);
  }

  const ScriptSpec* spec_;
  std::vector<std::int64_t> receipt_ns_;
  std::uint64_t next_ = 0;  // the index expected next
  std::uint64_t seen_ = 0, received_ = 0, others_ = 0, lost_ = 0;
  std::uint64_t last_sequence_ = 0;
  bool misordered_ = false;
  std::string problem_;
};

// One subscriber as the run saw it.
struct SubscriberOutcome {
  const ScriptCheck* check = nullptr;  // null: it never connected
  bool broken = false;                 // its stream ended before the run closed it
};

struct SseSummary {
  std::uint64_t wanted = 0, connected = 0, connect_failed = 0;
  unsigned refused_status = 0;  // the first non-200 answer to the subscription (404: no event stream)
  std::uint64_t expected = 0;   // K
  std::uint64_t received_min = 0, received_max = 0;  // distinct script events per connected subscriber
  std::uint64_t complete = 0;    // connected subscribers with all K, in order, nothing lost
  std::uint64_t missing = 0;     // connected subscribers short of K
  std::uint64_t misordered = 0;  // … that saw an event out of place or repeated
  std::uint64_t broken = 0;      // … whose stream ended early
  std::uint64_t with_problems = 0;  // … with any other problem (malformed frames)
  std::uint64_t lost = 0;           // events the daemon said it dropped, all subscribers
  std::uint64_t other_events = 0;   // events not of the script, all subscribers
  LatencySummary delivery;          // receipt − the send of the request that caused it
  std::vector<std::string> problems;  // the first few, "subscriber N: why"
  bool ok() const {
    return wanted == connected && complete == connected && missing == 0 && misordered == 0 && broken == 0 &&
           with_problems == 0 && lost == 0;
  }
};

// Tallies the subscribers; sent_ns[i] is when the script sent request i
// (steady clock; 0: unknown, that event gives no latency).
SseSummary summarize_subscribers(const std::vector<SubscriberOutcome>& subscribers, std::uint64_t expected,
                                 const std::vector<std::int64_t>& sent_ns);

// --sse-kinds: comma-separated event names ([a-z_], 1..64 each, at most 32);
// the daemon judges the names themselves. Empty string when fine, else why.
std::string check_event_kinds(std::string_view kinds, std::string_view required);

}  // namespace memd::load
