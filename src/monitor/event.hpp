// monitor/event.hpp — one notification on the event bus (MemoryEvent: Event
// is the backends' GPU event).
//
// An event is something a client may want to react to without polling: a
// pressure level changed, an allocation failed, a limit was reached, a
// transfer finished, a defragmentation ran, the pressure policy acted, a
// model was loaded or evicted, or a model's load advanced. Its payload is built once, by whoever
// publishes it, as the JSON every door shows; the bus gives it a sequence
// number and encodes the wire line once, so a thousand subscribers cost a
// thousand writes of the same bytes, not a thousand encodings.
//
// Wire (both doors, one encoding): a stdio event line is
//   {"event":"pressure_changed","sequence":42,"deviceId":"host:0",
//    "time":"2026-12-06T21:04:02.123Z","data":{...}}
// and an SSE frame carries the same object as its data, with the sequence as
// the SSE id (what Last-Event-ID resumes from) and the kind as its event name.
//
// Thread safety: an Event is immutable once published (shared as EventPtr).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "memd/device.hpp"

namespace memd {

// The closed list of event kinds; the wire names are the enum's names.
#define MEMD_EVENT_KINDS(X)                                                                     \
  X(pressure_changed, "a device's pressure level changed (with the numbers behind it)")        \
  X(pressure_action, "the pressure policy acted: released cached memory, reclaimed, refused")  \
  X(allocation_failed, "an allocation was refused: out of memory (with its snapshot) or a quota") \
  X(limit_reached, "a configured limit (device, memory type, owner) refused a request")         \
  X(transfer_completed, "a transfer or move finished")                                          \
  X(transfer_failed, "a transfer or move failed or was cancelled")                              \
  X(defragment_started, "a defragmentation of a device began (its plan)")                       \
  X(defragment_finished, "a defragmentation finished (its report)")                             \
  X(health_changed, "a device's health grade changed")                                          \
  X(model_loaded, "a model reached a tier")                                                     \
  X(model_evicted, "a model left a tier")                                                       \
  X(model_progress, "a model's load advanced: stage, bytes done of total, rate (at most ~10 a second per model, and the last)")  \
  X(model_preload_started, "a model predicted next began moving up into idle room")             \
  X(model_preload_finished, "a preload ended (ok, or why not)")

enum class EventKind : std::uint8_t {
#define MEMD_EVENT_ENUM(name, help) name,
  MEMD_EVENT_KINDS(MEMD_EVENT_ENUM)
#undef MEMD_EVENT_ENUM
};

inline constexpr std::size_t kEventKindCount = 0
#define MEMD_EVENT_COUNT(name, help) +1
    MEMD_EVENT_KINDS(MEMD_EVENT_COUNT)
#undef MEMD_EVENT_COUNT
    ;

std::string_view to_string(EventKind kind) noexcept;
std::string_view event_help(EventKind kind) noexcept;
std::optional<EventKind> parse_event_kind(std::string_view name) noexcept;
const std::array<EventKind, kEventKindCount>& all_event_kinds() noexcept;

struct MemoryEvent {
  std::uint64_t sequence = 0;  // 1, 2, … in publication order; the SSE id
  EventKind kind = EventKind::pressure_changed;
  std::optional<DeviceId> device;
  std::chrono::system_clock::time_point time;
  // The wire object (see above), without a newline, and the SSE frame of it
  // ("id: …\nevent: …\ndata: …\n\n"): encoded once at publication.
  std::string line;
  std::string sse_frame;
};

using EventPtr = std::shared_ptr<const MemoryEvent>;

// Which events a subscriber wants: empty sets mean all. An event with no
// device passes a device filter (machine-wide events reach everyone).
struct EventFilter {
  std::uint32_t kinds = 0;  // bit per EventKind; 0: every kind
  std::optional<DeviceId> device;

  void add(EventKind kind) noexcept { kinds |= 1u << static_cast<unsigned>(kind); }
  bool matches(const MemoryEvent& event) const noexcept {
    if (kinds != 0 && (kinds & (1u << static_cast<unsigned>(event.kind))) == 0) return false;
    if (device && event.device && *event.device != *device) return false;
    return true;
  }
};
static_assert(kEventKindCount <= 32, "EventFilter keeps one bit per kind");

}  // namespace memd
