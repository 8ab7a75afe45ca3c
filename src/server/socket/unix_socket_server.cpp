// The Unix socket door: one epoll thread, non-blocking sockets, JSON lines,
// SCM_RIGHTS.
//
// One thread is enough: every request is a small line and every handler call
// is short (socket_handler.hpp), and it makes the handler's calls ordered
// without locks. Connections are keyed by their number, never by their fd,
// so an event already fetched for a closed connection cannot reach another
// that got the same fd back from accept().
//
// Nothing below the event dispatch closes a connection: deep calls only mark
// it (`broken`: close now; `closing`: close once the queued answers left), and
// settle() acts at the top, so no call holds a reference to a connection
// that was freed under it.
#include "server/socket/unix_socket_server.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"
#include "server/socket/socket_hello.hpp"
#include "server/socket/socket_request.hpp"

namespace memd {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::uint64_t kListenKey = 0;
constexpr std::uint64_t kWakeKey = ~std::uint64_t{0};
constexpr std::size_t kReadChunk = 64 * 1024;
constexpr int kAcceptBurst = 64;
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
constexpr mode_t kSocketMode = 0660;

std::string errno_text(int error) { return std::strerror(error); }

// Descriptors owned until handed to the kernel or dropped.
class OwnedFds {
 public:
  OwnedFds() = default;
  explicit OwnedFds(std::vector<int> fds) : fds_(std::move(fds)) {}
  OwnedFds(OwnedFds&& other) noexcept : fds_(std::move(other.fds_)) { other.fds_.clear(); }
  OwnedFds& operator=(OwnedFds&& other) noexcept {
    if (this != &other) {
      reset();
      fds_ = std::move(other.fds_);
      other.fds_.clear();
    }
    return *this;
  }
  ~OwnedFds() { reset(); }
  void reset() {
    for (int fd : fds_)
      if (fd >= 0) ::close(fd);
    fds_.clear();
  }
  const std::vector<int>& fds() const noexcept { return fds_; }
  bool empty() const noexcept { return fds_.empty(); }
  std::size_t size() const noexcept { return fds_.size(); }

 private:
  std::vector<int> fds_;
};

struct Outgoing {
  std::string text;
  std::size_t sent = 0;
  OwnedFds fds;  // go with the first byte
};

// Sends what the socket takes of `out`, with its descriptors on the first
// byte. The kernel holds its own references to descriptors in flight, so
// ours are closed as soon as any byte left.
ssize_t send_some(int fd, Outgoing& out) {
  const char* data = out.text.data() + out.sent;
  const std::size_t size = out.text.size() - out.sent;
  if (out.sent > 0 || out.fds.empty()) return ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
  const std::size_t n = out.fds.size();
  iovec iov{const_cast<char*>(data), size};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSocketFds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
  cmsghdr* header = CMSG_FIRSTHDR(&msg);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int) * n);
  std::memcpy(CMSG_DATA(header), out.fds.fds().data(), sizeof(int) * n);
  const ssize_t sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (sent > 0) out.fds.reset();
  return sent;
}

std::string error_line(const nlohmann::json& id, const Error& error) {
  return to_wire_text({{"id", id}, {"ok", false}, {"error", error_object(error)}}) + "\n";
}

Result<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.find('\0') != std::string::npos || path.size() >= sizeof addr.sun_path)
    return fail(ErrorCode::invalid_argument, "socket path must be 1..{} bytes with no NUL",
                sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// A socket file at `path` is removed only when connecting to it is refused:
// nobody listens, so it was left by a process that is gone.
Result<void> clear_stale_socket(const std::string& path, const sockaddr_un& addr) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail(ErrorCode::unavailable, "cannot inspect socket path {}: {}", path, errno_text(errno));
  }
  if (!S_ISSOCK(st.st_mode))
    return fail(ErrorCode::conflict, "{} exists and is not a socket; memd does not remove it", path);
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return fail(ErrorCode::unavailable, "socket(): {}", errno_text(errno));
  const int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  const int error = errno;
  ::close(probe);
  // EAGAIN: a live listener whose backlog is full.
  if (rc == 0 || error == EAGAIN || error == EINPROGRESS)
    return fail(ErrorCode::conflict, "another process is serving on {}; stop it or choose another socket path",
                path);
  if (error != ECONNREFUSED)
    return fail(ErrorCode::conflict, "{} is a socket memd cannot probe ({}); not removing it", path,
                errno_text(error));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    return fail(ErrorCode::unavailable, "cannot remove stale socket {}: {}", path, errno_text(errno));
  spdlog::info("socket: removed stale socket file {} (nobody was listening on it)", path);
  return {};
}

}  // namespace

