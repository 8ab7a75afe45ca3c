// server/http/http_options.hpp — how `memd serve` listens, and the rule that
// keeps it safe.
//
// memd hands out and reads back memory: off loopback it must not be open to
// anyone who can reach the port, so a non-loopback listen address is refused
// unless bearer tokens are configured, --token or --tokens
// (validate_http_options).
//
// Thread safety: values and pure functions.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "server/http/rate_limiter.hpp"
#include "memd/error.hpp"
#include "memd/size.hpp"
#include "server/http/tokens_file.hpp"

namespace memd {

inline constexpr int kDefaultPort = 7870;
inline constexpr std::uint64_t kDefaultMaxBody = 64 * kMiB;
inline constexpr std::uint64_t kDefaultMaxUpload = 1 * kGiB;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = kDefaultPort;  // 0: any free port (tests)
  std::string token;        // the admin's bearer token (--token)
  TokenTable tokens;        // bearer token → owner (--tokens); both empty: loopback only
  int threads = 8;     // worker pool: runs the action handlers (they may block)
  int io_threads = 2;  // run the sockets; never block, carry any number of connections
  std::uint64_t max_body = kDefaultMaxBody;      // JSON bodies
  std::uint64_t max_upload = kDefaultMaxUpload;  // PUT …/data bodies
  // Per connection. header: from a request's first byte to its last header
  // line (cuts off slowloris clients). body: longest pause between two reads
  // of a request body. idle: a keep-alive connection with no request.
  // write: a response's first byte to its last, plus write_per_mib for
  // every MiB of it.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds idle_timeout{120'000};
  std::chrono::milliseconds write_timeout{30'000};
  std::chrono::milliseconds write_per_mib{1'000};
  int backlog = 4096;  // listen(2) queue; the kernel caps it at somaxconn
  // HttpServer::shutdown(): how long requests in flight may take to finish
  // before their connections are closed anyway.
  std::chrono::milliseconds shutdown_grace{10'000};
  // How often the access summary is logged (at info, only after traffic).
  std::chrono::milliseconds access_summary{60'000};
  // Server-sent events (GET /api/memory/events): a comment is sent after this
  // long without an event, so proxies and clients see a live stream; at most
  // this many streams at once (one more is answered 503 unavailable).
  std::chrono::milliseconds event_keepalive{15'000};
  std::size_t max_event_streams = 4096;
  // Per-owner request and byte rates (server/http/rate_limiter.hpp); off
  // by default, and not on loopback unless asked.
  RateLimitOptions rate_limit;
};

// "127.0.0.1:7870", "[::1]:7870", "localhost:0", "0.0.0.0:80" → host and port.
Result<void> parse_listen(std::string_view listen, HttpOptions& options);
// 127.0.0.0/8, ::1 and "localhost".
bool is_loopback_host(std::string_view host) noexcept;
// Refuses non-loopback without a token, a --token that is also a --tokens
// token, and nonsensical limits.
Result<void> validate_http_options(const HttpOptions& options);

}  // namespace memd
