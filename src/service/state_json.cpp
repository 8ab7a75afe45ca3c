// service/state_json.cpp — see state_json.hpp.
#include "service/state_json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>

#include <fmt/format.h>

#include "memd/iso8601.hpp"
#include "models/strict_json.hpp"

namespace memd {
namespace {

// The documents nest at most four deep (envelope → models → a model → files
// → a file); the margin refuses a hostile million '[' all the same.
constexpr int kMaxStateDepth = 8;

std::string_view type_name(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    case nlohmann::json::value_t::number_float: return "a number with a fraction";
    default: return "something else";
  }
}

// "not valid JSON at byte N: ..." → "line L, column C: ...": a person
// reading the file counts lines.
std::string with_line(std::string_view text, std::string message) {
  constexpr std::string_view kAt = "not valid JSON at byte ";
  if (!message.starts_with(kAt)) return message;
  std::size_t byte = 0;
  const char* first = message.data() + kAt.size();
  const auto [end, ec] = std::from_chars(first, message.data() + message.size(), byte);
  if (ec != std::errc()) return message;
  // nlohmann counts the byte it stopped at from 1.
  const std::size_t at = std::min(byte > 0 ? byte - 1 : 0, text.size());
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return fmt::format("line {}, column {}: not valid JSON{}", line, column, std::string_view(end));
}

bool digits(std::string_view s, std::size_t from, std::size_t count, int& out) {
  if (from + count > s.size()) return false;
  int v = 0;
  for (std::size_t i = from; i < from + count; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  out = v;
  return true;
}

}  // namespace

nlohmann::ordered_json state_envelope(std::string_view kind, std::uint64_t version,
                                      std::chrono::system_clock::time_point now) {
  nlohmann::ordered_json j;
  j["format"] = kStateFormat;
  j["kind"] = kind;
  j["version"] = version;
  j["savedAt"] = iso8601(now);
  return j;
}

std::string render_state_document(const nlohmann::ordered_json& document) {
  return document.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::strict) + "\n";
}

Result<nlohmann::json> parse_state_document(std::string_view text, std::string_view kind, std::uint64_t version) {
  if (text.size() > kMaxStateFileBytes)
    return fail(ErrorCode::invalid_argument, "{} bytes, over the limit of {}", text.size(), kMaxStateFileBytes);
  if (text.empty()) return fail(ErrorCode::invalid_argument, "the file is empty");
  auto parsed = parse_strict_json(text, kMaxStateDepth);
  if (!parsed) return fail(ErrorCode::invalid_argument, "{}", with_line(text, parsed.error().message));
  nlohmann::json& doc = *parsed;
  const StateReader root(doc, "");
  if (!doc.is_object()) return fail(root.error(fmt::format("expected an object, found {}", type_name(doc))));
  auto format = root.member("format");
  if (!format) return fail(format.error());
  auto format_text = format->string(64);
  if (!format_text) return fail(format_text.error());
  if (*format_text != kStateFormat)
    return fail(format->error(fmt::format("expected \"{}\", found {}", kStateFormat, quote_for_message(*format_text))));
  auto kind_member = root.member("kind");
  if (!kind_member) return fail(kind_member.error());
  auto kind_text = kind_member->string(64);
  if (!kind_text) return fail(kind_text.error());
  if (*kind_text != kind)
    return fail(kind_member->error(
        fmt::format("this file holds {}, not {}", quote_for_message(*kind_text), quote_for_message(kind))));
  auto version_member = root.member("version");
  if (!version_member) return fail(version_member.error());
  auto v = version_member->u64(~std::uint64_t{0});
  if (!v) return fail(v.error());
  if (*v != version)
    return fail(version_member->error(
        fmt::format("version {} is not one this memd reads (it reads and writes version {})", *v, version)));
  if (auto saved = root.optional_member("savedAt"))
    if (auto t = saved->time(); !t) return fail(t.error());
  return std::move(doc);
}

std::optional<std::chrono::system_clock::time_point> parse_iso8601(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (s.size() < 20 || s.size() > 30) return std::nullopt;
  if (!digits(s, 0, 4, year) || s[4] != '-' || !digits(s, 5, 2, month) || s[7] != '-' || !digits(s, 8, 2, day) ||
      s[10] != 'T' || !digits(s, 11, 2, hour) || s[13] != ':' || !digits(s, 14, 2, minute) || s[16] != ':' ||
      !digits(s, 17, 2, second))
    return std::nullopt;
  std::size_t at = 19;
  std::int64_t nanos = 0;
  if (s[at] == '.') {
    ++at;
    int n = 0;
    while (at < s.size() && s[at] >= '0' && s[at] <= '9' && n < 9) {
      nanos = nanos * 10 + (s[at] - '0');
      ++at;
      ++n;
    }
    if (n == 0) return std::nullopt;
    for (int i = n; i < 9; ++i) nanos *= 10;
  }
  if (at + 1 != s.size() || s[at] != 'Z') return std::nullopt;
  // system_clock counts int64 nanoseconds, which end in April 2262: a later
  // year would overflow the conversion below.
  if (year < 2000 || year > 2261 || month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59)
    return std::nullopt;
  const auto ymd = std::chrono::year{year} / std::chrono::month{static_cast<unsigned>(month)} /
                   std::chrono::day{static_cast<unsigned>(day)};
  if (!ymd.ok()) return std::nullopt;
  const auto t = std::chrono::sys_days{ymd} + std::chrono::hours{hour} + std::chrono::minutes{minute} +
                 std::chrono::seconds{second} + std::chrono::nanoseconds{nanos};
  return std::chrono::time_point_cast<std::chrono::system_clock::duration>(t);
}

