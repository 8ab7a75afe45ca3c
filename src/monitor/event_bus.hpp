// monitor/event_bus.hpp — the one in-process event bus.
//
// Publishers (the monitor, the service, the transfer engine's completion
// hook, later the model manager) call publish(); every door reads through a
// Subscription. There are no per-subscriber queues: the bus keeps one bounded
// ring of the newest events and each subscription is a cursor into it (the
// sequence number of the last event it took). So a subscriber costs a few
// words however far behind it is, resumption from Last-Event-ID is the same
// operation as reading the next event, and a subscriber that falls further
// behind than the ring learns exactly how many events it lost (gap()) instead
// of slowing publishers down or growing memory.
//
// Waking: a synchronous reader blocks in wait(); an asynchronous one (an SSE
// connection on an Asio executor) installs a notify function, which the bus
// calls after each publication that matches the subscription's filter, from
// the publisher's thread with no bus lock held. It must not block (post to an
// executor, signal a condition).
//
// Thread safety: every method of both classes is thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <vector>

#include <nlohmann/json.hpp>

#include "monitor/event.hpp"

namespace memd {

inline constexpr std::size_t kDefaultEventRing = 4096;

class EventBus;

class Subscription {
 public:
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Matching events after the cursor, oldest first, at most `max`; advances
  // the cursor past what it returns (and past non-matching events it skipped).
  std::vector<EventPtr> poll(std::size_t max = SIZE_MAX);
  // As poll(), into `out` (cleared first): a reader that keeps one vector
  // allocates nothing per event once it has grown (the SSE door: a thousand
  // subscribers polling after every event).
  void poll_into(std::vector<EventPtr>& out, std::size_t max = SIZE_MAX);
  // As poll(), but waits up to `timeout` for at least one (or close()).
  std::vector<EventPtr> wait(std::chrono::milliseconds timeout, std::size_t max = SIZE_MAX);
  // Events the ring dropped before this subscription read them (counted when
  // a poll finds its cursor older than the ring's oldest event); cleared by
  // the call. A door tells its client (SSE: a `lost` comment and the gap;
  // stdio: a lost line), which may resume from its last sequence if the ring
  // still has it, or re-read the state.
  std::uint64_t take_gap();
  // The sequence of the last event taken (or skipped); resumption point.
  std::uint64_t cursor() const;
  // Called after each matching publication (see the header comment). Set
  // before the subscription is shared with other threads, or under care:
  // replacing it races a publisher that is calling the old one.
  void set_notify(std::function<void()> notify);
  // Wakes a waiter; later waits and polls return nothing.
  void close();
  bool closed() const;
  const EventFilter& filter() const noexcept { return filter_; }

 private:
  friend class EventBus;
  Subscription(EventBus& bus, EventFilter filter, std::uint64_t cursor);
  // A matching event was published: wake a waiter, call notify.
  void signal();

  EventBus& bus_;
  const EventFilter filter_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t cursor_;
  std::uint64_t gap_ = 0;
  bool pending_ = false;
  bool closed_ = false;
  std::function<void()> notify_;
};

struct EventBusStats {
  std::uint64_t published = 0;
  std::uint64_t subscribers = 0;
  std::uint64_t oldest_sequence = 0;  // 0 when the ring is empty
  std::uint64_t last_sequence = 0;
  std::uint64_t ring_capacity = 0;
};

class EventBus {
 public:
  explicit EventBus(std::size_t ring_capacity = kDefaultEventRing);
  ~EventBus();
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  // Publishes and returns the event (sequence assigned). `data` is the
  // kind's payload as the wire shows it.
  EventPtr publish(EventKind kind, std::optional<DeviceId> device, nlohmann::json data);

  // A subscription starting after `after` (a sequence: Last-Event-ID), or
  // at the newest event when nullopt (only what comes next). A cursor older
  // than the ring's oldest event reads from the oldest and reports the gap.
  // The bus must outlive its subscriptions.
  std::shared_ptr<Subscription> subscribe(EventFilter filter, std::optional<std::uint64_t> after = std::nullopt);

  std::uint64_t last_sequence() const;
  EventBusStats stats() const;

  // The subscriptions' view of the ring: matching events after `cursor`, at
  // most `max`; sets `next_cursor` and adds dropped events to `gap`.
  std::vector<EventPtr> read(const EventFilter& filter, std::uint64_t cursor, std::size_t max,
                             std::uint64_t& next_cursor, std::uint64_t& gap) const;
  // The same, appending to `out`.
  void read_into(std::vector<EventPtr>& out, const EventFilter& filter, std::uint64_t cursor, std::size_t max,
                 std::uint64_t& next_cursor, std::uint64_t& gap) const;

 private:
  friend class Subscription;
  void unsubscribe(Subscription* subscription);

  const std::size_t capacity_;
  mutable std::shared_mutex ring_mu_;
  std::deque<EventPtr> ring_;
  std::uint64_t last_sequence_ = 0;

  // Subscribers to signal. Held while signalling, so a subscription being
  // destroyed (unsubscribe takes it) is never signalled half-gone.
  mutable std::mutex subscribers_mu_;
  std::vector<Subscription*> subscribers_;
  std::uint64_t published_ = 0;
};

}  // namespace memd
