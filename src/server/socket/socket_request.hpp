// server/socket/socket_request.hpp — one request line of the Unix socket
// door, parsed.
//
// The shape is the stdio door's: {"id": "1", "action": "hello", "params":
// {...}}. `id` is the peer's to choose (any JSON value, echoed as given; null
// when absent); `action` is an action name (1..128 bytes of a-z, 0-9 and _,
// so it is safe to log); `params` is an object, {} when absent or null. Other
// keys are ignored, as stdio ignores them. The text goes through
// parse_request_json (depth-bounded, exception-free), and a line over
// kMaxSocketLine is refused before it is parsed.
//
// A pure function of the text, so it is fuzzed alone
// (fuzz/socket_line_fuzz.cpp).
//
// Thread safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"

namespace memd {

struct SocketRequest {
  nlohmann::json id;  // as sent; null when absent
  std::string action;
  nlohmann::json params = nlohmann::json::object();
};

inline constexpr std::size_t kMaxActionName = 128;

// invalid_argument for anything but the shape above (payload_too_large over
// kMaxSocketLine). When `id` is given it receives the request's id whenever
// the line was a JSON object, also on failure, so a refusal can echo it.
Result<SocketRequest> parse_socket_request(std::string_view line, nlohmann::json* id = nullptr);

}  // namespace memd
