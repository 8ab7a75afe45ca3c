// protocol/json_parse.hpp — turning untrusted text into JSON, safely.
//
// Every request body and stdio line goes through parse_request_json: it
// refuses nesting deeper than max_depth before nlohmann sees the text (a
// linear scan that tracks strings and escapes, so '[' inside a string does not
// count), then parses without letting an exception escape. Deeply nested
// input would otherwise cost recursion in every later walk of the value
// (dump, destruction, our own readers) — 100k '[' must not crash the daemon.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"

namespace memd {

inline constexpr std::size_t kMaxJsonDepth = 64;

// invalid_argument when the text is not one JSON value or nests too deeply.
Result<nlohmann::json> parse_request_json(std::string_view text,
                                          std::size_t max_depth = kMaxJsonDepth);

// The deepest nesting of arrays/objects in text, stopping once limit is
// passed (returns limit + 1 then). Malformed text still gets a number.
std::size_t json_nesting_depth(std::string_view text, std::size_t limit);

// Compact text of a value for the wire. Invalid UTF-8 (an owner header, say)
// is replaced rather than thrown about, so encoding a response cannot fail.
std::string to_wire_text(const nlohmann::json& value);

}  // namespace memd
