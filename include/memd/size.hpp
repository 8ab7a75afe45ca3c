// memd/size.hpp — byte sizes as people write them.
//
// parse_size accepts a non-negative integer optionally followed by a unit:
// B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (case-insensitive). Binary and
// decimal units both mean powers of 1024, as every GPU tool does; a fraction
// ("1.5GiB") is allowed with a unit. Overflow past 2^63-1 is an error.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "memd/error.hpp"

namespace memd {

Result<std::uint64_t> parse_size(std::string_view text);
// 1536 → "1.5 KiB", 0 → "0 B"; for humans, not for round trips.
std::string format_size(std::uint64_t bytes);

inline constexpr std::uint64_t kKiB = 1024;
inline constexpr std::uint64_t kMiB = 1024 * kKiB;
inline constexpr std::uint64_t kGiB = 1024 * kMiB;
inline constexpr std::uint64_t kMaxRequestBytes = std::uint64_t{1} << 62;

}  // namespace memd
