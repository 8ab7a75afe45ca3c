// load/pattern.hpp — the bytes memd-load writes and expects to read back.
//
// Every byte is a pure function of (seed, position), so a reader that sees
// any piece of an allocation, at any offset and in pieces of any size, can
// check it without holding the whole: byte p is byte (p % 8) of
// splitmix64(seed + p / 8), little-endian. Different seeds give unrelated
// streams, so one allocation's bytes read back from another (or a stale
// cycle's) do not pass.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace memd::load {

// The word at index `word` of the stream `seed`.
std::uint64_t pattern_word(std::uint64_t seed, std::uint64_t word) noexcept;
// Writes the stream's bytes [offset, offset + out.size()) into out.
void fill_pattern(std::uint64_t seed, std::uint64_t offset, std::span<std::byte> out) noexcept;
// Index into `data` of the first byte that differs from the stream's bytes at
// [offset, offset + data.size()), or nullopt when all agree.
std::optional<std::size_t> find_mismatch(std::uint64_t seed, std::uint64_t offset,
                                         std::span<const std::byte> data) noexcept;

}  // namespace memd::load
