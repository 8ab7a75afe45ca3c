// Size parsing for flags and wire values ("512MiB", "8GiB", "1.5G", "4096").
#include "memd/size.hpp"

#include <cmath>
#include <cstdio>
#include <limits>

namespace memd {

Result<std::uint64_t> parse_size(std::string_view text) {
  if (text.empty()) return fail(ErrorCode::invalid_argument, "empty size");
  if (text.size() > 64) return fail(ErrorCode::invalid_argument, "size text too long");
  std::size_t i = 0;
  std::uint64_t whole = 0;
  bool any_digit = false;
  constexpr std::uint64_t kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    std::uint64_t d = static_cast<std::uint64_t>(text[i] - '0');
    if (whole > (kMax - d) / 10) return fail(ErrorCode::invalid_argument, "size out of range");
    whole = whole * 10 + d;
    any_digit = true;
    ++i;
  }
  double fraction = 0;
  bool has_fraction = false;
  if (i < text.size() && text[i] == '.') {
    has_fraction = true;
    ++i;
    double scale = 0.1;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      fraction += scale * (text[i] - '0');
      scale /= 10;
      any_digit = true;
      ++i;
    }
  }
  if (!any_digit) return fail(ErrorCode::invalid_argument, "invalid size '{}'", text);
  while (i < text.size() && text[i] == ' ') ++i;
  std::string unit;
  for (; i < text.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c < 'a' || c > 'z') return fail(ErrorCode::invalid_argument, "invalid size '{}'", text);
    unit.push_back(c);
  }
  std::uint64_t mult;
  if (unit.empty() || unit == "b") mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") mult = kKiB;
  else if (unit == "m" || unit == "mb" || unit == "mib") mult = kMiB;
  else if (unit == "g" || unit == "gb" || unit == "gib") mult = kGiB;
  else if (unit == "t" || unit == "tb" || unit == "tib") mult = 1024 * kGiB;
  else return fail(ErrorCode::invalid_argument, "unknown size unit in '{}'", text);
  if (has_fraction && mult == 1)
    return fail(ErrorCode::invalid_argument, "fractional byte count '{}'", text);
  if (whole > kMax / mult) return fail(ErrorCode::invalid_argument, "size out of range");
  std::uint64_t bytes = whole * mult;
  auto extra = static_cast<std::uint64_t>(std::floor(fraction * static_cast<double>(mult)));
  if (bytes > kMax - extra) return fail(ErrorCode::invalid_argument, "size out of range");
  return bytes + extra;
}

std::string format_size(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, v >= 100 ? "%.0f %s" : "%.1f %s", v, kUnits[u]);
  return buf;
}

}  // namespace memd
