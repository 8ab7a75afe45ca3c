// models/safetensors.cpp — see safetensors.hpp.
#include "models/safetensors.hpp"

#include <algorithm>
#include <array>
#include <span>
#include <tuple>

#include "models/strict_json.hpp"

namespace memd {
namespace {

using json = nlohmann::json;

std::string shape_string(const std::vector<std::uint64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// A JSON number that is a non-negative integer. nlohmann reads "-1" as a
// signed integer, "1.0" and integers past 2^64 as floats: all refused here.
std::optional<std::uint64_t> as_u64(const json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(v.get<std::int64_t>());
  return std::nullopt;
}

// What a value is, for "… is a string, not an array".
std::string_view kind_of(const json& v) {
  if (v.is_number_float()) return "a non-integer number";
  if (v.is_number_integer() && !v.is_number_unsigned()) return "a negative integer";
  return v.type_name();
}

Result<TensorInfo> parse_entry(const std::string& name, const json& entry, std::uint64_t data_bytes) {
  const std::string who = fmt::format("tensor {}", quote_for_message(name));
  if (name.empty()) return fail(ErrorCode::invalid_argument, "a tensor has an empty name");
  if (!entry.is_object())
    return fail(ErrorCode::invalid_argument, "{}: entry is {}, not an object", who, entry.type_name());
  for (const auto& [key, value] : entry.items()) {
    (void)value;
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      return fail(ErrorCode::invalid_argument, "{}: unexpected key {} (an entry holds dtype, shape, data_offsets)",
                  who, quote_for_message(key));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key)) return fail(ErrorCode::invalid_argument, "{}: no \"{}\"", who, key);

  TensorInfo t;
  t.name = name;
  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) return fail(ErrorCode::invalid_argument, "{}: dtype is {}, not a string", who, kind_of(dtype));
  const auto parsed = parse_dtype(dtype.get_ref<const std::string&>());
  if (!parsed)
    return fail(ErrorCode::invalid_argument, "{}: unknown dtype {}", who,
                quote_for_message(dtype.get_ref<const std::string&>()));
  t.dtype = *parsed;

  const json& shape = entry["shape"];
  if (!shape.is_array()) return fail(ErrorCode::invalid_argument, "{}: shape is {}, not an array", who, kind_of(shape));
  t.shape.reserve(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) {
    const auto dim = as_u64(shape[i]);
    if (!dim)
      return fail(ErrorCode::invalid_argument, "{}: shape dimension {} is {}, not a non-negative integer", who, i,
                  kind_of(shape[i]));
    t.shape.push_back(*dim);
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2)
    return fail(ErrorCode::invalid_argument, "{}: data_offsets is not an array of two integers", who);
  const auto begin = as_u64(offsets[0]), end = as_u64(offsets[1]);
  if (!begin || !end)
    return fail(ErrorCode::invalid_argument, "{}: data_offsets [{}, {}] are not non-negative integers", who,
                offsets[0].dump(), offsets[1].dump());
  t.begin = *begin;
  t.end = *end;
  if (t.begin > t.end)
    return fail(ErrorCode::invalid_argument, "{}: data_offsets [{}, {}] begin after they end", who, t.begin, t.end);
  if (t.end > data_bytes)
    return fail(ErrorCode::invalid_argument, "{}: data_offsets [{}, {}] end past the data section ({} bytes)", who,
                t.begin, t.end, data_bytes);

  // elements × bits, each step overflow-checked: a shape of huge dims must
  // not wrap around to the byte count the offsets happen to hold.
  std::uint64_t bits = dtype_bits(t.dtype);
  for (const std::uint64_t dim : t.shape) {
    if (__builtin_mul_overflow(bits, dim, &bits))
      return fail(ErrorCode::invalid_argument, "{}: shape {} × {} overflows 64 bits", who, shape_string(t.shape),
                  to_string(t.dtype));
  }
  if (bits % 8 != 0)
    return fail(ErrorCode::invalid_argument, "{}: shape {} × {} is {} bits, not whole bytes", who,
                shape_string(t.shape), to_string(t.dtype), bits);
  if (bits / 8 != t.end - t.begin)
    return fail(ErrorCode::invalid_argument, "{}: data_offsets [{}, {}] hold {} bytes, shape {} × {} needs {}", who,
                t.begin, t.end, t.end - t.begin, shape_string(t.shape), to_string(t.dtype), bits / 8);
  return t;
}

Result<void> parse_metadata(const json& value, std::vector<std::pair<std::string, std::string>>& out) {
  if (!value.is_object())
    return fail(ErrorCode::invalid_argument, "__metadata__ is {}, not an object", value.type_name());
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string())
      return fail(ErrorCode::invalid_argument, "__metadata__ {} is {}, not a string", quote_for_message(key),
                  kind_of(v));
    out.emplace_back(key, v.get<std::string>());
  }
  return {};
}

}  // namespace

