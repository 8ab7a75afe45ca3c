#include "sse_script.hpp"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace memd::load {
namespace {

std::string clip(std::string_view text) { return std::string(text.substr(0, 64)); }

}  // namespace

void ScriptCheck::on_message(std::string_view id, std::string_view event, std::string_view data,
                             std::int64_t now_ns) {
  const auto j = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (event == "lost") {
    // A lost notice may repeat the last id (SSE keeps it across frames):
    // its sequence is not checked. At least one event went missing.
    std::uint64_t n = 1;
    if (j.is_object() && j.contains("lost") && j["lost"].is_number_unsigned())
      n = std::max<std::uint64_t>(1, j["lost"].get<std::uint64_t>());
    else
      problem(fmt::format("a lost event without a count: '{}'", clip(data)));
    lost_ += n;
    return;
  }
  if (!j.is_object()) {
    problem(fmt::format("event '{}' with data that is not a JSON object: '{}'", clip(event), clip(data)));
    return;
  }
  std::uint64_t sequence = 0;
  const auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), sequence);
  if (id.empty() || ec != std::errc() || end != id.data() + id.size()) {
    problem(fmt::format("event '{}' with id '{}', not a sequence number", clip(event), clip(id)));
    return;
  }
  if (!j.contains("sequence") || !j["sequence"].is_number_unsigned() ||
      j["sequence"].get<std::uint64_t>() != sequence) {
    problem(fmt::format("event {}: its data's sequence is not its id", sequence));
    return;
  }
  if (!j.contains("event") || !j["event"].is_string() || j["event"].get<std::string>() != event) {
    problem(fmt::format("event {}: its data names another kind than '{}'", sequence, clip(event)));
    return;
  }
  if (sequence <= last_sequence_) {
    misordered_ = true;
    problem(fmt::format("sequence {} after {}", sequence, last_sequence_));
  }
  last_sequence_ = std::max(last_sequence_, sequence);

  const nlohmann::json* body = j.contains("data") ? &j["data"] : nullptr;
  const bool script_owner = body && body->is_object() && body->contains("owner") && (*body)["owner"].is_string() &&
                            (*body)["owner"].get<std::string>() == spec_->owner;
  if (event != spec_->kind || !script_owner) {
    ++others_;
    return;
  }
  if (!body->contains("sizeBytes") || !(*body)["sizeBytes"].is_number_unsigned()) {
    problem(fmt::format("script event {} without sizeBytes", sequence));
    return;
  }
  const std::uint64_t bytes = (*body)["sizeBytes"].get<std::uint64_t>();
  if (bytes < spec_->base_size || bytes - spec_->base_size >= spec_->count) {
    problem(fmt::format("script event {} of {} bytes is not one the script asked for", sequence, bytes));
    return;
  }
  const std::uint64_t i = bytes - spec_->base_size;
  ++received_;
  if (receipt_ns_[i] != 0) {
    misordered_ = true;
    problem(fmt::format("script event {} came twice", i));
    return;
  }
  receipt_ns_[i] = std::max<std::int64_t>(1, now_ns);
  ++seen_;
  // A gap is not yet a fault (missing is judged at the end); filling one is.
  if (i < next_) {
    misordered_ = true;
    problem(fmt::format("script event {} after {}", i, next_ - 1));
  }
  next_ = std::max(next_, i + 1);
}

SseSummary summarize_subscribers(const std::vector<SubscriberOutcome>& subscribers, std::uint64_t expected,
                                 const std::vector<std::int64_t>& sent_ns) {
  SseSummary s;
  s.wanted = subscribers.size();
  s.expected = expected;
  std::vector<std::int64_t> latency;
  bool first = true;
  for (std::size_t k = 0; k < subscribers.size(); ++k) {
    const auto& sub = subscribers[k];
    if (!sub.check) continue;
    const ScriptCheck& c = *sub.check;
    ++s.connected;
    s.received_min = first ? c.seen() : std::min(s.received_min, c.seen());
    s.received_max = first ? c.seen() : std::max(s.received_max, c.seen());
    first = false;
    if (c.ok() && !sub.broken) ++s.complete;
    if (!c.complete()) ++s.missing;
    if (c.misordered()) ++s.misordered;
    if (sub.broken) ++s.broken;
    if (!c.first_problem().empty() && !c.misordered()) ++s.with_problems;
    s.lost += c.lost();
    s.other_events += c.others();
    std::string why = c.first_problem();
    if (why.empty() && !c.complete()) why = fmt::format("{} of {} script events", c.seen(), expected);
    if (why.empty() && sub.broken) why = "the stream ended early";
    if (!why.empty() && s.problems.size() < 20) s.problems.push_back(fmt::format("subscriber {}: {}", k, why));
    const auto& got = c.receipt_ns();
    for (std::size_t i = 0; i < got.size() && i < sent_ns.size(); ++i)
      if (got[i] != 0 && sent_ns[i] != 0) latency.push_back(std::max<std::int64_t>(0, got[i] - sent_ns[i]));
  }
  s.connect_failed = s.wanted - s.connected;
  s.delivery = summarize(std::move(latency));
  return s;
}

std::string check_event_kinds(std::string_view kinds, std::string_view required) {
  if (kinds.empty()) return "empty (give event names, e.g. limit_reached)";
  std::size_t names = 0;
  bool has_required = false;
  while (true) {
    const auto comma = kinds.find(',');
    const std::string_view name = kinds.substr(0, comma);
    if (name.empty() || name.size() > 64 || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != name.npos)
      return fmt::format("'{}' is not an event name", clip(name));
    if (++names > 32) return "more than 32 names";
    has_required = has_required || name == required;
    if (comma == std::string_view::npos) break;
    kinds.remove_prefix(comma + 1);
  }
  if (!has_required) return fmt::format("must include {} (the script's kind)", required);
  return {};
}

}  // namespace memd::load
