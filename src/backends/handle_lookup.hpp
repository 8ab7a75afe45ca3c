// backends/handle_lookup.hpp — finding a caller's range, stream or event in a
// backend's handle table.
//
// Both backends keep reserved ranges, streams and recorded events in maps
// from handle to their own state, and must refuse a handle that names nothing,
// or names something on another device (or, for a range, of another base or
// size), with the same not_found error. Checking it in one place keeps the two backends'
// error codes and messages identical, which the conformance suite relies on.
//
// Thread safety: none of its own; the caller holds the lock that guards the map.
#pragma once

#include <string_view>

#include "backends/backend.hpp"

namespace memd {

// The entry of `ranges` (handle -> pointer to a state with device, base and
// size) that `range` names, else not_found.
template <typename RangeMap>
Result<typename RangeMap::const_iterator> find_range_in(const RangeMap& ranges,
                                                        const VirtualRange& range) {
  auto it = ranges.find(range.handle);
  if (it == ranges.end() || it->second->base != range.base || it->second->size != range.size ||
      it->second->device != range.device)
    return fail(ErrorCode::not_found, "no reserved range {:#x} of {} bytes on {}", range.base,
                range.size, range.device.to_string());
  return it;
}

// The entry of `map` (handle -> state with a device) that `key` (a Stream or
// an Event) names, else not_found; `what` names the kind in the message.
template <typename Map, typename Key>
Result<typename Map::const_iterator> find_on_device_in(const Map& map, const Key& key,
                                                       std::string_view what) {
  auto it = map.find(key.handle);
  if (it == map.end() || it->second.device != key.device)
    return fail(ErrorCode::not_found, "no {} {} on {}", what, key.handle, key.device.to_string());
  return it;
}

// The entry of `events` that `event` names, else not_found.
template <typename EventMap>
Result<typename EventMap::const_iterator> find_event_in(const EventMap& events,
                                                        const Event& event) {
  return find_on_device_in(events, event, "event");
}

// The entry of `streams` that `stream` names, else not_found. The default
// stream (handle 0) is the caller's to handle.
template <typename StreamMap>
Result<typename StreamMap::const_iterator> find_stream_in(const StreamMap& streams,
                                                          const Stream& stream) {
  return find_on_device_in(streams, stream, "stream");
}

}  // namespace memd
