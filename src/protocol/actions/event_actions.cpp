// memory_subscribe / memory_unsubscribe: checking and describing a
// subscription; the doors hold it (event_actions.hpp).
#include "protocol/actions/event_actions.hpp"

#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "protocol/sse.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

Result<Outcome> memory_subscribe(MemoryService& s, const Params& p, const CallContext&) {
  MEMD_ASSIGN_OR_RETURN(auto request, subscription_request(p));
  return ok({{"subscribed", true},
             {"lastSequence", s.events().last_sequence()},
             {"kinds", filter_kinds_json(request.filter)},
             {"deviceId", request.filter.device ? nlohmann::json(request.filter.device->to_string())
                                                : nlohmann::json(nullptr)}});
}

Result<Outcome> memory_unsubscribe(MemoryService&, const Params&, const CallContext&) {
  return ok({{"subscribed", false}});
}

}  // namespace

Result<SubscriptionRequest> subscription_request(const Params& p) {
  MEMD_ASSIGN_OR_RETURN(auto kinds, p.string("kinds"));
  MEMD_ASSIGN_OR_RETURN(auto device, p.device("deviceId"));
  const std::string device_text = device ? device->to_string() : std::string();
  auto filter = parse_event_filter(kinds ? std::optional<std::string_view>(*kinds) : std::nullopt,
                                   device ? std::optional<std::string_view>(device_text) : std::nullopt);
  if (!filter) return fail(filter.error());
  SubscriptionRequest out;
  out.filter = *filter;
  MEMD_ASSIGN_OR_RETURN(out.last_event_id, p.count("lastEventId", kMaxWireBytes));
  return out;
}

nlohmann::json filter_kinds_json(const EventFilter& filter) {
  nlohmann::json kinds = nlohmann::json::array();
  for (EventKind k : all_event_kinds())
    if (filter.kinds == 0 || (filter.kinds & (1u << static_cast<unsigned>(k))) != 0)
      kinds.push_back(std::string(to_string(k)));
  return kinds;
}

void append_event_actions(std::vector<Action>& t) {
  constexpr auto Get = HttpMethod::Get;
  std::string_view kinds_help =
      "Only these event kinds, comma-separated (default: every kind): pressure_changed, pressure_action, "
      "allocation_failed, limit_reached, transfer_completed, transfer_failed, defragment_started, "
      "defragment_finished, health_changed, model_loaded, model_evicted, model_progress, model_preload_started, "
      "model_preload_finished. An unknown name is refused.";
  t.push_back(Action{
      "memory_subscribe",
      "Subscribe to events (open to every caller). REST: server-sent events (text/event-stream) until the client "
      "closes: each event's id is its sequence, its name the kind, its data the event object "
      "{event, sequence, deviceId, time, data}; a comment every 15 s keeps it alive; resume with Last-Event-ID. "
      "stdio: answers {subscribed, lastSequence, kinds, deviceId}, then event lines (the same objects) arrive "
      "on stdout between responses; a second memory_subscribe replaces the filter. A subscriber that falls "
      "further behind than the ring (memd --event-ring) gets a `lost` event {lost, resumeFrom} instead of "
      "what it missed.",
      {{Get, "/api/memory/events", 200, RouteBody::EventStream}},
      {{"kinds", K::EventKinds, false, kinds_help},
       {"deviceId", K::DeviceId, false,
        "Only events of this device (cuda:N, host:N or cpu); events of no device reach every subscriber."},
       {"lastEventId", K::Count, false,
        "Resume after this sequence (REST: or the Last-Event-ID header, which wins); default: only events "
        "published from now on. One older than the ring's oldest gives a `lost` event first."}},
      R"({"kinds": "pressure_changed", "deviceId": "host:0"})",
      R"({"subscribed": true, "lastSequence": 42, "kinds": ["pressure_changed"], "deviceId": "host:0"})",
      memory_subscribe});
  t.push_back(Action{
      "memory_unsubscribe",
      "stdio: stop the event lines of memory_subscribe (none follows this answer); without a subscription it "
      "does nothing. REST has no route: a subscription there is its connection, and closing it unsubscribes.",
      {},
      {},
      R"({})",
      R"({"subscribed": false})",
      memory_unsubscribe});
}

}  // namespace memd
