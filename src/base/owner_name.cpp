// The owner rule: a small UTF-8 decoder and the Cc/Cf table.
//
// Written out rather than left to a regex: the rule counts bytes and decodes
// code points, which std::regex (byte-wise) cannot do, and it runs on every
// request.
#include "memd/owner_name.hpp"

#include <algorithm>
#include <array>
#include <optional>

namespace memd {
namespace {

// Unicode 15.1 DerivedGeneralCategory.txt, categories Cc and Cf.
constexpr std::array<CodePointRange, 23> kForbidden{{
    {0x0000, 0x001F},   {0x007F, 0x009F},   {0x00AD, 0x00AD},   {0x0600, 0x0605},
    {0x061C, 0x061C},   {0x06DD, 0x06DD},   {0x070F, 0x070F},   {0x0890, 0x0891},
    {0x08E2, 0x08E2},   {0x180E, 0x180E},   {0x200B, 0x200F},   {0x202A, 0x202E},
    {0x2060, 0x2064},   {0x2066, 0x206F},   {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},
    {0x110BD, 0x110BD}, {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3},
    {0x1D173, 0x1D17A}, {0xE0001, 0xE0001}, {0xE0020, 0xE007F},
}};

bool forbidden(char32_t c) {
  auto it = std::upper_bound(kForbidden.begin(), kForbidden.end(), c,
                             [](char32_t v, const CodePointRange& r) { return v < r.first; });
  return it != kForbidden.begin() && c <= std::prev(it)->last;
}

// Decodes one code point at text[i], advancing i; nullopt for anything that
// is not the shortest well-formed UTF-8 of a scalar value.
std::optional<char32_t> decode(std::string_view text, std::size_t& i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) {
    ++i;
    return lead;
  }
  std::size_t length = 0;
  char32_t c = 0, minimum = 0;
  if ((lead & 0xE0) == 0xC0) length = 2, c = lead & 0x1F, minimum = 0x80;
  else if ((lead & 0xF0) == 0xE0) length = 3, c = lead & 0x0F, minimum = 0x800;
  else if ((lead & 0xF8) == 0xF0) length = 4, c = lead & 0x07, minimum = 0x10000;
  else return std::nullopt;  // a continuation byte, or 0xF8..0xFF
  if (i + length > text.size()) return std::nullopt;
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return std::nullopt;
    c = (c << 6) | (byte(i + k) & 0x3F);
  }
  if (c < minimum || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return std::nullopt;
  i += length;
  return c;
}

}  // namespace

std::span<const CodePointRange> owner_forbidden_code_points() noexcept { return kForbidden; }

Result<void> check_owner(std::string_view owner) {
  if (owner.empty()) return fail(ErrorCode::invalid_argument, "owner must not be empty");
  if (owner.size() > kMaxOwnerBytes)
    return fail(ErrorCode::invalid_argument, "owner is {} bytes; at most {} bytes of UTF-8 are allowed",
                owner.size(), kMaxOwnerBytes);
  for (std::size_t i = 0; i < owner.size();) {
    const std::size_t at = i;
    const auto c = decode(owner, i);
    if (!c) return fail(ErrorCode::invalid_argument, "owner is not valid UTF-8 (at byte {})", at);
    if (forbidden(*c))
      return fail(ErrorCode::invalid_argument,
                  "owner contains U+{:04X}, a control or format character (Unicode Cc/Cf), at byte {}",
                  static_cast<std::uint32_t>(*c), at);
  }
  return {};
}

}  // namespace memd
