// core/content_hash.hpp — a fast 64-bit hash of a buffer, to check that a
// copy kept in host memory still holds what was copied into it.
//
// Not cryptographic: it catches corruption (a stray write, a bad copy), not
// an adversary. Four independent lanes of an xxHash64-style round (multiply,
// rotate, multiply) over 8-byte words, so the multiplies overlap and one core
// hashes at several GB/s; the lanes and the length are mixed at the end. A
// tail shorter than 32 bytes is hashed word by word, then byte by byte.
//
// Thread safety: pure functions.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

namespace memd {

namespace content_hash_detail {
inline constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ull;
inline constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
inline constexpr std::uint64_t kP3 = 0x165667B19E3779F9ull;
inline std::uint64_t round(std::uint64_t acc, std::uint64_t word) noexcept {
  return std::rotl(acc + word * kP2, 31) * kP1;
}
inline std::uint64_t word_at(const unsigned char* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}
}  // namespace content_hash_detail

inline std::uint64_t content_hash(const void* data, std::uint64_t bytes) noexcept {
  using namespace content_hash_detail;
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t a = kP1 + kP2, b = kP2, c = 0, d = 0 - kP1;
  std::uint64_t at = 0;
  for (; at + 32 <= bytes; at += 32) {
    a = round(a, word_at(p + at));
    b = round(b, word_at(p + at + 8));
    c = round(c, word_at(p + at + 16));
    d = round(d, word_at(p + at + 24));
  }
  std::uint64_t h = std::rotl(a, 1) + std::rotl(b, 7) + std::rotl(c, 12) + std::rotl(d, 18) + bytes;
  for (; at + 8 <= bytes; at += 8) h = std::rotl(h ^ round(0, word_at(p + at)), 27) * kP1 + kP3;
  for (; at < bytes; ++at) h = std::rotl(h ^ (p[at] * kP1), 11) * kP2;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

}  // namespace memd
