// Request target decoding, route matching and header checks (pure).
#include "server/http/request_target.hpp"

#include <algorithm>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <fmt/format.h>

namespace memd {
namespace {

namespace http = boost::beast::http;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits "/a/b/c" into {"a", "b", "c"}; "/" gives {""}, "" gives {}.
std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty()) return out;
  if (path.front() == '/') path.remove_prefix(1);
  for (;;) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

bool is_placeholder(std::string_view segment) {
  return segment.size() >= 2 && segment.front() == '{' && segment.back() == '}';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 && hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else if (plus_is_space && text[i] == '+') {
      out += ' ';
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string_view target_path(std::string_view target) { return target.substr(0, target.find('?')); }

QueryPairs query_pairs(std::string_view target) {
  QueryPairs out;
  const auto q = target.find('?');
  if (q == std::string_view::npos) return out;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    out.emplace_back(percent_decode(pair.substr(0, eq), true),
                     eq == std::string_view::npos ? std::string{} : percent_decode(pair.substr(eq + 1), true));
  }
  return out;
}

Verb parse_verb(std::string_view method) noexcept {
  // Methods are case-sensitive (RFC 9110 §9.1): "get" is not GET.
  if (method == "GET") return Verb::Get;
  if (method == "HEAD") return Verb::Head;
  if (method == "POST") return Verb::Post;
  if (method == "PUT") return Verb::Put;
  if (method == "DELETE") return Verb::Delete;
  return Verb::Other;
}

RouteTable::RouteTable(std::span<const Action> actions) {
  for (const auto& action : actions)
    for (const auto& route : action.routes)
      entries_.push_back({route.method, route.path, split_path(route.path), &action, &route});
}

void RouteTable::add(HttpMethod method, std::string_view path_template) {
  entries_.push_back({method, path_template, split_path(path_template), nullptr, nullptr});
}

RouteLookup RouteTable::find(Verb verb, std::string_view path) const {
  const auto segments = split_path(path);
  const auto same_path = [&](const Entry& e) {
    if (e.segments.size() != segments.size()) return false;
    for (std::size_t i = 0; i < segments.size(); ++i) {
      if (is_placeholder(e.segments[i])) {
        if (segments[i].empty()) return false;
      } else if (percent_decode(segments[i], false) != e.segments[i]) {
        return false;
      }
    }
    return true;
  };
  const bool get_like = verb == Verb::Get || verb == Verb::Head;
  RouteLookup out;
  bool takes[4] = {false, false, false, false};  // indexed by HttpMethod
  for (const auto& e : entries_) {
    if (!same_path(e)) continue;
    const bool method_ok = (get_like && e.method == HttpMethod::Get) ||
                           (verb == Verb::Post && e.method == HttpMethod::Post) ||
                           (verb == Verb::Put && e.method == HttpMethod::Put) ||
                           (verb == Verb::Delete && e.method == HttpMethod::Delete);
    if (method_ok) {
      RouteMatch m{e.action, e.route, e.path_template, {}};
      for (std::size_t i = 0; i < segments.size(); ++i)
        if (is_placeholder(e.segments[i]))
          m.path_params.emplace_back(std::string(e.segments[i].substr(1, e.segments[i].size() - 2)),
                                     percent_decode(segments[i], false));
      out.match = std::move(m);
      return out;
    }
    takes[static_cast<int>(e.method)] = true;
  }
  // Allow in a fixed order, HEAD wherever GET is.
  constexpr std::pair<HttpMethod, std::string_view> kOrder[] = {
      {HttpMethod::Get, "GET, HEAD"}, {HttpMethod::Post, "POST"}, {HttpMethod::Put, "PUT"},
      {HttpMethod::Delete, "DELETE"}};
  for (const auto& [method, names] : kOrder) {
    if (!takes[static_cast<int>(method)]) continue;
    if (!out.allow.empty()) out.allow += ", ";
    out.allow += names;
  }
  return out;
}

Result<void> check_target(std::string_view target) {
  if (target.size() > kMaxTargetBytes)
    return fail(ErrorCode::uri_too_long, "request target of {} bytes is over the {} byte limit", target.size(),
                kMaxTargetBytes);
  return {};
}

Result<void> check_json_content_type(std::optional<std::string_view> content_type, bool has_body) {
  if (!has_body) return {};  // nothing to misread, whatever the header says
  if (!content_type) {
    return fail(ErrorCode::unsupported_media_type,
                "a JSON body needs Content-Type: application/json (the request had none)");
  }
  const std::string_view media = trim(content_type->substr(0, content_type->find(';')));
  if (boost::beast::iequals(media, "application/json")) return {};
  return fail(ErrorCode::unsupported_media_type, "this route takes application/json, not '{}'",
              std::string(trim(*content_type)).substr(0, 128));
}

Error header_parse_error(const boost::system::error_code& ec, std::string_view parsed_target,
                         std::string_view unconsumed) {
  if (ec == http::error::header_limit) {
    // Beast consumes the request line once it is whole: then the message
    // has its target. Otherwise the line has not ended within the limit, and
    // everything after the method so far is target.
    std::size_t target = parsed_target.size();
    if (target == 0) {
      const std::string_view line = unconsumed.substr(0, unconsumed.find('\n'));
      const auto space = line.find(' ');
      target = space == std::string_view::npos ? 0 : line.size() - space - 1;
    }
    if (target > kMaxTargetBytes)
      return {ErrorCode::uri_too_long, fmt::format("request target over the {} byte limit", kMaxTargetBytes)};
    return {ErrorCode::invalid_argument,
            fmt::format("request header fields over the {} byte limit", kMaxHeaderFieldBytes)};
  }
  if (ec == http::error::multiple_content_length)
    return {ErrorCode::invalid_argument, "conflicting Content-Length headers: the body's length is ambiguous"};
  if (ec == http::error::bad_content_length)
    return {ErrorCode::invalid_argument,
            "invalid Content-Length (not a number, or sent with Transfer-Encoding: chunked)"};
  if (ec == http::error::bad_transfer_encoding)
    return {ErrorCode::invalid_argument,
            "invalid Transfer-Encoding (only chunked, last, and never with Content-Length)"};
  if (ec == http::error::body_limit)
    return {ErrorCode::payload_too_large, "request body over the limit"};
  return {ErrorCode::invalid_argument, "malformed HTTP request: " + ec.message()};
}

}  // namespace memd
