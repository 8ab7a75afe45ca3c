// Listen-address parsing and the loopback-or-token rule.
#include "server/http/http_options.hpp"

#include <arpa/inet.h>

#include <charconv>

namespace memd {

Result<void> parse_listen(std::string_view listen, HttpOptions& options) {
  std::string_view host, port;
  if (listen.starts_with('[')) {
    const auto close = listen.find(']');
    if (close == std::string_view::npos || close + 1 >= listen.size() || listen[close + 1] != ':')
      return fail(ErrorCode::invalid_argument, "--listen '{}': expected [ADDRESS]:PORT", listen);
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    const auto colon = listen.rfind(':');
    if (colon == std::string_view::npos)
      return fail(ErrorCode::invalid_argument, "--listen '{}': expected ADDRESS:PORT", listen);
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
  }
  int value = -1;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (host.empty() || ec != std::errc() || end != port.data() + port.size() || value < 0 ||
      value > 65535)
    return fail(ErrorCode::invalid_argument, "--listen '{}': expected ADDRESS:PORT (port 0-65535)",
                listen);
  options.host = std::string(host);
  options.port = value;
  return {};
}

bool is_loopback_host(std::string_view host) noexcept {
  if (host == "localhost" || host == "::1") return true;
  std::string text(host);
  in_addr v4{};
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

Result<void> validate_http_options(const HttpOptions& options) {
  if (!is_loopback_host(options.host) && options.token.empty() && options.tokens.empty())
    return fail(ErrorCode::invalid_argument,
                "refusing to listen on {} without --token or --tokens: memd exposes device memory; off "
                "loopback every request must carry a bearer token (or listen on 127.0.0.1)",
                options.host);
  // One token, one identity: the admin token may not also name an owner.
  for (const auto& e : options.tokens)
    if (!options.token.empty() && e.token == options.token)
      return fail(ErrorCode::invalid_argument, "--token is also the token of line {} of --tokens ('{}')", e.line,
                  e.owner);
  if (options.threads < 1 || options.threads > 1024)
    return fail(ErrorCode::invalid_argument, "--threads must be 1..1024");
  if (options.io_threads < 1 || options.io_threads > 64)
    return fail(ErrorCode::invalid_argument, "--io-threads must be 1..64");
  if (options.header_timeout.count() <= 0 || options.body_timeout.count() <= 0 ||
      options.idle_timeout.count() <= 0 || options.write_timeout.count() <= 0 ||
      options.shutdown_grace.count() < 0 || options.access_summary.count() <= 0 || options.backlog < 1)
    return fail(ErrorCode::invalid_argument, "HTTP timeouts and the listen backlog must be positive");
  if (options.event_keepalive.count() <= 0)
    return fail(ErrorCode::invalid_argument, "the event stream keep-alive must be positive");
  if (options.max_event_streams < 1 || options.max_event_streams > 1'000'000)
    return fail(ErrorCode::invalid_argument, "--max-event-streams must be 1..1000000");
  if (options.max_body == 0 || options.max_upload == 0)
    return fail(ErrorCode::invalid_argument, "--max-body and --max-upload must be positive");
  return {};
}

}  // namespace memd
