// memd/text.hpp — lengths of wire text as JSON Schema counts them.
//
// JSON Schema's minLength/maxLength count characters (code points), so memd's
// limits on names, tags and owners count them the same way; the protocol edge
// and the allocator then agree with the published schema on non-ASCII text.
// Text from JSON is valid UTF-8 (the parser refuses anything else); for other
// bytes the count is that of the non-continuation bytes.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <string_view>

namespace memd {

inline std::size_t utf8_chars(std::string_view text) noexcept {
  std::size_t n = 0;
  for (unsigned char c : text)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace memd
