// Typed parameter readers: one place decides what each wire type accepts.
#include "protocol/params.hpp"

#include "models/model_name.hpp"

#include <algorithm>
#include <charconv>
#include <regex>

#include "memd/size.hpp"
#include "memd/text.hpp"
#include "protocol/sse.hpp"

namespace memd {
namespace {

std::string_view type_name(const nlohmann::json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_float()) return "a fractional number";
  if (v.is_number()) return "a number";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

std::optional<std::uint64_t> decimal(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// The patterns are compiled once; std::regex's ECMAScript grammar is the one
// OpenAPI's `pattern` uses.
bool matches(std::string_view pattern, const std::string& text) {
  static const std::regex size_re{std::string(kSizeStringPattern)};
  static const std::regex allocation_size_re{std::string(kAllocationSizeStringPattern)};
  static const std::regex device_re{std::string(kDeviceIdPattern)};
  const std::regex* re = pattern == kSizeStringPattern             ? &size_re
                         : pattern == kAllocationSizeStringPattern ? &allocation_size_re
                                                                   : &device_re;
  return std::regex_match(text, *re);
}

// Exact names, or the integer (JSON or its decimal text) of a value in `values`.
template <typename E>
Optional<E> read_enum(const nlohmann::json* v, std::string_view key, std::string_view what,
                      std::span<const E> values, bool allocatable) {
  if (v == nullptr) return std::optional<E>{};
  auto allowed = [&](E e) { return !(allocatable && static_cast<int>(e) == 0); };
  if (v->is_string()) {
    const auto& s = v->get_ref<const std::string&>();
    for (E e : values)
      if (allowed(e) && (s == to_string(e) || s == std::to_string(static_cast<int>(e)))) return e;
  } else if (v->is_number_integer()) {
    const bool negative = v->is_number_integer() && !v->is_number_unsigned() && v->get<std::int64_t>() < 0;
    if (!negative) {
      const auto n = v->get<std::uint64_t>();
      for (E e : values)
        if (allowed(e) && n == static_cast<std::uint64_t>(e)) return e;
    }
  } else {
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be a {} name or integer, not {}",
                key, what, type_name(*v));
  }
  std::string names;
  for (E e : values)
    if (allowed(e)) names += (names.empty() ? "" : ", ") + std::string(to_string(e));
  return fail(ErrorCode::invalid_argument, "parameter '{}' is not a valid {} ({}, exact case): {}",
              key, what, names, v->dump());
}

}  // namespace

Result<const nlohmann::json*> Params::find(std::string_view key) const {
  auto it = object_.find(key);
  if (it == object_.end()) return nullptr;
  if (it->is_null())
    return fail(ErrorCode::invalid_argument,
                "parameter '{}' must not be null (leave an optional key out instead)", key);
  return &*it;
}

bool Params::contains(std::string_view key) const { return object_.find(key) != object_.end(); }
bool Params::has_value(std::string_view key) const {
  auto it = object_.find(key);
  return it != object_.end() && !it->is_null();
}
bool Params::is_null(std::string_view key) const {
  auto it = object_.find(key);
  return it != object_.end() && it->is_null();
}

Optional<std::string> Params::string(std::string_view key) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  if (*v == nullptr) return std::optional<std::string>{};
  if (!(*v)->is_string())
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be a string, not {}", key,
                type_name(**v));
  return (*v)->get<std::string>();
}

Optional<std::string> Params::text(std::string_view key, std::size_t min_chars, std::size_t max_chars) const {
  auto s = string(key);
  if (!s || !*s) return s;
  const auto n = utf8_chars(**s);
  if (n < min_chars || n > max_chars)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be {}..{} characters, not {}", key,
                min_chars, max_chars, n);
  return s;
}

Optional<std::string> Params::owner(std::string_view key) const {
  auto s = string(key);
  if (!s || !*s) return s;
  if (auto ok = check_owner(**s); !ok)
    return fail(ErrorCode::invalid_argument, "parameter '{}': {}", key, ok.error().message);
  return s;
}

namespace {

// \uXXXX, as ECMA-262 spells a UTF-16 code unit.
std::string unit(char32_t u) { return fmt::format("\\u{:04x}", static_cast<std::uint32_t>(u)); }

std::string build_owner_pattern() {
  // Forbidden BMP code points go in one negated class with the surrogates (a
  // lone surrogate is not a character); forbidden supplementary ones become
  // surrogate pairs a lookahead excludes from "any well-formed pair".
  std::string bmp, pairs;
  for (const auto& r : owner_forbidden_code_points()) {
    if (r.first <= 0xFFFF) {
      bmp += unit(r.first);
      if (r.last != r.first) bmp += "-" + unit(r.last);
      continue;
    }
    // Split the range by high surrogate.
    for (char32_t c = r.first; c <= r.last;) {
      const char32_t high = 0xD800 + ((c - 0x10000) >> 10);
      const char32_t block_last = std::min<char32_t>(r.last, 0x10000 + (((high - 0xD800) + 1) << 10) - 1);
      const char32_t low_first = 0xDC00 + ((c - 0x10000) & 0x3FF);
      const char32_t low_last = 0xDC00 + ((block_last - 0x10000) & 0x3FF);
      pairs += (pairs.empty() ? "" : "|") + unit(high) + "[" + unit(low_first);
      if (low_last != low_first) pairs += "-" + unit(low_last);
      pairs += "]";
      c = block_last + 1;
    }
  }
  return "^(?:[^" + bmp + unit(0xD800) + "-" + unit(0xDFFF) + "]|(?!" + pairs + ")[" + unit(0xD800) + "-" +
         unit(0xDBFF) + "][" + unit(0xDC00) + "-" + unit(0xDFFF) + "])+$";
}

}  // namespace

