// EventBus: one ring of shared events, subscriptions as cursors into it.
#include "monitor/event_bus.hpp"

#include "memd/iso8601.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace memd {

namespace {
struct KindName {
  EventKind kind;
  std::string_view name, help;
};
constexpr KindName kKinds[] = {
#define MEMD_EVENT_ROW(name, help) {EventKind::name, #name, help},
    MEMD_EVENT_KINDS(MEMD_EVENT_ROW)
#undef MEMD_EVENT_ROW
};
}  // namespace

std::string_view to_string(EventKind kind) noexcept { return kKinds[static_cast<std::size_t>(kind)].name; }
std::string_view event_help(EventKind kind) noexcept { return kKinds[static_cast<std::size_t>(kind)].help; }

std::optional<EventKind> parse_event_kind(std::string_view name) noexcept {
  for (const auto& k : kKinds)
    if (k.name == name) return k.kind;
  return std::nullopt;
}

const std::array<EventKind, kEventKindCount>& all_event_kinds() noexcept {
  static const std::array<EventKind, kEventKindCount> kinds = [] {
    std::array<EventKind, kEventKindCount> a{};
    for (std::size_t i = 0; i < kEventKindCount; ++i) a[i] = kKinds[i].kind;
    return a;
  }();
  return kinds;
}

// ---- Subscription ----------------------------------------------------------

Subscription::Subscription(EventBus& bus, EventFilter filter, std::uint64_t cursor)
    : bus_(bus), filter_(filter), cursor_(cursor) {}

Subscription::~Subscription() { bus_.unsubscribe(this); }

std::vector<EventPtr> Subscription::poll(std::size_t max) {
  std::lock_guard lock(mu_);
  if (closed_) return {};
  pending_ = false;
  std::uint64_t next = cursor_;
  auto events = bus_.read(filter_, cursor_, max, next, gap_);
  cursor_ = next;
  return events;
}

void Subscription::poll_into(std::vector<EventPtr>& out, std::size_t max) {
  out.clear();
  std::lock_guard lock(mu_);
  if (closed_) return;
  pending_ = false;
  std::uint64_t next = cursor_;
  bus_.read_into(out, filter_, cursor_, max, next, gap_);
  cursor_ = next;
}

std::vector<EventPtr> Subscription::wait(std::chrono::milliseconds timeout, std::size_t max) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mu_);
  for (;;) {
    if (closed_) return {};
    pending_ = false;
    std::uint64_t next = cursor_;
    auto events = bus_.read(filter_, cursor_, max, next, gap_);
    cursor_ = next;
    if (!events.empty() || gap_ != 0) return events;
    // A publication between read() and here set pending_ under mu_, so it
    // cannot be missed.
    if (!cv_.wait_until(lock, deadline, [&] { return pending_ || closed_; })) return {};
  }
}

std::uint64_t Subscription::take_gap() {
  std::lock_guard lock(mu_);
  return std::exchange(gap_, 0);
}

std::uint64_t Subscription::cursor() const {
  std::lock_guard lock(mu_);
  return cursor_;
}

void Subscription::set_notify(std::function<void()> notify) {
  std::lock_guard lock(bus_.subscribers_mu_);
  notify_ = std::move(notify);
}

void Subscription::close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

bool Subscription::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

void Subscription::signal() {
  {
    std::lock_guard lock(mu_);
    pending_ = true;
  }
  cv_.notify_all();
  if (notify_) notify_();
}

// ---- EventBus --------------------------------------------------------------

EventBus::EventBus(std::size_t ring_capacity) : capacity_(std::max<std::size_t>(ring_capacity, 1)) {}

EventBus::~EventBus() = default;

EventPtr EventBus::publish(EventKind kind, std::optional<DeviceId> device, nlohmann::json data) {
  auto event = std::make_shared<MemoryEvent>();
  event->kind = kind;
  event->device = device;
  event->time = std::chrono::system_clock::now();
  nlohmann::json wire = nlohmann::json::object();
  wire["event"] = to_string(kind);
  wire["deviceId"] = device ? nlohmann::json(device->to_string()) : nlohmann::json(nullptr);
  wire["time"] = iso8601(event->time);
  wire["data"] = std::move(data);
  {
    // The sequence is assigned under the ring's lock, so ring order is
    // sequence order; the encoding needs the sequence, so it is done here
    // too (a few microseconds, once per event).
    std::unique_lock lock(ring_mu_);
    event->sequence = ++last_sequence_;
    wire["sequence"] = event->sequence;
    event->line = wire.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    event->sse_frame = fmt::format("id: {}\nevent: {}\ndata: {}\n\n", event->sequence, to_string(kind), event->line);
    ring_.push_back(event);
    if (ring_.size() > capacity_) ring_.pop_front();
  }
  std::lock_guard lock(subscribers_mu_);
  ++published_;
  for (Subscription* s : subscribers_)
    if (s->filter_.matches(*event)) s->signal();
  return event;
}

std::shared_ptr<Subscription> EventBus::subscribe(EventFilter filter, std::optional<std::uint64_t> after) {
  std::uint64_t cursor;
  {
    std::shared_lock lock(ring_mu_);
    cursor = after ? std::min(*after, last_sequence_) : last_sequence_;
  }
  auto subscription = std::shared_ptr<Subscription>(new Subscription(*this, filter, cursor));
  std::lock_guard lock(subscribers_mu_);
  subscribers_.push_back(subscription.get());
  return subscription;
}

void EventBus::unsubscribe(Subscription* subscription) {
  std::lock_guard lock(subscribers_mu_);
  std::erase(subscribers_, subscription);
}

std::uint64_t EventBus::last_sequence() const {
  std::shared_lock lock(ring_mu_);
  return last_sequence_;
}

EventBusStats EventBus::stats() const {
  EventBusStats s;
  {
    std::shared_lock lock(ring_mu_);
    s.last_sequence = last_sequence_;
    s.oldest_sequence = ring_.empty() ? 0 : ring_.front()->sequence;
    s.ring_capacity = capacity_;
  }
  std::lock_guard lock(subscribers_mu_);
  s.published = published_;
  s.subscribers = subscribers_.size();
  return s;
}

std::vector<EventPtr> EventBus::read(const EventFilter& filter, std::uint64_t cursor, std::size_t max,
                                     std::uint64_t& next_cursor, std::uint64_t& gap) const {
  std::vector<EventPtr> out;
  read_into(out, filter, cursor, max, next_cursor, gap);
  return out;
}

void EventBus::read_into(std::vector<EventPtr>& out, const EventFilter& filter, std::uint64_t cursor,
                         std::size_t max, std::uint64_t& next_cursor, std::uint64_t& gap) const {
  const std::size_t start = out.size();
  std::shared_lock lock(ring_mu_);
  next_cursor = cursor;
  if (ring_.empty() || cursor >= last_sequence_) return;
  const std::uint64_t oldest = ring_.front()->sequence;
  if (cursor + 1 < oldest) {
    gap += oldest - 1 - cursor;
    cursor = oldest - 1;
    next_cursor = cursor;
  }
  // Sequences in the ring are consecutive, so the first unread one is at a
  // known index.
  for (std::size_t i = static_cast<std::size_t>(cursor + 1 - oldest); i < ring_.size() && out.size() - start < max; ++i) {
    const EventPtr& e = ring_[i];
    next_cursor = e->sequence;
    if (filter.matches(*e)) out.push_back(e);
  }
}

}  // namespace memd
