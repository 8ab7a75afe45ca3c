// libFuzzer target: arbitrary bytes as an HTTP request, through Beast's
// request parser and memd's request decoding (server/http/request_target).
//
// The bytes arrive in two pieces split where the first byte says, as a socket
// would deliver them, so the parser's incremental paths run too. Whatever the
// bytes: a refusal maps to a code of the closed list with a 4xx status; a
// parsed header's target decodes without growing, its query pairs and route
// lookup hold their invariants (a match has one decoded value per
// placeholder; a miss lists allowed methods only for a known path), and the
// header checks answer a value, never crash.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "protocol/action_table.hpp"
#include "server/http/request_target.hpp"

namespace {

namespace http = boost::beast::http;

const memd::RouteTable& routes() {
  static const memd::RouteTable table = [] {
    memd::RouteTable t(memd::action_table());
    t.add(memd::HttpMethod::Get, "/api/openapi.json");
    return t;
  }();
  return table;
}

void check_refusal(const boost::system::error_code& ec, std::string_view target, std::string_view rest) {
  const memd::Error error = memd::header_parse_error(ec, target, rest);
  const int status = memd::http_status(error.code);
  if (status < 400 || status > 499 || error.message.empty()) std::abort();
}

std::size_t placeholders(std::string_view path_template) {
  std::size_t n = 0;
  for (char c : path_template) n += c == '{';
  return n;
}

void check_header(const http::request<http::string_body>& req) {
  const std::string_view target = req.target();
  const auto length_ok = memd::check_target(target);
  if (!length_ok && length_ok.error().code != memd::ErrorCode::uri_too_long) std::abort();
  const std::string_view path = memd::target_path(target);
  if (memd::percent_decode(path, false).size() > path.size()) std::abort();
  for (const auto& [key, value] : memd::query_pairs(target))
    if (key.size() + value.size() > target.size()) std::abort();

  const auto lookup = routes().find(memd::parse_verb(req.method_string()), path);
  if (lookup.match) {
    if (!lookup.allow.empty()) std::abort();
    if (lookup.match->path_params.size() != placeholders(lookup.match->path_template)) std::abort();
    for (const auto& [name, value] : lookup.match->path_params)
      if (name.empty() || value.size() > path.size()) std::abort();
  }
  const auto field = req.find(http::field::content_type);
  const auto type = field == req.end() ? std::nullopt : std::optional<std::string_view>(field->value());
  const auto typed = memd::check_json_content_type(type, !req.body().empty());
  if (!typed && typed.error().code != memd::ErrorCode::unsupported_media_type) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t split = 1 + static_cast<std::size_t>(data[0]) * (size - 1) / 255;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

  http::request_parser<http::string_body> parser;
  parser.header_limit(memd::kMaxHeaderBytes);
  parser.body_limit(64 * 1024);
  std::string pending;
  boost::system::error_code ec;
  for (const std::string_view piece : {std::string_view(bytes).substr(0, split - 1),
                                       std::string_view(bytes).substr(split - 1)}) {
    pending += piece;
    // Never an empty buffer: asio's buffer() of an empty string has a null
    // data pointer, and Beast does arithmetic on it (UBSan stops there);
    // Beast's own read loops never pass one.
    while (!pending.empty()) {
      const std::size_t used = parser.put(boost::asio::buffer(pending), ec);
      pending.erase(0, used);
      if (ec != http::error::need_more || used == 0 || parser.is_done()) break;
    }
    if ((ec && ec != http::error::need_more) || parser.is_done()) break;
  }
  if (ec && ec != http::error::need_more) {
    check_refusal(ec, parser.get().target(), pending);
    return 0;
  }
  if (parser.is_header_done()) check_header(parser.get());
  return 0;
}
