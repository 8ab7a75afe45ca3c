// protocol/base64.hpp — binary data inside JSON (stdio's `data` key).
//
// Standard alphabet (RFC 4648 §4) with '=' padding. Decoding is strict: the
// length must be a multiple of four, padding only at the end, no whitespace,
// so a corrupted payload is an invalid_argument rather than silently
// different bytes.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "memd/error.hpp"

namespace memd {

std::string base64_encode(std::span<const std::byte> data);
Result<std::vector<std::byte>> base64_decode(std::string_view text);

}  // namespace memd
