#include "proc_stats.hpp"

#include <algorithm>

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <string>

namespace memd::load {
namespace {

std::optional<std::string> slurp(const char* path) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char chunk[4096];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) break;
    text.append(chunk, static_cast<std::size_t>(n));
    if (text.size() > (1u << 20)) break;  // /proc files are small; never trust that
  }
  ::close(fd);
  return text;
}

// The value after "key:" on the line that starts with it, spaces skipped.
std::optional<std::string_view> field(std::string_view text, std::string_view key) {
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ':') {
      std::string_view value = line.substr(key.size() + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
      return value;
    }
  }
  return std::nullopt;
}

std::optional<std::uint64_t> leading_number(std::string_view value, std::string_view* rest = nullptr) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc{} || end == value.data()) return std::nullopt;
  if (rest) *rest = value.substr(static_cast<std::size_t>(end - value.data()));
  return n;
}

}  // namespace

std::optional<std::uint64_t> parse_kib_field(std::string_view text, std::string_view key) {
  auto value = field(text, key);
  if (!value) return std::nullopt;
  std::string_view rest;
  auto n = leading_number(*value, &rest);
  if (!n || rest != " kB" || *n > (~std::uint64_t{0} >> 10)) return std::nullopt;
  return *n * 1024;
}

std::optional<ProcMemory> parse_proc_status(std::string_view text) {
  auto rss = parse_kib_field(text, "VmRSS");
  auto hwm = parse_kib_field(text, "VmHWM");
  if (!rss || !hwm) return std::nullopt;
  return ProcMemory{*rss, *hwm};
}

std::optional<ProcMemory> read_proc_memory(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/status";
  auto text = slurp(path.c_str());
  if (!text) return std::nullopt;
  return parse_proc_status(*text);
}

std::optional<std::uint64_t> read_mem_available() {
  auto text = slurp("/proc/meminfo");
  if (!text) return std::nullopt;
  return parse_kib_field(*text, "MemAvailable");
}

std::optional<std::uint64_t> read_open_files_limit(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/limits";
  auto text = slurp(path.c_str());
  if (!text) return std::nullopt;
  const auto at = text->find("Max open files");
  if (at == std::string::npos) return std::nullopt;
  std::string_view line = std::string_view(*text).substr(at + 14);
  while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  return leading_number(line);
}

std::optional<std::uint64_t> parse_proc_stat_cpu_ticks(std::string_view text) {
  // The command name (field 2) is in parentheses and may hold spaces and
  // ')': the fields are counted from the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = text.substr(close + 1);
  std::uint64_t utime = 0, stime = 0;
  // After ')': state is field 3; utime 14 and stime 15.
  for (int field = 3; field <= 15; ++field) {
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    const auto end = std::min(rest.find(' '), rest.size());
    const std::string_view value = rest.substr(0, end);
    if (value.empty()) return std::nullopt;
    if (field == 14 || field == 15) {
      std::uint64_t v = 0;
      auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc{} || p != value.data() + value.size() || v > (std::uint64_t{1} << 50)) return std::nullopt;
      (field == 14 ? utime : stime) = v;
    }
    rest.remove_prefix(end);
  }
  return utime + stime;
}

std::optional<double> read_proc_cpu_seconds(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  auto text = slurp(path.c_str());
  if (!text) return std::nullopt;
  const auto ticks = parse_proc_stat_cpu_ticks(*text);
  const long hz = ::sysconf(_SC_CLK_TCK);
  if (!ticks || hz <= 0) return std::nullopt;
  return static_cast<double>(*ticks) / static_cast<double>(hz);
}

}  // namespace memd::load
