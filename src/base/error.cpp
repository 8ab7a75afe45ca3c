// Wire names and HTTP statuses of the closed error list.
#include "memd/error.hpp"

namespace memd {

std::string_view to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::unauthenticated: return "unauthenticated";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::conflict: return "conflict";
    case ErrorCode::payload_too_large: return "payload_too_large";
    case ErrorCode::out_of_memory: return "out_of_memory";
    case ErrorCode::quota_exceeded: return "quota_exceeded";
    case ErrorCode::unavailable: return "unavailable";
    case ErrorCode::backend_error: return "backend_error";
    case ErrorCode::internal: return "internal";
    case ErrorCode::permission_denied: return "permission_denied";
    case ErrorCode::out_of_range: return "out_of_range";
    case ErrorCode::invalid_file: return "invalid_file";
    case ErrorCode::method_not_allowed: return "method_not_allowed";
    case ErrorCode::uri_too_long: return "uri_too_long";
    case ErrorCode::unsupported_media_type: return "unsupported_media_type";
    case ErrorCode::rate_limited: return "rate_limited";
  }
  return "internal";
}

std::optional<ErrorCode> parse_error_code(std::string_view name) noexcept {
  for (ErrorCode c : kAllErrorCodes)
    if (to_string(c) == name) return c;
  return std::nullopt;
}

int http_status(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_argument: return 400;
    case ErrorCode::unauthenticated: return 401;
    case ErrorCode::not_found: return 404;
    case ErrorCode::conflict: return 409;
    case ErrorCode::payload_too_large: return 413;
    case ErrorCode::out_of_memory: return 507;
    case ErrorCode::quota_exceeded: return 507;
    case ErrorCode::unavailable: return 503;
    case ErrorCode::backend_error: return 502;
    case ErrorCode::internal: return 500;
    case ErrorCode::permission_denied: return 403;
    case ErrorCode::out_of_range: return 416;
    case ErrorCode::invalid_file: return 422;
    case ErrorCode::method_not_allowed: return 405;
    case ErrorCode::uri_too_long: return 414;
    case ErrorCode::unsupported_media_type: return 415;
    case ErrorCode::rate_limited: return 429;
  }
  return 500;
}

}  // namespace memd