struct UnixSocketServer::Impl {
  struct Connection {
    int fd = -1;
    SocketPeer peer;
    std::optional<Caller> caller;  // set once admitted
    std::string in;                // received bytes; in[in_begin..) not yet served
    std::size_t in_begin = 0;
    std::size_t scanned = 0;  // bytes after in_begin known to hold no newline
    std::deque<Outgoing> out;
    std::size_t out_bytes = 0;
    bool eof = false;      // the peer sent its last byte
    bool closing = false;  // close once `out` is empty
    bool broken = false;   // close now: the socket failed
    std::string why;       // for the close log
    std::optional<SteadyClock::time_point> deadline;  // hello, or the closing linger
    std::uint32_t events = 0;                          // epoll interest now
  };

  std::string path;
  SocketHandler& handler;
  CallerResolver resolver;
  SocketOptions options;

  std::mutex mu;  // start/stop
  bool started = false;
  bool running = false;
  int listen_fd = -1, epoll_fd = -1, wake_fd = -1;
  dev_t dev = 0;
  ino_t ino = 0;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<std::size_t> open{0};

  // The server thread's alone.
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections;
  std::uint64_t next_connection = 1;
  std::optional<SteadyClock::time_point> next_deadline;
  std::optional<SteadyClock::time_point> accept_paused_until;
  SteadyClock::time_point last_refusal_log{};
  std::vector<char> read_buffer = std::vector<char>(kReadChunk);

  Impl(std::string p, SocketHandler& h, CallerResolver r, SocketOptions o)
      : path(std::move(p)), handler(h), resolver(std::move(r)), options(o) {
    // spdlog builds its registry on first use; do it here, not racing on the
    // server thread (the HTTP door met that race under TSan).
    spdlog::default_logger();
  }

  // ---- lifecycle ----

