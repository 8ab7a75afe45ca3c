// LeaseClient: the socket door's lease actions, from the leasing side.
#include "lease/lease_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace memd {

namespace {

// An answer is one small JSON object; a line longer than this is a broken peer.
constexpr std::size_t kMaxAnswer = 1 << 20;
constexpr std::size_t kMaxFdsPerRead = 16;

void close_all(std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

Result<std::string> text_key(const nlohmann::json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_string())
    return fail(ErrorCode::invalid_argument, "lease answer: \"{}\" must be a string", key);
  return it->get<std::string>();
}

// A JSON integer > 0 (parsed text gives unsigned; a built value may be signed).
std::optional<std::uint64_t> positive(const nlohmann::json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>() == 0 ? std::nullopt : std::optional(v.get<std::uint64_t>());
  if (v.is_number_integer() && v.get<std::int64_t>() > 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
  return std::nullopt;
}

Result<std::uint64_t> size_key(const nlohmann::json& o, const char* key) {
  auto it = o.find(key);
  const auto value = it == o.end() ? std::nullopt : positive(*it);
  if (!value) return fail(ErrorCode::invalid_argument, "lease answer: \"{}\" must be a positive integer", key);
  return *value;
}

}  // namespace

Result<LeasedMemory> parse_lease_answer(const nlohmann::json& result) {
  if (!result.is_object()) return fail(ErrorCode::invalid_argument, "lease answer: the result is not an object");
  LeasedMemory g;
  auto id = text_key(result, "leaseId");
  if (!id) return fail(id.error());
  g.lease_id = std::move(*id);
  auto device = text_key(result, "deviceId");
  if (!device) return fail(device.error());
  g.device = std::move(*device);
  auto size = size_key(result, "sizeBytes");
  if (!size) return fail(size.error());
  g.size_bytes = *size;
  auto map = size_key(result, "mapSize");
  if (!map) return fail(map.error());
  g.map_size = *map;
  if (g.map_size < g.size_bytes)
    return fail(ErrorCode::invalid_argument, "lease answer: mapSize {} is less than sizeBytes {}", g.map_size,
                g.size_bytes);
  auto kind = text_key(result, "handleType");
  if (!kind) return fail(kind.error());
  if (*kind == to_string(ShareableKind::Memfd)) g.kind = ShareableKind::Memfd;
  else if (*kind == to_string(ShareableKind::CudaPosixFd)) g.kind = ShareableKind::CudaPosixFd;
  else return fail(ErrorCode::invalid_argument, "lease answer: unknown handleType '{}'", *kind);
  if (auto it = result.find("gpuUuid"); it != result.end() && !it->is_null()) {
    if (!it->is_string()) return fail(ErrorCode::invalid_argument, "lease answer: \"gpuUuid\" must be a string");
    g.gpu_uuid = it->get<std::string>();
  }
  auto fds = result.find("fds");
  if (fds == result.end() || positive(*fds) != std::optional<std::uint64_t>(1))
    return fail(ErrorCode::invalid_argument, "lease answer: a lease carries exactly one descriptor (\"fds\": 1)");
  return g;
}

Result<std::unique_ptr<LeaseClient>> LeaseClient::connect(const LeaseClientOptions& options) {
  sockaddr_un addr{};
  if (options.socket_path.empty() || options.socket_path.size() >= sizeof(addr.sun_path))
    return fail(ErrorCode::invalid_argument, "socket path '{}' is empty or longer than {} bytes", options.socket_path,
                sizeof(addr.sun_path) - 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(ErrorCode::unavailable, "socket(): {}", std::strerror(errno));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, options.socket_path.data(), options.socket_path.size());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int error = errno;
    ::close(fd);
    return fail(ErrorCode::unavailable, "cannot connect to memd at {}: {}", options.socket_path,
                std::strerror(error));
  }
  auto client = std::unique_ptr<LeaseClient>(new LeaseClient(fd, options.timeout));
  nlohmann::json hello = nlohmann::json::object();
  if (options.token) hello["token"] = *options.token;
  if (options.owner) hello["owner"] = *options.owner;
  if (options.session) hello["session"] = *options.session;
  auto answer = client->call("hello", std::move(hello));
  if (!answer) return fail(answer.error());
  close_all(answer->second);
  if (auto it = answer->first.find("owner"); it != answer->first.end() && it->is_string())
    client->owner_ = it->get<std::string>();
  return client;
}

LeaseClient::~LeaseClient() {
  close_all(fds_);
  if (fd_ >= 0) ::close(fd_);  // the daemon ends every lease of this connection
}

