// protocol/actions/event_actions.hpp — subscribing to the event bus:
// memory_subscribe (stdio, and GET /api/memory/events as server-sent events)
// and memory_unsubscribe (stdio only).
//
// A subscription is a transport's state (the SSE connection, the stdio
// door's output), so the handlers here only check and describe it: every
// door dispatches the action first (parameters, the caller's session),
// then builds the subscription itself from subscription_request() of the
// same params. memory_subscribe answers
//   {"subscribed": true, "lastSequence": N, "kinds": [...], "deviceId": ...}
// where N is the bus's newest sequence when it answered: events after
// lastEventId, or after N when none was given, follow. A door that opens the
// stream later (the stdio bridge, `memd watch`) resumes from N and so misses
// nothing published in between.
//
// Thread safety: the table is built once (action_table.cpp); the functions
// are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "memd/error.hpp"
#include "monitor/event.hpp"
#include "protocol/action.hpp"

namespace memd {

class Params;

void append_event_actions(std::vector<Action>& table);

// What a memory_subscribe asks for: the filter, and where to start (after
// this sequence; nullopt: after the newest event when it subscribes).
struct SubscriptionRequest {
  EventFilter filter;
  std::optional<std::uint64_t> last_event_id;
};
Result<SubscriptionRequest> subscription_request(const Params& params);

// The answer's "kinds" (every kind's name when the filter takes all).
nlohmann::json filter_kinds_json(const EventFilter& filter);

}  // namespace memd