  Result<void> start() {
    std::lock_guard lock(mu);
    if (started) return fail(ErrorCode::conflict, "the socket server on {} was already started", path);
    if (options.max_connections == 0 || options.max_line == 0 || options.max_pending_output == 0)
      return fail(ErrorCode::invalid_argument, "socket options: connections, line and output bounds must be > 0");
    auto addr = socket_address(path);
    if (!addr) return fail(addr.error());
    if (auto ok = clear_stale_socket(path, *addr); !ok) return ok;

    auto undo = [&](Error error) {
      for (int* fd : {&listen_fd, &epoll_fd, &wake_fd})
        if (*fd >= 0) {
          ::close(*fd);
          *fd = -1;
        }
      return std::unexpected<Error>(std::move(error));
    };
    listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) return undo({ErrorCode::unavailable, "socket(): " + errno_text(errno)});
    if (::bind(listen_fd, reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
      const int error = errno;
      if (error == EADDRINUSE)
        return undo({ErrorCode::conflict, fmt::format("{} was bound by another process meanwhile", path)});
      return undo({ErrorCode::unavailable, fmt::format("cannot bind {}: {}", path, errno_text(error))});
    }
    // The file's mode is the first gate (hello the second). Set before
    // listen(): until then a connect is refused, so no peer slips in under
    // the umask's mode.
    struct stat st {};
    if (::chmod(path.c_str(), kSocketMode) != 0 || ::stat(path.c_str(), &st) != 0) {
      const int error = errno;
      ::unlink(path.c_str());
      return undo({ErrorCode::unavailable, fmt::format("cannot set mode 0660 on {}: {}", path, errno_text(error))});
    }
    dev = st.st_dev;
    ino = st.st_ino;
    if (::listen(listen_fd, SOMAXCONN) != 0) {
      const int error = errno;
      ::unlink(path.c_str());
      return undo({ErrorCode::unavailable, fmt::format("cannot listen on {}: {}", path, errno_text(error))});
    }
    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_event listen_event{}, wake_event{};
    listen_event.events = EPOLLIN;
    listen_event.data.u64 = kListenKey;
    wake_event.events = EPOLLIN;
    wake_event.data.u64 = kWakeKey;
    if (epoll_fd < 0 || wake_fd < 0 || ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &listen_event) != 0 ||
        ::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &wake_event) != 0) {
      const int error = errno;
      ::unlink(path.c_str());
      return undo({ErrorCode::unavailable, "epoll: " + errno_text(error)});
    }
    started = true;
    running = true;
    thread = std::thread([this] { run(); });
    spdlog::info("socket: serving on {} (mode 0660, at most {} connections)", path, options.max_connections);
    return {};
  }

  void stop() {
    std::lock_guard lock(mu);
    if (!running) return;
    stopping.store(true, std::memory_order_release);
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
    thread.join();
    ::close(listen_fd);
    ::close(epoll_fd);
    ::close(wake_fd);
    listen_fd = epoll_fd = wake_fd = -1;
    // Only our own socket file: another daemon may have taken the path since.
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) ::unlink(path.c_str());
    running = false;
    spdlog::info("socket: stopped serving on {}", path);
  }

  // ---- the loop ----

  void run() {
    std::array<epoll_event, 128> events{};
    while (!stopping.load(std::memory_order_acquire)) {
      const int n = ::epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), timeout_ms());
      if (n < 0) {
        if (errno == EINTR) continue;
        spdlog::error("socket: epoll_wait failed: {}; the socket door stops", errno_text(errno));
        break;
      }
      for (int i = 0; i < n; ++i) {
        const std::uint64_t key = events[i].data.u64;
        if (key == kWakeKey) {
          std::uint64_t count = 0;
          [[maybe_unused]] auto r = ::read(wake_fd, &count, sizeof count);
        } else if (key == kListenKey) {
          accept_some();
        } else if (auto it = connections.find(key); it != connections.end()) {
          on_event(*it->second, events[i].events);
        }
      }
      expire();
    }
    while (!connections.empty()) close_now(*connections.begin()->second, "the socket door stopped");
  }

  int timeout_ms() const {
    std::optional<SteadyClock::time_point> next = next_deadline;
    if (accept_paused_until && (!next || *accept_paused_until < *next)) next = accept_paused_until;
    if (!next) return -1;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(*next - SteadyClock::now()).count();
    return static_cast<int>(std::clamp<std::int64_t>(left, 0, 60'000));
  }

  void set_deadline(Connection& c, SteadyClock::time_point when) {
    c.deadline = when;
    if (!next_deadline || when < *next_deadline) next_deadline = when;
  }

  // Closes connections past their deadline and resumes a paused accept; the
  // scan runs only when some deadline is due.
  void expire() {
    const auto now = SteadyClock::now();
    if (accept_paused_until && *accept_paused_until <= now) {
      accept_paused_until.reset();
      epoll_event e{};
      e.events = EPOLLIN;
      e.data.u64 = kListenKey;
      ::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listen_fd, &e);
    }
    if (!next_deadline || *next_deadline > now) return;
    next_deadline.reset();
    std::vector<Connection*> due;
    for (auto& [key, c] : connections) {
      if (!c->deadline) continue;
      if (*c->deadline <= now)
        due.push_back(c.get());
      else if (!next_deadline || *c->deadline < *next_deadline)
        next_deadline = c->deadline;
    }
    for (Connection* c : due) {
      if (c->closing) {
        close_now(*c, c->why + "; its last answers were not read in time");
      } else {
        const auto why = fmt::format("no hello within {} ms", options.hello_timeout.count());
        queue(*c, error_line(nullptr, Error{ErrorCode::unauthenticated, why + "; closing the connection"}), {});
        close_now(*c, why);
      }
    }
  }

  void accept_some() {
    for (int i = 0; i < kAcceptBurst; ++i) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        // Out of descriptors or memory: the listening socket stays readable,
        // so stop watching it a moment instead of spinning on it.
        spdlog::warn("socket: accept failed: {}; pausing accepts for {} ms", errno_text(errno),
                     kAcceptPause.count());
        accept_paused_until = SteadyClock::now() + kAcceptPause;
        epoll_event e{};
        e.data.u64 = kListenKey;
        ::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listen_fd, &e);
        return;
      }
      if (connections.size() >= options.max_connections) {
        refuse_connection(fd);
        continue;
      }
      ucred cred{};
      socklen_t length = sizeof cred;
      if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
        cred.pid = 0;
        cred.uid = static_cast<uid_t>(-1);
        cred.gid = static_cast<gid_t>(-1);
      }
      auto c = std::make_unique<Connection>();
      c->fd = fd;
      c->peer = SocketPeer{next_connection++, cred.pid, cred.uid, cred.gid};
      c->events = EPOLLIN | EPOLLRDHUP;
      epoll_event e{};
      e.events = c->events;
      e.data.u64 = c->peer.connection;
      if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &e) != 0) {
        spdlog::warn("socket: cannot watch a new connection: {}", errno_text(errno));
        ::close(fd);
        continue;
      }
      set_deadline(*c, SteadyClock::now() + options.hello_timeout);
      spdlog::debug("socket: connection {} from pid {} uid {} gid {}", c->peer.connection, cred.pid, cred.uid,
                    cred.gid);
      connections.emplace(c->peer.connection, std::move(c));
      open.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // At the connection limit: a best-effort answer (the socket is new, so its
  // buffer takes it), then the close.
  void refuse_connection(int fd) {
    const std::string line = error_line(
        nullptr, Error{ErrorCode::unavailable,
                       fmt::format("memd's socket serves {} connections, its most; try again later",
                                   options.max_connections)});
    [[maybe_unused]] auto n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(fd);
    const auto now = SteadyClock::now();
    if (now - last_refusal_log >= std::chrono::seconds(1)) {
      last_refusal_log = now;
      spdlog::warn("socket: refused a connection: {} open, the most allowed", connections.size());
    }
  }

  // ---- one connection ----

  void on_event(Connection& c, std::uint32_t events) {
    if (events & EPOLLERR) {
      c.broken = true;
      c.why = "socket error";
    }
    if (!c.broken && !c.out.empty()) flush(c);
    if (!c.broken && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) && reading(c)) read_some(c);
    if (!c.broken) serve(c);
    settle(c);
  }

  // Whether more requests may be read: not once closing or at the end of
  // input, and not while the peer leaves too many answers unread.
  bool reading(const Connection& c) const {
    return !c.closing && !c.eof && c.out_bytes < options.max_pending_output;
  }

  void read_some(Connection& c) {
    const ssize_t n = ::recv(c.fd, read_buffer.data(), read_buffer.size(), MSG_DONTWAIT);
    if (n > 0) {
      c.in.append(read_buffer.data(), static_cast<std::size_t>(n));
      return;
    }
    if (n == 0) {
      c.eof = true;
      return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    c.broken = true;
    c.why = "read failed: " + errno_text(errno);
  }

  // Answers the complete lines received, in order, while answers may queue.
  void serve(Connection& c) {
    while (!c.broken && !c.closing && c.out_bytes < options.max_pending_output) {
      const std::string_view rest(c.in.data() + c.in_begin, c.in.size() - c.in_begin);
      const auto newline = rest.find('\n', c.scanned);
      if (newline == std::string_view::npos) {
        c.scanned = rest.size();
        if (rest.size() > options.max_line) {
          too_long(c);
        } else if (c.eof) {
          // The last line may lack its newline, as on stdio.
          std::string last(rest);
          c.in.clear();
          c.in_begin = c.scanned = 0;
          if (last.find_first_not_of(" \t\r") != std::string::npos) answer(c, last);
          if (!c.closing) end_after_answers(c, "the peer closed its end");
        }
        break;
      }
      if (newline > options.max_line) {
        too_long(c);
        break;
      }
      std::string line(rest.substr(0, newline));
      c.in_begin += newline + 1;
      c.scanned = 0;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines are no requests
      answer(c, line);
    }
    if (c.in_begin == c.in.size()) {
      c.in.clear();
      c.in_begin = 0;
    } else if (c.in_begin >= kReadChunk) {
      c.in.erase(0, c.in_begin);
      c.in_begin = 0;
    }
  }

  // Where the next request would start is unknown: answer and close.
  void too_long(Connection& c) {
    queue(c, error_line(nullptr, Error{ErrorCode::payload_too_large,
                                       fmt::format("request line longer than {} bytes; closing the connection",
                                                   options.max_line)}),
          {});
    end_after_answers(c, "over-long line");
  }

  void end_after_answers(Connection& c, std::string why) {
    c.closing = true;
    c.why = std::move(why);
    c.in.clear();
    c.in_begin = c.scanned = 0;
    set_deadline(c, SteadyClock::now() + options.close_linger);
  }

  void answer(Connection& c, const std::string& line) {
    nlohmann::json id = nullptr;
    try {
      auto request = parse_socket_request(line, &id);
      if (!request) return queue(c, error_line(id, request.error()), {});
      if (request->action == "hello") return hello(c, *request);
      if (!c.caller)
        return queue(c,
                     error_line(id, Error{ErrorCode::unauthenticated,
                                          "say hello first: the first request on memd's socket is hello "
                                          "{token | owner, admin, session}"}),
                     {});
      auto reply = guarded("handle", [&] {
        return handler.handle(*c.caller, request->action, request->params, c.peer);
      });
      if (!reply) return queue(c, error_line(id, reply.error()), {});
      reply_with(c, id, std::move(*reply));
    } catch (const std::exception& e) {
      queue(c, error_line(id, Error{ErrorCode::internal, e.what()}), {});
    }
  }

  // A handler call whose exception becomes `internal`.
  template <typename F>
  auto guarded(std::string_view what, F&& call) -> decltype(call()) {
    try {
      return call();
    } catch (const std::exception& e) {
      return fail(ErrorCode::internal, "the socket handler's {} threw: {}", what, e.what());
    } catch (...) {
      return fail(ErrorCode::internal, "the socket handler's {} threw", what);
    }
  }

  void hello(Connection& c, const SocketRequest& request) {
    if (c.caller)
      return queue(c,
                   error_line(request.id, Error{ErrorCode::conflict,
                                                fmt::format("this connection already said hello, as '{}'",
                                                            c.caller->owner)}),
                   {});
    auto refuse = [&](const Error& error) {
      spdlog::warn("socket: connection {} (pid {} uid {} gid {}): hello refused: {}: {}", c.peer.connection,
                   c.peer.pid, c.peer.uid, c.peer.gid, to_string(error.code), error.message);
      queue(c, error_line(request.id, error), {});
      end_after_answers(c, "hello refused");
    };
    auto parsed = parse_socket_hello(request.params);
    if (!parsed) return refuse(parsed.error());
    auto caller = resolve_socket_hello(resolver, *parsed);
    if (!caller) return refuse(caller.error());
    auto admitted = guarded("admit", [&] { return handler.admit(*caller, c.peer); });
    if (!admitted) return refuse(admitted.error());

    c.caller = std::move(*caller);
    c.deadline.reset();
    spdlog::info("socket: connection {} hello: pid {} uid {} gid {} as '{}'{}{}", c.peer.connection, c.peer.pid,
                 c.peer.uid, c.peer.gid, c.caller->owner, c.caller->admin ? " (admin)" : "",
                 c.caller->session ? " in session " + c.caller->session->to_string() : std::string());
    SocketReply reply;
    reply.result = {{"owner", c.caller->owner},
                    {"admin", c.caller->admin},
                    {"session", c.caller->session ? nlohmann::json(c.caller->session->to_string()) : nullptr},
                    {"connection", c.peer.connection}};
    reply_with(c, request.id, std::move(reply));
  }

  void reply_with(Connection& c, const nlohmann::json& id, SocketReply reply) {
    OwnedFds fds(std::move(reply.fds));
    auto refuse = [&](std::string message) {
      spdlog::error("socket: connection {}: {}", c.peer.connection, message);
      queue(c, error_line(id, Error{ErrorCode::internal, std::move(message)}), {});
    };
    if (fds.size() > kMaxSocketFds)
      return refuse(fmt::format("the handler answered {} descriptors; at most {} travel with one answer",
                                fds.size(), kMaxSocketFds));
    if (std::any_of(fds.fds().begin(), fds.fds().end(), [](int fd) { return fd < 0; }))
      return refuse("the handler answered an invalid descriptor");
    if (!reply.result.is_object()) return refuse("the handler's result is not a JSON object");
    // "fds" is the door's word, present exactly when descriptors come along:
    // a peer trusts it to take them from what it received.
    if (fds.empty())
      reply.result.erase("fds");
    else
      reply.result["fds"] = fds.size();
    queue(c, to_wire_text({{"id", id}, {"ok", true}, {"result", std::move(reply.result)}}) + "\n",
          std::move(fds));
  }

  void queue(Connection& c, std::string text, OwnedFds fds) {
    c.out_bytes += text.size();
    c.out.push_back(Outgoing{std::move(text), 0, std::move(fds)});
    flush(c);
  }

  void flush(Connection& c) {
    while (!c.broken && !c.out.empty()) {
      Outgoing& front = c.out.front();
      const ssize_t n = send_some(c.fd, front);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        c.broken = true;
        c.why = "write failed: " + errno_text(errno);
        return;
      }
      front.sent += static_cast<std::size_t>(n);
      c.out_bytes -= static_cast<std::size_t>(n);
      if (front.sent == front.text.size()) c.out.pop_front();
    }
  }

  // The one place a connection is closed or its interest changed, at the top
  // of event handling.
  void settle(Connection& c) {
    if (c.broken || (c.closing && c.out.empty())) return close_now(c, c.why);
    std::uint32_t want = 0;
    if (reading(c)) want |= EPOLLIN | EPOLLRDHUP;
    if (!c.out.empty()) want |= EPOLLOUT;
    if (want == c.events) return;
    epoll_event e{};
    e.events = want;
    e.data.u64 = c.peer.connection;
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c.fd, &e) != 0) return close_now(c, "epoll: " + errno_text(errno));
    c.events = want;
  }

  void close_now(Connection& c, const std::string& why) {
    ::epoll_ctl(epoll_fd, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.out.clear();  // closes descriptors that never left
    if (c.caller) {
      spdlog::info("socket: connection {} closed ({}): pid {} uid {} gid {}, owner '{}'", c.peer.connection, why,
                   c.peer.pid, c.peer.uid, c.peer.gid, c.caller->owner);
      try {
        handler.closed(c.peer);
      } catch (const std::exception& e) {
        spdlog::error("socket: the handler's closed() threw for connection {}: {}", c.peer.connection, e.what());
      } catch (...) {
        spdlog::error("socket: the handler's closed() threw for connection {}", c.peer.connection);
      }
    } else {
      spdlog::debug("socket: connection {} closed before hello ({}): pid {} uid {}", c.peer.connection, why,
                    c.peer.pid, c.peer.uid);
    }
    const std::uint64_t key = c.peer.connection;
    connections.erase(key);  // `c` is gone from here
    open.fetch_sub(1, std::memory_order_relaxed);
  }
};

UnixSocketServer::UnixSocketServer(std::string path, SocketHandler& handler, CallerResolver resolver,
                                   SocketOptions options)
    : impl_(std::make_unique<Impl>(std::move(path), handler, std::move(resolver), options)) {}

UnixSocketServer::~UnixSocketServer() { stop(); }

Result<void> UnixSocketServer::start() { return impl_->start(); }
void UnixSocketServer::stop() { impl_->stop(); }
const std::string& UnixSocketServer::path() const noexcept { return impl_->path; }
std::size_t UnixSocketServer::connections() const noexcept {
  return impl_->open.load(std::memory_order_relaxed);
}

}  // namespace memd
