// libFuzzer target: arbitrary bytes as a safetensors header. The first 8
// bytes (little-endian) are the file's size, the rest the header's JSON.
//
// Parsing must return a header or invalid_argument, never crash, recurse
// without bound or allocate past the input; an accepted header must keep
// every promise safetensors.hpp makes (a loader sizes buffers and issues
// reads from it without further checks).
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "models/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 8) return 0;
  std::uint64_t file_size = 0;
  for (int i = 0; i < 8; ++i) file_size |= static_cast<std::uint64_t>(data[i]) << (8 * i);
  const std::string_view json(reinterpret_cast<const char*>(data) + 8, size - 8);

  auto h = memd::parse_safetensors_header(json, file_size);
  if (!h) {
    if (h.error().code != memd::ErrorCode::invalid_argument || h.error().message.empty()) std::abort();
    return 0;
  }
  if (h->header_bytes != json.size() || h->data_offset != 8 + json.size() ||
      h->data_offset + h->data_bytes != file_size)
    std::abort();
  std::set<std::string> names;
  std::uint64_t furthest = 0;
  for (std::size_t i = 0; i < h->tensors.size(); ++i) {
    const auto& t = h->tensors[i];
    if (t.name.empty() || !names.insert(t.name).second) std::abort();
    if (t.begin > t.end || t.end > h->data_bytes) std::abort();
    if (i > 0 && h->tensors[i - 1].begin > t.begin) std::abort();
    std::uint64_t bits = memd::dtype_bits(t.dtype);
    for (const auto d : t.shape)
      if (__builtin_mul_overflow(bits, d, &bits)) std::abort();
    if (bits % 8 != 0 || bits / 8 != t.end - t.begin) std::abort();
    if (t.begin != t.end) {
      if (t.begin < furthest) std::abort();
      furthest = t.end;
    }
  }
  std::set<std::string> keys;
  for (const auto& [k, v] : h->metadata)
    if (!keys.insert(k).second) std::abort();
  return 0;
}
