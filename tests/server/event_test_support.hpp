// tests/server/event_test_support.hpp — reading event streams in tests: a raw
// SSE connection (header, chunks decoded as they come, SseReader), and a
// stdio session that separates event lines from responses.
//
// Thread safety: test-only; each object is used by one thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/sse.hpp"
#include "server/child_process.hpp"

namespace memd::testing {

// GET /api/memory/events (or any target) on a raw connection; the body's
// chunks are decoded and fed to an SseReader as they arrive.
class SseConnection {
 public:
  SseConnection(int port, const std::string& target, const std::string& extra_headers = "") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) close();
    const std::string request = "GET " + target + " HTTP/1.1\r\nHost: memd\r\n" + extra_headers + "\r\n";
    if (fd_ >= 0) ::send(fd_, request.data(), request.size(), MSG_NOSIGNAL);
  }
  ~SseConnection() { close(); }
  SseConnection(const SseConnection&) = delete;
  SseConnection& operator=(const SseConnection&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool ok() const { return fd_ >= 0; }

  // The response header (through the blank line), or nullopt.
  std::optional<std::string> header(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (header_.empty()) {
      if (const auto end = raw_.find("\r\n\r\n"); end != std::string::npos) {
        header_ = raw_.substr(0, end + 4);
        raw_.erase(0, end + 4);
        chunked_ = header_.find("chunked") != std::string::npos;
        break;
      }
      if (!fill(deadline)) return std::nullopt;
    }
    return header_;
  }

  // The body of a non-streamed answer (an error): whatever arrives before close or timeout.
  std::string rest(std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (fill(deadline)) {
    }
    return std::exchange(raw_, {});
  }

  // Waits until at least `count` messages have arrived in all (or timeout);
  // returns every message so far.
  const std::vector<SseMessage>& messages(std::size_t count,
                                          std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    if (!header(timeout)) return messages_;
    for (;;) {
      decode();
      if (messages_.size() >= count || ended_) return messages_;
      if (!fill(deadline)) return messages_;
    }
  }
  const std::vector<std::string>& comments() const { return reader_.comments(); }
  // True once the server ended the body (the last chunk) or closed.
  bool ended_within(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    header(timeout);
    for (;;) {
      decode();
      if (ended_) return true;
      if (!fill(deadline)) return ended_ || closed_;
    }
  }
  bool closed() const { return closed_; }

 private:
  bool fill(std::chrono::steady_clock::time_point deadline) {
    if (fd_ < 0 || closed_) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    raw_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  // Complete chunks → the SSE reader.
  void decode() {
    if (!chunked_) return;
    for (;;) {
      const auto line_end = raw_.find("\r\n");
      if (line_end == std::string::npos) return;
      const std::size_t size = std::stoul(raw_.substr(0, line_end), nullptr, 16);
      if (raw_.size() < line_end + 2 + size + 2) return;
      if (size == 0) {
        ended_ = true;
        raw_.clear();
        return;
      }
      std::vector<SseMessage> out;
      (void)reader_.feed(std::string_view(raw_).substr(line_end + 2, size), out);
      messages_.insert(messages_.end(), out.begin(), out.end());
      raw_.erase(0, line_end + 2 + size + 2);
    }
  }

  int fd_ = -1;
  std::string raw_, header_;
  bool chunked_ = false, ended_ = false, closed_ = false;
  SseReader reader_;
  std::vector<SseMessage> messages_;
};

// A stdio door (memd stdio, or the bridge) whose output mixes responses and
// event lines: call() returns the response to its request and keeps the
// event lines that came before it.
class StdioSession {
 public:
  explicit StdioSession(std::vector<std::string> args) : process_(std::move(args)) {}
  ChildProcess& process() { return process_; }

  std::optional<nlohmann::json> call(const nlohmann::json& request) {
    if (!process_.write(request.dump() + "\n")) return std::nullopt;
    const auto id = request.value("id", nlohmann::json());
    for (;;) {
      auto line = process_.read_line();
      if (!line) return std::nullopt;
      auto json = nlohmann::json::parse(*line, nullptr, false);
      if (json.is_discarded()) return std::nullopt;  // a broken line: the test fails on nullopt
      if (json.contains("event")) {
        events_.push_back(std::move(json));
        continue;
      }
      if (json.value("id", nlohmann::json()) == id) return json;
    }
  }
  // Reads event lines until `count` have arrived in all (or timeout).
  const std::vector<nlohmann::json>& events(std::size_t count,
                                            std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (events_.size() < count) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      auto line = process_.read_line(left);
      if (!line) break;
      auto json = nlohmann::json::parse(*line, nullptr, false);
      if (!json.is_discarded() && json.contains("event")) events_.push_back(std::move(json));
      else unexpected_.push_back(*line);
    }
    return events_;
  }
  const std::vector<std::string>& unexpected() const { return unexpected_; }

 private:
  ChildProcess process_;
  std::vector<nlohmann::json> events_;
  std::vector<std::string> unexpected_;
};

}  // namespace memd::testing
