// memd/error.hpp — the error model every memd API returns.
//
// Errors are values: functions that can fail return memd::Result<T>, which is
// std::expected<T, memd::Error>. The ErrorCode list is closed: transports map
// each code to exactly one wire name and one HTTP status, so clients can rely
// on it. Adding a code is a protocol change and must update docs/api.md.
//
// Thread safety: all types here are values; free functions are thread-safe.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace memd {

enum class ErrorCode : std::uint8_t {
  invalid_argument,   // the request's shape is wrong: type, pattern, bound, missing key (HTTP 400)
  unauthenticated,    // missing or wrong bearer token (HTTP 401)
  not_found,          // no such allocation, device, model, route or action (HTTP 404)
  conflict,           // valid request that contradicts current state (HTTP 409)
  payload_too_large,  // a line or body over the configured limit (HTTP 413)
  out_of_memory,      // the device cannot hold the request even after reclaim (HTTP 507)
  quota_exceeded,     // a configured limit (device, memory type, owner) forbids it (HTTP 507)
  unavailable,        // the device or service cannot serve now (HTTP 503)
  backend_error,      // the driver/OS call failed in a way we did not expect (HTTP 502)
  internal,           // a bug in memd (HTTP 500)
  permission_denied,  // authenticated, but not allowed to act on this (HTTP 403)
  out_of_range,       // a well-formed request outside an existing allocation's bounds (HTTP 416)
  invalid_file,       // a model file that changed under memd since it was opened (HTTP 422); a malformed one is invalid_argument, one outside --model-root permission_denied
  method_not_allowed, // a known path asked with a method it does not take (HTTP 405, with Allow)
  uri_too_long,       // a request target over the transport's limit (HTTP 414)
  unsupported_media_type,  // a JSON route sent another content type (HTTP 415)
  rate_limited,       // an owner over its request or byte rate (HTTP 429, with Retry-After)
};

inline constexpr ErrorCode kAllErrorCodes[] = {
    ErrorCode::invalid_argument, ErrorCode::unauthenticated, ErrorCode::not_found,
    ErrorCode::conflict,         ErrorCode::payload_too_large, ErrorCode::out_of_memory,
    ErrorCode::quota_exceeded,   ErrorCode::unavailable,     ErrorCode::backend_error,
    ErrorCode::internal,         ErrorCode::permission_denied, ErrorCode::out_of_range,
    ErrorCode::invalid_file,     ErrorCode::method_not_allowed, ErrorCode::uri_too_long,
    ErrorCode::unsupported_media_type, ErrorCode::rate_limited,
};

// Wire name of a code, e.g. "out_of_memory".
std::string_view to_string(ErrorCode code) noexcept;
// Inverse of to_string; nullopt for names outside the closed list.
std::optional<ErrorCode> parse_error_code(std::string_view name) noexcept;
// The one HTTP status each code maps to.
int http_status(ErrorCode code) noexcept;

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;
  // out_of_memory from an allocation: the snapshot memd took of the device
  // (memory_history_snapshot); the wire error object carries it as
  // "snapshotId". Absent everywhere else.
  // (Its default member initializer lets `Error{code, message}` leave it out.)
  std::optional<std::string> snapshot_id{};

  friend bool operator==(const Error&, const Error&) = default;
};

template <typename T>
using Result = std::expected<T, Error>;

// Builds the unexpected value: `return fail(ErrorCode::not_found, "no allocation {}", id);`
// Formatting is fmt's (g++ 12 has no <format>); fmt's syntax is std::format's.
template <typename... Args>
[[nodiscard]] std::unexpected<Error> fail(ErrorCode code, fmt::format_string<Args...> format,
                                          Args&&... args) {
  return std::unexpected<Error>(Error{code, fmt::format(format, std::forward<Args>(args)...)});
}

[[nodiscard]] inline std::unexpected<Error> fail(Error error) {
  return std::unexpected<Error>(std::move(error));
}

}  // namespace memd
