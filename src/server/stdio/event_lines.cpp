// The stdio door's event pump (event_lines.hpp).
#include "server/stdio/event_lines.hpp"

#include <chrono>
#include <vector>

#include <fmt/format.h>

namespace memd {
namespace {
// Lines per turn of the pump: the writer is held for one turn, so a burst of
// events never keeps a response waiting for long.
constexpr std::size_t kBatch = 256;
}  // namespace

EventLinePump::EventLinePump(EventBus& bus, LineWriter& out) : bus_(bus), out_(out), thread_([this] { loop(); }) {}

EventLinePump::~EventLinePump() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  replace(nullptr);
}

std::shared_ptr<Subscription> EventLinePump::replace(std::shared_ptr<Subscription> next) {
  std::lock_guard lock(mu_);
  auto old = std::exchange(current_, std::move(next));
  pending_ = current_ != nullptr;  // a resumption may have a backlog to read at once
  cv_.notify_all();
  return old;
}

void EventLinePump::subscribe(const EventFilter& filter, std::uint64_t after) {
  auto subscription = bus_.subscribe(filter, after);
  // Runs on the publisher's thread with the bus's lock held: a flag and a
  // signal, never a write.
  subscription->set_notify([this] {
    {
      std::lock_guard lock(mu_);
      pending_ = true;
    }
    cv_.notify_one();
  });
  auto old = replace(std::move(subscription));
  old.reset();
}

void EventLinePump::unsubscribe() { replace(nullptr).reset(); }

bool EventLinePump::subscribed() const {
  std::lock_guard lock(mu_);
  return current_ != nullptr;
}

void EventLinePump::loop() {
  std::vector<EventPtr> batch;
  batch.reserve(kBatch);
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || (pending_ && current_ != nullptr); });
    if (stop_) return;
    pending_ = false;
    auto subscription = current_;
    lock.unlock();
    // Only this thread reads the subscription, so the cursor before the
    // poll says exactly where a gap began.
    const std::uint64_t before = subscription->cursor();
    subscription->poll_into(batch, kBatch);
    const std::uint64_t lost = subscription->take_gap();
    const bool more = batch.size() == kBatch;
    if (!batch.empty() || lost != 0) {
      auto hold = out_.hold();
      bool current;
      {
        std::lock_guard check(mu_);
        current = current_ == subscription;  // replaced meanwhile: its events are not the host's any more
      }
      if (current) {
        if (lost != 0)
          out_.write_line_held(
              fmt::format(R"({{"event":"lost","data":{{"lost":{},"resumeFrom":{}}}}})", lost, before + lost + 1));
        for (const EventPtr& e : batch) out_.write_line_held(e->line);
      }
    }
    batch.clear();
    subscription.reset();  // outside mu_: the last owner's destructor takes the bus's lock
    lock.lock();
    if (more) pending_ = true;
  }
}

}  // namespace memd