// ---- StateReader ------------------------------------------------------------

Error StateReader::error(std::string_view message) const {
  return Error{ErrorCode::invalid_argument, fmt::format("{}: {}", path_.empty() ? "top level" : path_, message)};
}

Result<void> StateReader::object(std::initializer_list<std::string_view> allowed, bool with_envelope) const {
  if (!value_.is_object()) return fail(error(fmt::format("expected an object, found {}", type_name(value_))));
  for (const auto& [key, v] : value_.items()) {
    bool known = std::find(allowed.begin(), allowed.end(), key) != allowed.end();
    if (!known && with_envelope)
      known = std::find(std::begin(kEnvelopeKeys), std::end(kEnvelopeKeys), key) != std::end(kEnvelopeKeys);
    if (!known) return fail(error(fmt::format("unknown key {}", quote_for_message(key, 64))));
  }
  return {};
}

Result<void> StateReader::array(std::size_t max_items) const {
  if (!value_.is_array()) return fail(error(fmt::format("expected an array, found {}", type_name(value_))));
  if (value_.size() > max_items)
    return fail(error(fmt::format("{} items, more than the {} memd keeps", value_.size(), max_items)));
  return {};
}

Result<StateReader> StateReader::member(std::string_view key) const {
  if (auto m = optional_member(key)) return *m;
  return fail(error(fmt::format("missing key \"{}\"", key)));
}

std::optional<StateReader> StateReader::optional_member(std::string_view key) const {
  if (!value_.is_object()) return std::nullopt;
  const auto it = value_.find(key);
  if (it == value_.end()) return std::nullopt;
  return StateReader(*it, path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key));
}

StateReader StateReader::item(std::size_t index) const {
  return StateReader(value_.at(index), fmt::format("{}[{}]", path_, index));
}

Result<void> StateReader::each_member(
    std::size_t max_members, const std::function<Result<void>(const std::string&, const StateReader&)>& visit) const {
  if (!value_.is_object()) return fail(error(fmt::format("expected an object, found {}", type_name(value_))));
  if (value_.size() > max_members)
    return fail(error(fmt::format("{} entries, more than the {} memd keeps", value_.size(), max_members)));
  for (const auto& [key, v] : value_.items()) {
    const StateReader member(v, fmt::format("{}[{}]", path_, quote_for_message(key, 64)));
    if (auto ok = visit(key, member); !ok) return ok;
  }
  return {};
}

Result<std::uint64_t> StateReader::u64(std::uint64_t max) const {
  if (value_.is_number_unsigned()) {
    const auto v = value_.get<std::uint64_t>();
    if (v > max) return fail(error(fmt::format("{} is over the largest value allowed here, {}", v, max)));
    return v;
  }
  if (value_.is_number_integer()) return fail(error("expected a non-negative integer, found a negative one"));
  return fail(error(fmt::format("expected a non-negative integer, found {}", type_name(value_))));
}

Result<std::int64_t> StateReader::i64() const {
  if (value_.is_number_integer() && !value_.is_number_unsigned()) return value_.get<std::int64_t>();
  if (value_.is_number_unsigned()) {
    const auto v = value_.get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return fail(error(fmt::format("{} is over the largest value allowed here, {}", v,
                                    std::numeric_limits<std::int64_t>::max())));
    return static_cast<std::int64_t>(v);
  }
  return fail(error(fmt::format("expected an integer, found {}", type_name(value_))));
}

Result<double> StateReader::number(double min, double max) const {
  if (!value_.is_number()) return fail(error(fmt::format("expected a number, found {}", type_name(value_))));
  const double v = value_.get<double>();
  if (!std::isfinite(v) || v < min || v > max)
    return fail(error(fmt::format("{} is outside {}..{}", v, min, max)));
  return v;
}

Result<bool> StateReader::boolean() const {
  if (!value_.is_boolean()) return fail(error(fmt::format("expected true or false, found {}", type_name(value_))));
  return value_.get<bool>();
}

Result<std::string> StateReader::string(std::size_t max_bytes, bool allow_empty) const {
  if (!value_.is_string()) return fail(error(fmt::format("expected a string, found {}", type_name(value_))));
  const auto& s = value_.get_ref<const std::string&>();
  if (s.empty() && !allow_empty) return fail(error("expected a non-empty string"));
  if (s.size() > max_bytes) return fail(error(fmt::format("a string of {} bytes, over {}", s.size(), max_bytes)));
  return s;
}

Result<std::chrono::system_clock::time_point> StateReader::time() const {
  auto s = string(64);
  if (!s) return fail(s.error());
  auto t = parse_iso8601(*s);
  if (!t)
    return fail(error(fmt::format("{} is not a UTC time like 2026-01-01T00:00:00.000Z (years 2000..2999)",
                                  quote_for_message(*s, 40))));
  return *t;
}

}  // namespace memd