std::uint64_t SafetensorsHeader::used_bytes() const noexcept {
  std::uint64_t end = 0;
  for (const auto& t : tensors) end = std::max(end, t.end);
  return end;
}

Result<SafetensorsHeader> parse_safetensors_header(std::string_view text, std::uint64_t file_size) {
  SafetensorsHeader h;
  h.header_bytes = text.size();
  if (h.header_bytes > kMaxSafetensorsHeaderBytes)
    return fail(ErrorCode::invalid_argument, "header of {} bytes, more than the format's {}", h.header_bytes,
                kMaxSafetensorsHeaderBytes);
  h.data_offset = 8 + h.header_bytes;
  if (file_size < h.data_offset)
    return fail(ErrorCode::invalid_argument, "header of {} bytes runs past the end of the file ({} bytes)",
                h.header_bytes, file_size);
  h.data_bytes = file_size - h.data_offset;

  auto doc = parse_strict_json(text);
  if (!doc) return fail(ErrorCode::invalid_argument, "header: {}", doc.error().message);
  if (!doc->is_object())
    return fail(ErrorCode::invalid_argument, "header is {}, not a JSON object", doc->type_name());

  h.tensors.reserve(doc->size());
  for (const auto& [name, entry] : doc->items()) {
    if (name == "__metadata__") {
      if (auto r = parse_metadata(entry, h.metadata); !r) return fail(r.error());
      continue;
    }
    auto t = parse_entry(name, entry, h.data_bytes);
    if (!t) return fail(t.error());
    h.tensors.push_back(std::move(*t));
  }

  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  // Sorted by begin, a tensor overlaps an earlier one exactly when it begins
  // before the furthest end seen so far. Zero-size tensors hold no byte.
  const TensorInfo* furthest = nullptr;
  for (const auto& t : h.tensors) {
    if (t.begin == t.end) continue;
    if (furthest != nullptr && t.begin < furthest->end)
      return fail(ErrorCode::invalid_argument, "tensors {} [{}, {}] and {} [{}, {}] overlap",
                  quote_for_message(furthest->name), furthest->begin, furthest->end, quote_for_message(t.name),
                  t.begin, t.end);
    if (furthest == nullptr || t.end > furthest->end) furthest = &t;
  }
  return h;
}

Result<SafetensorsHeader> read_safetensors_header(const ModelFile& file) {
  const std::string path = file.path().string();
  if (file.size() < 8)
    return fail(ErrorCode::invalid_argument, "{}: {} bytes, too short for a safetensors file (8-byte header length)",
                path, file.size());
  std::array<std::byte, 8> length_bytes{};
  if (auto r = file.read_at(0, length_bytes); !r) return fail(r.error());
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(length_bytes[i]) << (8 * i);
  // Both bounds before the allocation below: the length is the file's word.
  if (n > kMaxSafetensorsHeaderBytes)
    return fail(ErrorCode::invalid_argument, "{}: declares a header of {} bytes, more than the format's {}", path, n,
                kMaxSafetensorsHeaderBytes);
  if (n > file.size() - 8)
    return fail(ErrorCode::invalid_argument, "{}: declares a header of {} bytes, but only {} follow the length", path,
                n, file.size() - 8);
  std::string text(static_cast<std::size_t>(n), '\0');
  if (auto r = file.read_at(8, std::as_writable_bytes(std::span(text))); !r) return fail(r.error());
  auto h = parse_safetensors_header(text, file.size());
  if (!h) return fail(ErrorCode::invalid_argument, "{}: {}", path, h.error().message);
  return h;
}

}  // namespace memd
