// /proc/meminfo parsing: values are in kB (really KiB) per proc(5).
#include "backends/host/meminfo.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

namespace memd {
namespace {

// "  16384 kB" → 16384 * 1024; nullopt on anything else.
std::optional<std::uint64_t> parse_kib_value(std::string_view rest) {
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), value);
  if (ec != std::errc{} || end == rest.data()) return std::nullopt;
  rest.remove_prefix(static_cast<std::size_t>(end - rest.data()));
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t' || rest.back() == '\r'))
    rest.remove_suffix(1);
  if (rest != "kB") return std::nullopt;
  if (value > (~std::uint64_t{0} >> 10)) return std::nullopt;
  return value * 1024;
}

}  // namespace

Result<SystemMemory> parse_meminfo(std::string_view text) {
  std::optional<std::uint64_t> total, available;
  while (!text.empty()) {
    auto eol = text.find('\n');
    auto line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    auto key = line.substr(0, colon);
    if (key == "MemTotal") {
      total = parse_kib_value(line.substr(colon + 1));
      if (!total) return fail(ErrorCode::invalid_argument, "malformed MemTotal line in meminfo");
    } else if (key == "MemAvailable") {
      available = parse_kib_value(line.substr(colon + 1));
      if (!available)
        return fail(ErrorCode::invalid_argument, "malformed MemAvailable line in meminfo");
    }
  }
  if (!total) return fail(ErrorCode::invalid_argument, "meminfo has no MemTotal");
  if (!available) return fail(ErrorCode::invalid_argument, "meminfo has no MemAvailable");
  if (*available > *total)
    return fail(ErrorCode::invalid_argument, "meminfo MemAvailable {} exceeds MemTotal {}",
                *available, *total);
  return SystemMemory{*total, *available};
}

Result<SystemMemory> read_meminfo() {
  std::ifstream in("/proc/meminfo");
  if (!in) return fail(ErrorCode::backend_error, "cannot open /proc/meminfo: {}", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  return parse_meminfo(text.str());
}

}  // namespace memd
