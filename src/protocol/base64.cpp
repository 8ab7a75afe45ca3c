// RFC 4648 base64, strict decoding.
#include "protocol/base64.hpp"

#include <array>
#include <cstdint>

namespace memd {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<std::int8_t, 256> make_decode_table() {
  std::array<std::int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (std::size_t i = 0; i < kAlphabet.size(); ++i)
    t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::int8_t>(i);
  return t;
}
constexpr auto kDecode = make_decode_table();

}  // namespace

std::string base64_encode(std::span<const std::byte> data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const auto v = (std::to_integer<std::uint32_t>(data[i]) << 16) |
                   (std::to_integer<std::uint32_t>(data[i + 1]) << 8) |
                   std::to_integer<std::uint32_t>(data[i + 2]);
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(kAlphabet[(v >> 6) & 63]);
    out.push_back(kAlphabet[v & 63]);
  }
  const std::size_t rest = data.size() - i;
  if (rest > 0) {
    std::uint32_t v = std::to_integer<std::uint32_t>(data[i]) << 16;
    if (rest == 2) v |= std::to_integer<std::uint32_t>(data[i + 1]) << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

Result<std::vector<std::byte>> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0)
    return fail(ErrorCode::invalid_argument, "invalid base64: length {} is not a multiple of 4",
                text.size());
  std::vector<std::byte> out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int pad = 0;
    std::uint32_t v = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && last && j >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      const auto d = kDecode[static_cast<unsigned char>(c)];
      if (d < 0 || pad > 0)
        return fail(ErrorCode::invalid_argument, "invalid base64: unexpected character at {}", i + j);
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    out.push_back(static_cast<std::byte>((v >> 16) & 0xFF));
    if (pad < 2) out.push_back(static_cast<std::byte>((v >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<std::byte>(v & 0xFF));
  }
  return out;
}

}  // namespace memd
