// models/strict_json.hpp — JSON from model files, parsed as untrusted input.
//
// A safetensors header, a shard index and a diffusers model_index.json all
// come from files memd did not write. They are parsed here, not with a plain
// nlohmann::json::parse, because that would
//   - keep the last of two equal keys silently (a tensor named twice would
//     lose one of its entries without a word), and
//   - follow any nesting depth (the formats are flat: a hostile header of a
//     million '[' must be refused, not walked).
// So parsing is a SAX pass that builds the document itself, refuses a
// duplicate key in any object and nesting deeper than `max_depth`, and on a
// syntax error says at which byte. No exception leaves this file.
//
// Messages say what is wrong, never the caller's context (file, tensor): the
// caller prefixes that.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "memd/error.hpp"
#include "models/model_file.hpp"

namespace memd {

// Deepest nesting any model JSON needs is 3 (header → tensor entry → shape);
// the margin is for metadata that nests a little in the wild.
inline constexpr int kMaxModelJsonDepth = 8;

// invalid_argument for text that is not one JSON value (with trailing
// whitespace allowed), that names a key twice in one object or that nests
// deeper than max_depth.
Result<nlohmann::json> parse_strict_json(std::string_view text, int max_depth = kMaxModelJsonDepth);

// The whole of `file` parsed as above; invalid_argument (naming the file)
// when it is larger than max_bytes — checked before anything is allocated.
Result<nlohmann::json> read_strict_json(const ModelFile& file, std::uint64_t max_bytes,
                                        int max_depth = kMaxModelJsonDepth);

// `text` made safe to quote in a message: control and non-ASCII bytes as
// \xNN, cut to `max_chars` with "..." — names in a hostile file can be long or
// hold terminal escapes.
std::string quote_for_message(std::string_view text, std::size_t max_chars = 120);

}  // namespace memd
