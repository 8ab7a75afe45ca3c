// Typed parameter readers: one place decides what each wire type accepts.
#include "protocol/params.hpp"

#include <charconv>

#include "memd/size.hpp"

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
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

template <typename E, typename ParseName, typename FromInt>
Optional<E> read_enum(const nlohmann::json* v, std::string_view key, std::string_view what,
                      ParseName parse_name, FromInt from_int) {
  if (v == nullptr) return std::optional<E>{};
  std::optional<E> out;
  if (v->is_string()) out = parse_name(v->get_ref<const std::string&>());
  else if (v->is_number_integer()) out = from_int(v->get<std::int64_t>());
  else
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be a {} name or integer, not {}",
                key, what, type_name(*v));
  if (!out) return fail(ErrorCode::invalid_argument, "parameter '{}' is not a valid {}: {}", key, what, v->dump());
  return out;
}

}  // namespace

const nlohmann::json* Params::find(std::string_view key) const {
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

bool Params::contains(std::string_view key) const { return object_.find(key) != object_.end(); }
bool Params::has_value(std::string_view key) const { return find(key) != nullptr; }

Optional<std::string> Params::string(std::string_view key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::optional<std::string>{};
  if (!v->is_string())
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be a string, not {}", key,
                type_name(*v));
  return v->get<std::string>();
}

Result<std::uint64_t> size_from_json(const nlohmann::json& v, std::string_view key) {
  std::uint64_t bytes = 0;
  if (v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0)) {
    bytes = v.get<std::uint64_t>();
  } else if (v.is_number_integer()) {
    return fail(ErrorCode::invalid_argument, "parameter '{}' must not be negative", key);
  } else if (v.is_number_float()) {
    return fail(ErrorCode::invalid_argument,
                "parameter '{}' must be a whole number of bytes (or a string like \"512MiB\")", key);
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (!s.empty() && s.front() == '-')
      return fail(ErrorCode::invalid_argument, "parameter '{}' must not be negative", key);
    auto parsed = parse_size(s);
    if (!parsed)
      return fail(ErrorCode::invalid_argument, "parameter '{}': {}", key, parsed.error().message);
    bytes = *parsed;
  } else {
    return fail(ErrorCode::invalid_argument,
                "parameter '{}' must be a byte count or a size string, not {}", key, type_name(v));
  }
  if (bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "parameter '{}' is {} bytes, above the maximum of {}",
                key, bytes, kMaxRequestBytes);
  return bytes;
}

Optional<std::uint64_t> Params::size(std::string_view key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::optional<std::uint64_t>{};
  auto bytes = size_from_json(*v, key);
  if (!bytes) return fail(bytes.error());
  return *bytes;
}

Optional<std::uint64_t> Params::count(std::string_view key, std::uint64_t max) const {
  const auto* v = find(key);
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
  return n;
}

Optional<bool> Params::boolean(std::string_view key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::optional<bool>{};
  if (v->is_boolean()) return v->get<bool>();
  if (v->is_string()) {
    const auto& s = v->get_ref<const std::string&>();
    if (s == "true" || s == "1") return true;
    if (s == "false" || s == "0") return false;
  }
  return fail(ErrorCode::invalid_argument, "parameter '{}' must be a boolean", key);
}

Optional<std::vector<std::string>> Params::strings(std::string_view key) const {
  const auto* v = find(key);
  if (v == nullptr) return std::optional<std::vector<std::string>>{};
  std::vector<std::string> out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());  // a single tag is a list of one
    return out;
  }
  if (!v->is_array())
    return fail(ErrorCode::invalid_argument, "parameter '{}' must be an array of strings", key);
  for (const auto& item : *v) {
    if (!item.is_string())
      return fail(ErrorCode::invalid_argument, "parameter '{}' must be an array of strings", key);
    out.push_back(item.get<std::string>());
  }
  return out;
}

Optional<DeviceId> Params::device(std::string_view key) const {
  auto text = string(key);
  if (!text) return fail(text.error());
  if (!*text) return std::optional<DeviceId>{};
  auto id = DeviceId::parse(**text);
  if (!id) return fail(ErrorCode::invalid_argument, "parameter '{}': {}", key, id.error().message);
  return *id;
}

Optional<AllocationId> Params::allocation_id(std::string_view key) const {
  auto text = string(key);
  if (!text) return fail(text.error());
  if (!*text) return std::optional<AllocationId>{};
  auto id = AllocationId::parse(**text);
  if (!id) return fail(ErrorCode::invalid_argument, "parameter '{}': {}", key, id.error().message);
  return *id;
}

Optional<MemoryType> Params::memory_type(std::string_view key) const {
  return read_enum<MemoryType>(find(key), key, "memory type", parse_memory_type, memory_type_from_int);
}
Optional<MemoryAllocationType> Params::allocation_type(std::string_view key) const {
  return read_enum<MemoryAllocationType>(find(key), key, "allocation type", parse_allocation_type,
                                         allocation_type_from_int);
}
Optional<MemoryAllocationStatus> Params::allocation_status(std::string_view key) const {
  return read_enum<MemoryAllocationStatus>(find(key), key, "allocation status",
                                           parse_allocation_status, allocation_status_from_int);
}
Optional<MemoryPriority> Params::priority(std::string_view key) const {
  return read_enum<MemoryPriority>(find(key), key, "priority", parse_priority, priority_from_int);
}

}  // namespace memd
