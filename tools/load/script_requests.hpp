// load/script_requests.hpp — the event script's requests, written once for
// --mode load and --mode soak: the subscribers that watch for the script's
// events, the limit that makes its allocations fail, and the allocations
// themselves (each over the limit, so the daemon refuses it with
// quota_exceeded and publishes one limit_reached event naming its size),
// and the verdict on what the subscribers saw.
//
// RequestSpec holds views: each builder writes the text the request points
// into to `body`, which must outlive the request.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "http_client.hpp"
#include "load_options.hpp"
#include "sse_script.hpp"
#include "sse_subscribers.hpp"

namespace memd::load {

// The script owner's limit: under every size the script asks for.
constexpr std::uint64_t kScriptLimit = 1 << 20;

// --sse-subscribers connections to `endpoint`'s event stream (--sse-kinds),
// opened --connect-concurrency at a time, each expecting `script` with
// --sse-script events.
SubscriberOptions script_subscribers(const LoadOptions& o, const tcp::endpoint& endpoint, const ScriptSpec& script);

// PUT /api/memory/limits as the admin: sets the script owner's limit to
// kScriptLimit, or removes it (`set` false).
RequestSpec script_limit_request(const ScriptSpec& script, bool set, std::string& body);

// POST /api/memory/allocations as the script owner: event `i`'s allocation
// (base_size + i bytes) on `device`, named memd-load-script-i.
RequestSpec script_allocation_request(const ScriptSpec& script, std::uint64_t i, std::string_view device,
                                      std::string& body);

// The script's verdict, appended to `failures`: the subscribers short of
// `summary`'s ok(), and fewer than `events` allocations refused with
// quota_exceeded (`refused`). Nothing when both held.
void script_failures(const SseSummary& summary, std::uint64_t refused, std::uint64_t events,
                     std::vector<std::string>& failures);

}  // namespace memd::load
