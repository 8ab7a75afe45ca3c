// server/http/request_target.hpp — the pure half of decoding an HTTP request:
// the request target (path segments, percent-decoding, query pairs), route
// matching against the action table, and the header checks every request
// passes before its body is read.
//
// Kept apart from the sockets so it can be unit-tested and fuzzed on raw
// bytes (fuzz/http_request_fuzz.cpp): nothing here blocks, allocates more
// than its input's size, or recurses (std::regex, used before, recursed per
// character and could exhaust the stack on a long target).
//
// Thread safety: values and pure functions; a RouteTable is immutable once
// built and may be shared by every I/O thread.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/system/error_code.hpp>

#include "memd/error.hpp"
#include "protocol/action.hpp"

namespace memd {

// The request target (path and query) may be this long; longer answers 414.
inline constexpr std::size_t kMaxTargetBytes = 8 * 1024;
// The header fields after the request line may take this much on their own;
// the parser's header limit is their sum, so a long target never eats the
// fields' share. Over it answers 400.
inline constexpr std::size_t kMaxHeaderFieldBytes = 16 * 1024;
inline constexpr std::size_t kMaxHeaderBytes = kMaxTargetBytes + kMaxHeaderFieldBytes;

using QueryPairs = std::vector<std::pair<std::string, std::string>>;

// %XX decoding (and '+' → ' ' when plus_is_space, as in a query); malformed
// escapes stay as written. The output is never longer than the input.
std::string percent_decode(std::string_view text, bool plus_is_space);
// The target up to its '?'.
std::string_view target_path(std::string_view target);
// name=value pairs of the query, decoded; empty pairs are skipped, a name
// without '=' has an empty value.
QueryPairs query_pairs(std::string_view target);

// The methods a route table knows. HEAD is answered as GET (the body left out).
enum class Verb { Get, Head, Post, Put, Delete, Other };
Verb parse_verb(std::string_view method) noexcept;

// What a request's method and path resolve to.
struct RouteMatch {
  const Action* action = nullptr;  // null for a transport route (see add)
  const Route* route = nullptr;    // null for a transport route
  std::string_view path_template;
  QueryPairs path_params;  // {placeholder, decoded segment}, in template order
};

struct RouteLookup {
  std::optional<RouteMatch> match;
  // When no route matched: the methods the path does take ("GET, HEAD, PUT"),
  // empty when no route has this path (404 rather than 405).
  std::string allow;
};

// Path templates ("/api/memory/allocations/{allocationId}/data") matched
// segment by segment: a placeholder takes one non-empty segment, decoded
// after splitting, so an escaped '/' (%2F) inside an id stays in that id.
class RouteTable {
 public:
  explicit RouteTable(std::span<const Action> actions);
  // A route the transport answers itself (GET /api/openapi.json).
  void add(HttpMethod method, std::string_view path_template);
  RouteLookup find(Verb verb, std::string_view path) const;

 private:
  struct Entry {
    HttpMethod method;
    std::string_view path_template;
    std::vector<std::string_view> segments;  // "{…}" marks a placeholder
    const Action* action;
    const Route* route;
  };
  std::vector<Entry> entries_;
};

// The checks on a request's header, before its body is read.
// uri_too_long over kMaxTargetBytes.
Result<void> check_target(std::string_view target);
// A JSON route's body must say it is JSON: application/json, any letter case,
// parameters such as charset allowed. Without a body nothing is checked. A
// body without a Content-Type is refused too: a browser page can send a
// typeless body (a Blob) cross-origin with no CORS preflight, as it can
// text/plain, so accepting either would let any web page drive the daemon.
Result<void> check_json_content_type(std::optional<std::string_view> content_type, bool has_body);
// The error a header that Beast's parser refused answers with. Over the
// header limit, a long request target (414) is told from long header fields
// (400) by the target the parser has stored (once the request line is whole)
// or else by the unconsumed bytes, which then begin with that line.
Error header_parse_error(const boost::system::error_code& ec, std::string_view parsed_target = {},
                         std::string_view unconsumed = {});

}  // namespace memd
