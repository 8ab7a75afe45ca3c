// memd/allocation_id.hpp — GUID identity of an allocation.
//
// Ids are random (version 4) UUIDs from libuuid, printed lower-case in the
// 8-4-4-4-12 form. parse() accepts exactly that form (either case) and rejects
// everything else, so an id from the wire is validated before any lookup.
//
// Thread safety: values; generate() is thread-safe.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "memd/error.hpp"

namespace memd {

class AllocationId {
 public:
  AllocationId() = default;  // the nil id, never handed out

  static AllocationId generate();
  static Result<AllocationId> parse(std::string_view text);

  std::string to_string() const;
  bool is_nil() const noexcept;
  const std::array<std::uint8_t, 16>& bytes() const noexcept { return bytes_; }

  friend bool operator==(const AllocationId&, const AllocationId&) = default;
  friend auto operator<=>(const AllocationId&, const AllocationId&) = default;

 private:
  std::array<std::uint8_t, 16> bytes_{};
};

}  // namespace memd

template <>
struct std::hash<memd::AllocationId> {
  std::size_t operator()(const memd::AllocationId& id) const noexcept {
    // v4 UUIDs are random: two 64-bit halves mixed are a good hash already.
    std::uint64_t a = 0, b = 0;
    for (int i = 0; i < 8; ++i) a = (a << 8) | id.bytes()[i];
    for (int i = 8; i < 16; ++i) b = (b << 8) | id.bytes()[i];
    return static_cast<std::size_t>(a ^ (b * 0x9E3779B97F4A7C15ull));
  }
};