const std::string& owner_pattern() {
  static const std::string pattern = build_owner_pattern();
  return pattern;
}

Result<std::uint64_t> size_from_json(const nlohmann::json& v, std::string_view key, std::uint64_t min_bytes) {
  std::uint64_t bytes = 0;
  if (v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0)) {
    bytes = v.get<std::uint64_t>();
    if (bytes > kMaxWireBytes)
      return fail(ErrorCode::invalid_argument, "parameter '{}' is {} bytes, above the maximum of {}",
                  key, bytes, kMaxWireBytes);
  } else if (v.is_number_integer()) {
    return fail(ErrorCode::invalid_argument, "parameter '{}' must not be negative", key);
  } else if (v.is_number_float()) {
    return fail(ErrorCode::invalid_argument,
                "parameter '{}' must be a whole number of bytes (or a string like \"512MiB\")", key);
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (!matches(kSizeStringPattern, s))
      return fail(ErrorCode::invalid_argument,
                  "parameter '{}': '{}' is not a size (digits, or a number with up to 3 decimals "
                  "and a unit K, M, G or T, optionally KiB/KB...; at most {} bytes)",
                  key, s, kMaxWireBytes);
    auto parsed = parse_size(s);
    if (!parsed)
      return fail(ErrorCode::invalid_argument, "parameter '{}': {}", key, parsed.error().message);
    bytes = *parsed;
  } else {
    return fail(ErrorCode::invalid_argument,
                "parameter '{}' must be a byte count or a size string, not {}", key, type_name(v));
  }
  if (bytes < min_bytes)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be at least {} byte(s)", key, min_bytes);
  return bytes;
}

Optional<std::uint64_t> Params::size(std::string_view key, std::uint64_t min_bytes) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  if (*v == nullptr) return std::optional<std::uint64_t>{};
  auto bytes = size_from_json(**v, key, min_bytes);
  if (!bytes) return fail(bytes.error());
  return *bytes;
}

Optional<std::uint64_t> Params::count(std::string_view key, std::uint64_t max, std::uint64_t min) const {
  auto found = find(key);
  if (!found) return fail(found.error());
  const auto* v = *found;
  if (v == nullptr) return std::optional<std::uint64_t>{};
  std::optional<std::uint64_t> n;
  if (v->is_number_unsigned() || (v->is_number_integer() && v->get<std::int64_t>() >= 0))
    n = v->get<std::uint64_t>();
  else if (v->is_string()) n = decimal(v->get_ref<const std::string&>());
  if (!n)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be a non-negative integer, not {}",
                key, v->is_string() ? v->dump() : std::string(type_name(*v)));
  if (*n > max)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be at most {}", key, max);
  if (*n < min)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be at least {}", key, min);
  return n;
}

Optional<std::uint64_t> Params::json_integer(std::string_view key, std::uint64_t min, std::uint64_t max) const {
  auto found = find(key);
  if (!found) return fail(found.error());
  const auto* v = *found;
  if (v == nullptr) return std::optional<std::uint64_t>{};
  const bool non_negative = v->is_number_unsigned() || (v->is_number_integer() && v->get<std::int64_t>() >= 0);
  if (!non_negative || v->get<std::uint64_t>() < min || v->get<std::uint64_t>() > max)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be a JSON integer from {} to {}, not {}", key,
                min, max, v->is_string() ? v->dump() : std::string(type_name(*v)));
  return v->get<std::uint64_t>();
}

Optional<bool> Params::boolean(std::string_view key) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  if (*v == nullptr) return std::optional<bool>{};
  if ((*v)->is_boolean()) return (*v)->get<bool>();
  return fail(ErrorCode::invalid_argument, "parameter '{}' must be true or false, not {}", key,
              (*v)->dump());
}

Optional<std::uint32_t> Params::event_kinds(std::string_view key) const {
  auto text = string(key);
  if (!text) return fail(text.error());
  if (!*text) return std::optional<std::uint32_t>{};
  auto filter = parse_event_filter(**text, std::nullopt);
  if (!filter) return fail(filter.error());
  return filter->kinds;
}

