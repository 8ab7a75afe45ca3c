#include "daemon.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <fmt/format.h>

namespace memd::load {
namespace {

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exit {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("signal {}", WTERMSIG(status));
  return "unknown";
}

// "memd listening on http://127.0.0.1:PORT" → PORT, or 0.
int banner_port(const std::string& line) {
  const auto at = line.find("http://");
  if (at == std::string::npos) return 0;
  const auto colon = line.rfind(':');
  if (colon == std::string::npos || colon < at + 7) return 0;
  int port = 0;
  const char* begin = line.data() + colon + 1;
  const char* end = line.data() + line.size();
  while (end > begin && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '/')) --end;
  auto [p, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc{} || p != end || port < 1 || port > 65535) return 0;
  return port;
}

}  // namespace

std::unique_ptr<Daemon> Daemon::spawn(const std::string& path, const std::vector<std::uint64_t>& host_devices,
                                      const std::vector<std::string>& engine_args,
                                      const std::vector<std::string>& serve_args, const std::string& log_path,
                                      std::chrono::milliseconds startup, std::string& why) {
  std::vector<std::string> args{path, "--no-cuda"};
  for (const auto bytes : host_devices) {
    args.push_back("--host-device");
    args.push_back(std::to_string(bytes));
  }
  args.insert(args.end(), engine_args.begin(), engine_args.end());
  for (const char* a : {"serve", "--listen", "127.0.0.1:0"}) args.push_back(a);
  args.insert(args.end(), serve_args.begin(), serve_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int log_fd = -1;
  if (!log_path.empty()) {
    log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      why = fmt::format("--daemon-log: cannot open '{}'", log_path);
      return nullptr;
    }
  }
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    why = "pipe failed";
    if (log_fd >= 0) ::close(log_fd);
    return nullptr;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    why = "fork failed";
    ::close(out[0]);
    ::close(out[1]);
    if (log_fd >= 0) ::close(log_fd);
    return nullptr;
  }
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out[1], STDOUT_FILENO);
    if (log_fd >= 0) ::dup2(log_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  if (log_fd >= 0) ::close(log_fd);

  std::unique_ptr<Daemon> d(new Daemon);
  d->pid_ = pid;
  d->spawned_ = true;
  d->stdout_fd_ = out[0];
  std::string pending;
  const auto deadline = std::chrono::steady_clock::now() + startup;
  while (d->port_ == 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      why = fmt::format("{} printed no 'listening on http://…' line within {} ms", path, startup.count());
      return nullptr;  // the destructor kills and reaps it
    }
    pollfd p{d->stdout_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char chunk[4096];
    const ssize_t n = ::read(d->stdout_fd_, chunk, sizeof chunk);
    if (n <= 0) {
      int status = 0;
      ::waitpid(pid, &status, 0);
      d->reaped_ = true;
      why = fmt::format("{} exited before serving ({})", path, describe(status));
      return nullptr;
    }
    pending.append(chunk, static_cast<std::size_t>(n));
    for (auto nl = pending.find('\n'); nl != std::string::npos && d->port_ == 0; nl = pending.find('\n')) {
      d->port_ = banner_port(pending.substr(0, nl));
      pending.erase(0, nl + 1);
    }
    if (pending.size() > 65536) pending.clear();
  }
  // The rest of stdout is read and dropped, so the daemon never blocks on it.
  d->drain_ = std::thread([fd = d->stdout_fd_] {
    char chunk[4096];
    while (::read(fd, chunk, sizeof chunk) > 0) {
    }
  });
  return d;
}

std::unique_ptr<Daemon> Daemon::attach(pid_t pid, int port) {
  std::unique_ptr<Daemon> d(new Daemon);
  d->pid_ = pid;
  d->port_ = port;
  return d;
}

Daemon::~Daemon() {
  if (spawned_ && !reaped_) stop(std::chrono::milliseconds(0));
  if (drain_.joinable()) drain_.join();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

bool Daemon::exited() const {
  if (!spawned_) return ::access(fmt::format("/proc/{}/status", pid_).c_str(), F_OK) != 0;
  if (reaped_) return true;
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return true;
  return info.si_pid == pid_;
}

void Daemon::kill_now() {
  if (!spawned_ || reaped_) return;
  killed_ = true;
  ::kill(pid_, SIGKILL);
}

std::string Daemon::stop(std::chrono::milliseconds grace) {
  if (!spawned_) return "attached";
  if (reaped_) return ended_;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) != pid_) {
    if (grace.count() > 0) ::kill(pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    bool done = false;
    while (!done && std::chrono::steady_clock::now() < deadline) {
      ::usleep(10'000);
      done = ::waitpid(pid_, &status, WNOHANG) == pid_;
    }
    if (!done) {
      killed_ = true;
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    }
  }
  reaped_ = true;
  ended_ = describe(status);
  if (killed_) ended_ += " (killed by memd-load)";
  return ended_;
}

}  // namespace memd::load
