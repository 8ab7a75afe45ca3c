// libFuzzer target: arbitrary text as a subscription's kinds, deviceId and
// Last-Event-ID (parse_event_filter, parse_last_event_id: protocol/sse.hpp).
//
// The input is split at its first two NUL bytes into the three texts.
// Invariants: no crash; a refusal is invalid_argument with a short message
// (the echoed name is capped); an accepted kinds list names only known kinds
// and parses back from the names of its bits; an accepted Last-Event-ID is
// exactly the decimal text given.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/sse.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto first = text.find('\0');
  const std::string_view kinds = text.substr(0, first);
  std::string_view rest = first == std::string_view::npos ? std::string_view{} : text.substr(first + 1);
  const auto second = rest.find('\0');
  const std::string_view device = rest.substr(0, second);
  const std::string_view last = second == std::string_view::npos ? std::string_view{} : rest.substr(second + 1);

  auto filter = memd::parse_event_filter(kinds, device.empty() ? std::nullopt : std::optional(device));
  if (!filter) {
    if (filter.error().code != memd::ErrorCode::invalid_argument) std::abort();
    if (filter.error().message.size() > 1024) std::abort();
  } else {
    if (filter->kinds == 0) std::abort();  // an accepted list names at least one kind
    if (filter->kinds >> memd::kEventKindCount) std::abort();
    std::string names;
    for (auto k : memd::all_event_kinds())
      if (filter->kinds & (1u << static_cast<unsigned>(k))) names += (names.empty() ? "" : ",") + std::string(to_string(k));
    auto again = memd::parse_event_filter(names, std::nullopt);
    if (!again || again->kinds != filter->kinds) std::abort();
  }
  auto id = memd::parse_last_event_id(last);
  if (!id) {
    if (id.error().code != memd::ErrorCode::invalid_argument || id.error().message.size() > 256) std::abort();
  } else if (std::to_string(*id) != last) {
    // Leading zeros are the only other spelling of an accepted number.
    if (last.find_first_not_of('0') == std::string_view::npos ? *id != 0
                                                               : std::to_string(*id) != last.substr(last.find_first_not_of('0')))
      std::abort();
  }
  return 0;
}
