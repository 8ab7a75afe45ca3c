#include "script_requests.hpp"

#include <fmt/format.h>

namespace memd::load {

SubscriberOptions script_subscribers(const LoadOptions& o, const tcp::endpoint& endpoint, const ScriptSpec& script) {
  SubscriberOptions so;
  so.endpoint = endpoint;
  so.target = "/api/memory/events?kinds=" + o.sse_kinds;
  so.count = o.sse_subscribers;
  so.concurrency = o.connect_concurrency;
  so.timeout = o.request_timeout;
  so.script = script;
  so.script.count = o.sse_script;
  return so;
}

RequestSpec script_limit_request(const ScriptSpec& script, bool set, std::string& body) {
  body = set ? fmt::format(R"({{"owner":"{}","bytes":{}}})", script.owner, kScriptLimit)
             : fmt::format(R"({{"owner":"{}","bytes":null}})", script.owner);
  RequestSpec limit;
  limit.method = http::verb::put;
  limit.target = "/api/memory/limits";
  limit.body = body;
  limit.content_type = "application/json";
  limit.admin = true;
  return limit;
}

RequestSpec script_allocation_request(const ScriptSpec& script, std::uint64_t i, std::string_view device,
                                      std::string& body) {
  body = fmt::format(R"({{"sizeBytes":{},"deviceId":"{}","name":"memd-load-script-{}"}})", script.base_size + i,
                     device, i);
  RequestSpec alloc;
  alloc.method = http::verb::post;
  alloc.target = "/api/memory/allocations";
  alloc.body = body;
  alloc.content_type = "application/json";
  alloc.owner = script.owner;
  return alloc;
}

void script_failures(const SseSummary& e, std::uint64_t refused, std::uint64_t events,
                     std::vector<std::string>& failures) {
  if (!e.ok())
    failures.push_back(fmt::format("event subscribers: {} of {} connected, {} with every script event in order; "
                                   "{} short of {}, {} out of order, {} streams ended early, {} events lost",
                                   e.connected, e.wanted, e.complete, e.missing, e.expected, e.misordered, e.broken,
                                   e.lost));
  if (refused < events)
    failures.push_back(
        fmt::format("the event script: {} of {} allocations refused with quota_exceeded", refused, events));
}

}  // namespace memd::load
