// GUIDs from libuuid; parsing is strict so wire input is validated once.
#include "memd/allocation_id.hpp"

#include <uuid/uuid.h>

#include <cstring>

namespace memd {

AllocationId AllocationId::generate() {
  AllocationId id;
  uuid_t raw;
  uuid_generate_random(raw);
  std::memcpy(id.bytes_.data(), raw, 16);
  return id;
}

Result<AllocationId> AllocationId::parse(std::string_view text) {
  // 8-4-4-4-12 hex digits; uuid_parse would accept this too but needs a NUL
  // terminated buffer and says nothing about why it failed.
  if (text.size() != 36)
    return fail(ErrorCode::invalid_argument, "invalid allocation id: expected a 36-character GUID");
  AllocationId id;
  int nibble = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return fail(ErrorCode::invalid_argument, "invalid allocation id: misplaced '-'");
      continue;
    }
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else return fail(ErrorCode::invalid_argument, "invalid allocation id: not a hex digit");
    auto& byte = id.bytes_[static_cast<std::size_t>(nibble / 2)];
    byte = static_cast<std::uint8_t>(nibble % 2 == 0 ? v << 4 : byte | v);
    ++nibble;
  }
  return id;
}

std::string AllocationId::to_string() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  s.reserve(36);
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
    s.push_back(kHex[bytes_[i] >> 4]);
    s.push_back(kHex[bytes_[i] & 0xF]);
  }
  return s;
}

bool AllocationId::is_nil() const noexcept {
  for (auto b : bytes_)
    if (b != 0) return false;
  return true;
}

}  // namespace memd
