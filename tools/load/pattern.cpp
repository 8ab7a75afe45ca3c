#include "pattern.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace memd::load {

std::uint64_t pattern_word(std::uint64_t seed, std::uint64_t word) noexcept {
  std::uint64_t z = seed + word * 0x9E3779B97F4A7C15ull + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void fill_pattern(std::uint64_t seed, std::uint64_t offset, std::span<std::byte> out) noexcept {
  std::size_t i = 0;
  // Head: bytes up to the next word boundary.
  while (i < out.size() && (offset + i) % 8 != 0) {
    const std::uint64_t p = offset + i;
    out[i++] = static_cast<std::byte>(pattern_word(seed, p / 8) >> (8 * (p % 8)));
  }
  std::uint64_t word = (offset + i) / 8;
  for (; i + 8 <= out.size(); i += 8, ++word) {
    // The stream is little-endian by definition; memd-load runs on x86-64 and
    // aarch64 Linux, both little-endian.
    const std::uint64_t w = pattern_word(seed, word);
    std::memcpy(out.data() + i, &w, 8);
  }
  for (; i < out.size(); ++i) {
    const std::uint64_t p = offset + i;
    out[i] = static_cast<std::byte>(pattern_word(seed, p / 8) >> (8 * (p % 8)));
  }
}

std::optional<std::size_t> find_mismatch(std::uint64_t seed, std::uint64_t offset,
                                         std::span<const std::byte> data) noexcept {
  std::array<std::byte, 16384> expected;
  for (std::size_t at = 0; at < data.size(); at += expected.size()) {
    const std::size_t n = std::min(expected.size(), data.size() - at);
    fill_pattern(seed, offset + at, std::span(expected.data(), n));
    if (std::memcmp(expected.data(), data.data() + at, n) == 0) continue;
    for (std::size_t i = 0; i < n; ++i)
      if (expected[i] != data[at + i]) return at + i;
  }
  return std::nullopt;
}

}  // namespace memd::load
