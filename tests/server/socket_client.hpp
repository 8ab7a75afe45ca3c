// tests/server/socket_client.hpp — a test peer of the Unix socket door.
//
// Test-only: connects to a socket path, sends request lines (or any raw
// bytes, for the hostile cases), and receives answer lines with the file
// descriptors they carry. Descriptors arrive with (or before) the bytes that
// start their answer, so every descriptor received is queued and an answer
// whose result says "fds": N takes the first N — the rule any peer follows.
// Every wait has a timeout, so a server that fails to answer fails the test
// instead of hanging it.
//
// Thread safety: one thread per SocketClient.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace memd::testing {

// A descriptor closed when dropped.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const noexcept { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct SocketAnswer {
  std::string line;
  nlohmann::json json;  // discarded when the line is not JSON
  std::vector<UniqueFd> fds;

  bool ok() const { return json.is_object() && json.value("ok", false); }
  std::string code() const {
    if (!json.is_object() || !json.contains("error")) return "";
    return json["error"].value("code", "");
  }
  std::string message() const {
    if (!json.is_object() || !json.contains("error")) return "";
    return json["error"].value("message", "");
  }
  const nlohmann::json& result() const { return json.at("result"); }
};

class SocketClient {
 public:
  explicit SocketClient(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) close();
  }
  ~SocketClient() { close(); }
  SocketClient(const SocketClient&) = delete;
  SocketClient& operator=(const SocketClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send_raw(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  bool send_line(std::string_view line) { return send_raw(std::string(line) + "\n"); }
  bool send(const nlohmann::json& request) { return send_line(request.dump()); }

  // The next answer and the descriptors its result announces; nullopt on
  // timeout or when the server closed first.
  std::optional<SocketAnswer> receive(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto newline = buffer_.find('\n'); newline != std::string::npos) {
        SocketAnswer answer;
        answer.line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        answer.json = nlohmann::json::parse(answer.line, nullptr, /*allow_exceptions=*/false);
        std::size_t n = 0;
        if (answer.ok() && answer.json["result"].is_object())
          n = answer.json["result"].value("fds", std::size_t{0});
        if (n > fds_.size()) {
          ADD_FAILURE() << "answer announces " << n << " descriptors, " << fds_.size() << " arrived";
          n = fds_.size();
        }
        for (std::size_t i = 0; i < n; ++i) {
          answer.fds.push_back(std::move(fds_.front()));
          fds_.pop_front();
        }
        return answer;
      }
      if (!read_more(deadline)) return std::nullopt;
    }
  }

  std::optional<SocketAnswer> call(std::string_view action, const nlohmann::json& params = nlohmann::json::object()) {
    const std::string id = std::to_string(++next_id_);
    if (!send({{"id", id}, {"action", action}, {"params", params}})) return std::nullopt;
    auto answer = receive();
    if (answer && answer->json.is_object() && answer->json["id"] != id)
      ADD_FAILURE() << "answer to " << id << " came with id " << answer->json["id"].dump();
    return answer;
  }
  std::optional<SocketAnswer> hello(const nlohmann::json& params) { return call("hello", params); }

  // True once the server closed the connection (end of input or a reset),
  // discarding any answers still to read.
  bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (read_more(deadline)) buffer_.clear();
    return closed_;
  }

  std::size_t descriptors_waiting() const { return fds_.size(); }

 private:
  // Reads what is there (waiting until the deadline); false at the deadline
  // or when the server closed.
  bool read_more(std::chrono::steady_clock::time_point deadline) {
    if (fd_ < 0 || closed_) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char data[65536];
    iovec iov{data, sizeof data};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 64)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (n <= 0) {
      closed_ = true;  // end of input, or ECONNRESET after the server closed with our bytes unread
      return false;
    }
    if (msg.msg_flags & MSG_CTRUNC) ADD_FAILURE() << "descriptors were cut off (MSG_CTRUNC)";
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds_.emplace_back(fd);
      }
    }
    buffer_.append(data, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool closed_ = false;
  std::string buffer_;
  std::deque<UniqueFd> fds_;
  int next_id_ = 0;
};

}  // namespace memd::testing
