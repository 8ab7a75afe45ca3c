// Depth-bounded, exception-free JSON parsing for requests.
#include "protocol/json_parse.hpp"

namespace memd {

std::size_t json_nesting_depth(std::string_view text, std::size_t limit) {
  std::size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    switch (c) {
      case '"': in_string = true; break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > limit) return limit + 1;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default: break;
    }
  }
  return deepest;
}

Result<nlohmann::json> parse_request_json(std::string_view text, std::size_t max_depth) {
  if (json_nesting_depth(text, max_depth) > max_depth)
    return fail(ErrorCode::invalid_argument, "JSON nests deeper than {} levels", max_depth);
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return fail(ErrorCode::invalid_argument, "malformed JSON: {}", e.what());
  } catch (const std::bad_alloc&) {
    return fail(ErrorCode::payload_too_large, "JSON too large to parse");
  }
}

std::string to_wire_text(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace memd
