// tests/server/http_test_support.hpp — an in-process REST daemon and a raw
// TCP client for the HTTP server's tests.
//
// The raw client exists because the interesting cases are the ones a
// well-behaved client library never sends: half a header, a body that stops,
// two Content-Length headers, a 20 KiB URL. Every read has a timeout, so a
// server that fails to answer fails the test instead of hanging it.
//
// Thread safety: a Socket is used by one thread; Server runs its daemon on
// its own thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "server/http/http_server.hpp"
#include "service/memory_service.hpp"

namespace memd::testing {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// One raw TCP connection to 127.0.0.1:port.
class Socket {
 public:
  explicit Socket(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
    // The client side must not add Nagle's delay of its own.
    int one = 1;
    if (fd_ >= 0) ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Socket() { close(); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  Socket(Socket&& other) noexcept : fd_(other.fd_), buffer_(std::move(other.buffer_)) { other.fd_ = -1; }

  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }  // for reads paced by the test itself
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Fixes the receive buffer (no autotuning) so a reader that does not read
  // stalls the server's writes early. Keep it over the loopback MSS (64 KiB):
  // a smaller window makes every segment wait for TCP's persist timer.
  void set_receive_buffer(int bytes) { ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes); }

  bool send(std::string_view text) {
    while (!text.empty()) {
      const ssize_t n = ::send(fd_, text.data(), text.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      text.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads one response (headers and a Content-Length or chunked body, the
  // chunked one decoded into the returned text after the header); nullopt on
  // close or timeout.
  std::optional<std::string> response(milliseconds timeout = milliseconds(5000)) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (const auto end = buffer_.find("\r\n\r\n"); end != std::string::npos) {
        const std::string lower = lowercase(buffer_.substr(0, end));
        if (lower.find("transfer-encoding: chunked") != std::string::npos) {
          if (auto body = dechunk(end + 4)) return body;
        } else {
          std::size_t length = 0;
          if (const auto cl = lower.find("content-length:"); cl != std::string::npos)
            length = std::stoul(lower.substr(cl + 15));
          if (buffer_.size() >= end + 4 + length) {
            std::string out = buffer_.substr(0, end + 4 + length);
            buffer_.erase(0, end + 4 + length);
            return out;
          }
        }
      }
      if (!fill(deadline)) return std::nullopt;
    }
  }

  // Reads one response's header only (a HEAD answer has no body).
  std::optional<std::string> header_only(milliseconds timeout = milliseconds(5000)) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (const auto end = buffer_.find("\r\n\r\n"); end != std::string::npos) {
        std::string out = buffer_.substr(0, end + 4);
        buffer_.erase(0, end + 4);
        return out;
      }
      if (!fill(deadline)) return std::nullopt;
    }
  }

  // Everything until the server closes (or the timeout): for a response that
  // is cut short.
  std::string until_closed(milliseconds timeout = milliseconds(5000)) {
    const auto deadline = Clock::now() + timeout;
    while (fill(deadline)) {
    }
    return std::exchange(buffer_, {});
  }

  // True once the server has closed the connection (read returns 0 or an
  // error) within the timeout; anything it sends first is skipped.
  bool closed_within(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      char chunk[4096];
      if (::recv(fd_, chunk, sizeof chunk, 0) <= 0) return true;
    }
  }

  static std::string lowercase(std::string text) {
    for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return text;
  }

 private:
  bool fill(Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  // The header plus the decoded body, once the last chunk is in; consumes it.
  std::optional<std::string> dechunk(std::size_t body_start) {
    std::string out = buffer_.substr(0, body_start);
    std::size_t at = body_start;
    for (;;) {
      const auto line_end = buffer_.find("\r\n", at);
      if (line_end == std::string::npos) return std::nullopt;
      const std::size_t size = std::stoul(buffer_.substr(at, line_end - at), nullptr, 16);
      if (buffer_.size() < line_end + 2 + size + 2) return std::nullopt;
      out.append(buffer_, line_end + 2, size);
      at = line_end + 2 + size + 2;
      if (size == 0) break;
    }
    buffer_.erase(0, at);
    return out;
  }

  int fd_ = -1;
  std::string buffer_;
};

inline constexpr std::string_view kHealthz = "GET /healthz HTTP/1.1\r\nHost: memd\r\n\r\n";

// A daemon in this process, on 127.0.0.1 and a free port.
class Server {
 public:
  explicit Server(HttpOptions options = {}, std::uint64_t device_bytes = 64 * kMiB) {
    ServiceOptions service_options;
    service_options.backends.host_device_sizes = {device_bytes};
    service_options.backends.enable_cuda = false;
    auto service = MemoryService::create(service_options);
    if (!service) return;
    service_ = std::move(*service);
    options.host = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<HttpServer>(*service_, options);
    auto port = server_->bind();
    if (!port) return;
    port_ = *port;
    thread_ = std::thread([this] { EXPECT_TRUE(server_->run()); });
  }
  ~Server() {
    if (server_) server_->stop();
    join();
  }
  int port() const { return port_; }
  MemoryService& service() { return *service_; }
  HttpServer& http() { return *server_; }
  // Waits for run() to return (after shutdown() or stop()).
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::unique_ptr<MemoryService> service_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  int port_ = 0;
};

inline bool answered_ok(const std::optional<std::string>& response) {
  return response && response->starts_with("HTTP/1.1 200");
}

// The body of a response (what follows the header).
inline std::string body_of(const std::string& response) {
  const auto end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

// Deterministic bytes, different for each seed.
inline std::string pattern_bytes(std::size_t size, std::uint32_t seed) {
  std::string bytes(size, '\0');
  std::uint32_t x = seed;
  for (auto& c : bytes) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return bytes;
}

}  // namespace memd::testing