Optional<std::string> Params::model_name(std::string_view key) const {
  auto text = string(key);
  if (!text) return fail(text.error());
  if (!*text) return std::optional<std::string>{};
  if (auto ok = check_model_name(**text); !ok)
    return fail(ErrorCode::invalid_argument, "'{}': {}", key, ok.error().message);
  return text;
}

Optional<std::vector<std::string>> Params::strings(std::string_view key) const {
  auto found = find(key);
  if (!found) return fail(found.error());
  const auto* v = *found;
  if (v == nullptr) return std::optional<std::vector<std::string>>{};
  if (!v->is_array())
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be an array of strings, not {}", key,
                type_name(*v));
  if (v->size() > kMaxTags)
    return fail(ErrorCode::invalid_argument, "parameter '{}' takes at most {} items", key, kMaxTags);
  std::vector<std::string> out;
  for (const auto& item : *v) {
    if (!item.is_string())
      return fail(ErrorCode::invalid_argument, "parameter '{}' must be an array of strings", key);
    const auto n = utf8_chars(item.get_ref<const std::string&>());
    if (n < 1 || n > kMaxTagChars)
      return fail(ErrorCode::invalid_argument, "parameter '{}': each item must be 1..{} characters", key,
                  kMaxTagChars);
    out.push_back(item.get<std::string>());
  }
  return out;
}

Optional<DeviceId> Params::device(std::string_view key) const {
  auto text = string(key);
  if (!text) return fail(text.error());
  if (!*text) return std::optional<DeviceId>{};
  if (!matches(kDeviceIdPattern, **text))
    return fail(ErrorCode::invalid_argument,
                "parameter '{}': invalid device id '{}': expected cuda:N, host:N (N 0..1023) or cpu", key,
                **text);
  auto id = DeviceId::parse(**text);
  if (!id) return fail(ErrorCode::invalid_argument, "parameter '{}': {}", key, id.error().message);
  return *id;
}

template <typename Id>
Optional<Id> Params::guid(std::string_view key) const {
  auto text = string(key);
  if (!text) return fail(text.error());
  if (!*text) return std::optional<Id>{};
  auto id = Id::parse(**text);
  if (!id) return fail(ErrorCode::invalid_argument, "parameter '{}': {}", key, id.error().message);
  return *id;
}

Optional<AllocationId> Params::allocation_id(std::string_view key) const { return guid<AllocationId>(key); }
Optional<SessionId> Params::session_id(std::string_view key) const { return guid<SessionId>(key); }
Optional<TransferId> Params::transfer_id(std::string_view key) const { return guid<TransferId>(key); }
Optional<BatchId> Params::batch_id(std::string_view key) const { return guid<BatchId>(key); }
Optional<ExportId> Params::export_id(std::string_view key) const { return guid<ExportId>(key); }
Optional<SnapshotId> Params::snapshot_id(std::string_view key) const { return guid<SnapshotId>(key); }

Optional<std::vector<std::string>> Params::owners(std::string_view key, std::size_t max_items) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  if (!*v) return std::optional<std::vector<std::string>>{};
  const auto& a = **v;
  if (!a.is_array() || a.empty() || a.size() > max_items)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be an array of 1..{} owners", key, max_items);
  std::vector<std::string> out;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_string()) return fail(ErrorCode::invalid_argument, "parameter '{}': item {} must be a string", key, i);
    auto owner = a[i].get<std::string>();
    if (auto ok = check_owner(owner); !ok)
      return fail(ErrorCode::invalid_argument, "parameter '{}': item {}: {}", key, i, ok.error().message);
    out.push_back(std::move(owner));
  }
  return out;
}

Optional<std::vector<const nlohmann::json*>> Params::objects(std::string_view key, std::size_t max_items) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  if (!*v) return std::optional<std::vector<const nlohmann::json*>>{};
  const auto& a = **v;
  if (!a.is_array() || a.empty() || a.size() > max_items)
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be an array of 1..{} objects", key, max_items);
  std::vector<const nlohmann::json*> out;
  out.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_object())
      return fail(ErrorCode::invalid_argument, "parameter '{}': item {} must be an object", key, i);
    out.push_back(&a[i]);
  }
  return out;
}

Optional<MemoryType> Params::memory_type(std::string_view key, bool allocatable) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  return read_enum<MemoryType>(*v, key, "memory type", all_memory_types(), allocatable);
}
Optional<MemoryAllocationType> Params::allocation_type(std::string_view key) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  return read_enum<MemoryAllocationType>(*v, key, "allocation type", all_allocation_types(), false);
}
Optional<MemoryAllocationStatus> Params::allocation_status(std::string_view key) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  return read_enum<MemoryAllocationStatus>(*v, key, "allocation status", all_allocation_statuses(), false);
}
Optional<MemoryPriority> Params::priority(std::string_view key) const {
  auto v = find(key);
  if (!v) return fail(v.error());
  return read_enum<MemoryPriority>(*v, key, "priority", all_priorities(), false);
}

}  // namespace memd
