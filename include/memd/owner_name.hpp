// memd/owner_name.hpp — the one owner rule.
//
// Every allocation, limit, session and token names an owner. An owner is
// checked once, wherever it enters (a request's `owner`, the X-Memd-Owner
// header, a --tokens file, an in-process AllocationRequest): 1..128 bytes of
// valid UTF-8 (shortest forms, no surrogates, at most U+10FFFF) with no
// control or format character (Unicode general categories Cc and Cf). The
// bound is in bytes, not characters, because owners are log fields, map keys
// and header values whose cost is bytes. Cc and Cf are refused because owners
// are printed: a NUL, a newline or a U+202E RIGHT-TO-LEFT OVERRIDE in an owner
// would forge log lines or make "alice\u202e" read as someone else.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "memd/error.hpp"

namespace memd {

inline constexpr std::size_t kMaxOwnerBytes = 128;

// An inclusive range of code points.
struct CodePointRange {
  char32_t first;
  char32_t last;
};

// The code points an owner may not contain: Cc and Cf as of Unicode 15.1,
// sorted and disjoint. The OpenAPI pattern for owners is built from this list.
std::span<const CodePointRange> owner_forbidden_code_points() noexcept;

// invalid_argument saying what is wrong (and where: byte offset or code
// point), never echoing the bytes themselves; messages start with "owner".
Result<void> check_owner(std::string_view owner);

}  // namespace memd
