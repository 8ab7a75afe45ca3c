// server/stdio/event_lines.hpp — memory_subscribe on the stdio door: a
// subscription's events written to stdout as lines, between the responses.
//
// A thread of its own (the pump) waits for the subscription's events and
// writes each event's precomputed line (MemoryEvent::line) through the
// door's LineWriter, so the request loop never waits on events and a
// publisher never waits on stdout: the bus's notify only sets a flag and
// signals the pump's condition. A host that does not read stdout stalls the
// pump (and its own responses), not the daemon; the ring is the buffer, and
// a host that falls further behind than it reads one line
//   {"event":"lost","data":{"lost":N,"resumeFrom":S}}
// (S: the oldest sequence still in the ring) before the events that follow.
//
// subscribe() replaces the subscription (a second memory_subscribe changes
// the filter) and unsubscribe() ends it; both are called by the door while
// it holds the LineWriter (line_writer.hpp), so the pump's next line is
// either before the answer or of the new subscription.
//
// Thread safety: every method is thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "monitor/event_bus.hpp"
#include "server/stdio/line_writer.hpp"

namespace memd {

class EventLinePump {
 public:
  EventLinePump(EventBus& bus, LineWriter& out);
  ~EventLinePump();  // ends the subscription and joins the pump
  EventLinePump(const EventLinePump&) = delete;
  EventLinePump& operator=(const EventLinePump&) = delete;

  // Events matching `filter` after sequence `after`, from now on.
  void subscribe(const EventFilter& filter, std::uint64_t after);
  void unsubscribe();
  bool subscribed() const;

 private:
  void loop();
  // Replaces the current subscription; returns the old one, to be dropped
  // outside mu_ (its destructor takes the bus's lock, which a publisher
  // holds while it signals us).
  std::shared_ptr<Subscription> replace(std::shared_ptr<Subscription> next);

  EventBus& bus_;
  LineWriter& out_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Subscription> current_;
  bool pending_ = false;  // something may be readable: poll before waiting
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members it reads exist
};

}  // namespace memd