Result<LeasedMemory> LeaseClient::lease(std::uint64_t bytes, const std::string& gpu_uuid, const std::string& device) {
  nlohmann::json params = {{"sizeBytes", bytes}};
  if (!gpu_uuid.empty()) params["gpuUuid"] = gpu_uuid;
  else params["deviceId"] = device;
  auto answer = call("memory_lease", std::move(params));
  if (!answer) return fail(answer.error());
  auto& [result, fds] = *answer;
  auto grant = parse_lease_answer(result);
  if (!grant || fds.size() != 1) {
    // Whatever came, the lease is not usable: give it back if it has a name.
    const std::size_t received = fds.size();
    close_all(fds);
    if (auto it = result.find("leaseId"); result.is_object() && it != result.end() && it->is_string())
      (void)release(it->get<std::string>());
    if (!grant) return fail(ErrorCode::backend_error, "memd's lease answer is broken: {}", grant.error().message);
    return fail(ErrorCode::backend_error, "memd's lease answer carried {} descriptors, not 1", received);
  }
  grant->fd = fds.front();
  return grant;
}

Result<void> LeaseClient::release(const std::string& lease_id) {
  auto answer = call("memory_lease_release", {{"leaseId", lease_id}});
  if (!answer) return fail(answer.error());
  close_all(answer->second);
  return {};
}

Result<void> LeaseClient::receive_line(std::string& line) {
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      line.assign(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
      return {};
    }
    if (buffer_.size() > kMaxAnswer) return fail(ErrorCode::backend_error, "memd's answer is longer than 1 MiB");
    pollfd p{fd_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(timeout_.count()));
    if (ready == 0) return fail(ErrorCode::unavailable, "memd did not answer within {} ms", timeout_.count());
    if (ready < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::unavailable, "poll on memd's socket: {}", std::strerror(errno));
    }
    char data[65536];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerRead)];
    iovec iov{data, sizeof(data)};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return fail(ErrorCode::unavailable, "reading memd's socket: {}", std::strerror(errno));
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int received = -1;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds_.push_back(received);
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0)
      return fail(ErrorCode::backend_error, "descriptors from memd were cut off in transit");
    if (n == 0) return fail(ErrorCode::unavailable, "memd closed the connection");
    buffer_.append(data, static_cast<std::size_t>(n));
  }
}

Result<std::pair<nlohmann::json, std::vector<int>>> LeaseClient::call(const std::string& action,
                                                                       nlohmann::json params) {
  std::lock_guard lock(mutex_);
  if (fd_ < 0) return fail(ErrorCode::unavailable, "the connection to memd is closed");
  const std::string id = std::to_string(++next_id_);
  std::string request = nlohmann::json{{"id", id}, {"action", action}, {"params", std::move(params)}}.dump();
  request.push_back('\n');
  for (std::size_t sent = 0; sent < request.size();) {
    const ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::unavailable, "sending {} to memd: {}", action, std::strerror(errno));
    }
    sent += static_cast<std::size_t>(n);
  }
  std::string line;
  if (auto ok = receive_line(line); !ok) return fail(ok.error());
  auto answer = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (answer.is_discarded() || !answer.is_object())
    return fail(ErrorCode::backend_error, "memd's answer to {} is not a JSON object", action);
  if (auto it = answer.find("id"); it == answer.end() || *it != id)
    return fail(ErrorCode::backend_error, "memd's answer does not match request {} ({})", id, action);
  // The descriptors this answer carried: "fds" of its result, from the front.
  std::vector<int> mine;
  const auto ok = answer.find("ok");
  if (ok == answer.end() || !ok->is_boolean())
    return fail(ErrorCode::backend_error, "memd's answer to {} has no \"ok\"", action);
  if (!ok->get<bool>()) {
    const auto error = answer.value("error", nlohmann::json::object());
    const std::string code = error.is_object() && error.contains("code") && error["code"].is_string()
                                 ? error["code"].get<std::string>()
                                 : "internal";
    const std::string message = error.is_object() && error.contains("message") && error["message"].is_string()
                                    ? error["message"].get<std::string>()
                                    : "";
    return fail(parse_error_code(code).value_or(ErrorCode::internal), "memd refused {}: {}", action, message);
  }
  auto result = answer.value("result", nlohmann::json());
  std::size_t count = 0;
  if (result.is_object())
    if (auto f = result.find("fds"); f != result.end() && f->is_number_unsigned())
      count = static_cast<std::size_t>(std::min<std::uint64_t>(f->get<std::uint64_t>(), kMaxFdsPerRead));
  if (count > fds_.size()) {
    close_all(fds_);
    return fail(ErrorCode::backend_error, "memd's answer to {} names {} descriptors that did not come", action, count);
  }
  mine.assign(fds_.begin(), fds_.begin() + static_cast<std::ptrdiff_t>(count));
  fds_.erase(fds_.begin(), fds_.begin() + static_cast<std::ptrdiff_t>(count));
  return std::pair{std::move(result), std::move(mine)};
}

}  // namespace memd
