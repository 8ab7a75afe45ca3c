// server/http/tokens_file.hpp — `memd serve --tokens FILE`: who each bearer
// token is.
//
// One entry per line, `TOKEN OWNER [admin]`, fields separated by spaces or
// tabs; blank lines and lines whose first non-blank character is `#` are
// skipped; CRLF line ends are accepted. TOKEN is an RFC 6750 b64token (what
// an `Authorization: Bearer` header can carry: letters, digits and
// - . _ ~ + /, then any `=`); OWNER follows the owner rule
// (memd/owner_name.hpp) and so, in this file, has no spaces; the optional
// third field is the word `admin`. A token listed twice is refused; an owner
// may have several tokens (rotation).
//
// The file holds secrets, so load_tokens_file() refuses one that group or
// others may read or write, one that is not a regular file, or one over
// 1 MiB. Every refusal says what and where (line numbers) and never prints
// a token.
//
// Thread safety: pure functions; a TokenTable is a value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "memd/error.hpp"

namespace memd {

inline constexpr std::uint64_t kMaxTokensFileBytes = 1024 * 1024;

struct TokenEntry {
  std::string token;
  std::string owner;
  bool admin = false;
  int line = 0;  // where it was read, for messages
  friend bool operator==(const TokenEntry&, const TokenEntry&) = default;
};

using TokenTable = std::vector<TokenEntry>;

// Parses the file's text; `source` names it in messages ("tokens.txt:3: …").
// invalid_argument for any malformed line, a duplicate token, or no entry.
Result<TokenTable> parse_tokens(std::string_view text, std::string_view source);

// Reads and parses `path` after checking it is a private regular file.
Result<TokenTable> load_tokens_file(const std::string& path);

// The text parse_tokens() reads back as `table` (one line per entry).
std::string format_tokens(const TokenTable& table);

}  // namespace memd
