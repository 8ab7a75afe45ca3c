// models/safetensors.hpp — a safetensors file's header, parsed and checked.
//
// The format: 8 bytes, a little-endian u64 N; N bytes of JSON (an object
// mapping each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]}, plus an optional "__metadata__" object of string → string); then the
// data section, to which data_offsets are relative.
//
// Everything a loader will trust is checked here, so that a header that
// passes can be used to size buffers and issue reads without further checks:
//   - N is at most 100 MiB (the format's own bound) and inside the file; a
//     larger N is refused before anything is allocated, so a declared 2^40
//     costs nothing;
//   - the JSON is one object, no key twice, nesting at most
//     kMaxModelJsonDepth (strict_json.hpp);
//   - each entry has exactly dtype, shape and data_offsets, of the right
//     types; the dtype is one the format lists; dims are non-negative
//     integers; elements × dtype bits is computed with overflow checks, fills
//     whole bytes, and equals end − begin; begin ≤ end; end lies inside the
//     data section (data_offset + end ≤ file size);
//   - no two tensors share a byte (zero-size tensors share nothing);
//   - tensor names are non-empty; __metadata__ is an object of strings.
//
// Gaps are allowed: the format says the data section should be fully indexed
// and its reference reader refuses holes and trailing bytes, but a hole costs
// memd only the bytes it skips (or copies along, when a whole data section is
// one copy run), and refusing it would turn away files other tools read. An
// overlap is refused: two tensors sharing bytes would alias in a buffer.
//
// Every refusal is invalid_argument with what is wrong and where (the tensor,
// the offsets, the shape); read_safetensors_header also names the file.
//
// Thread safety: pure functions; read_safetensors_header only reads `file`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "memd/error.hpp"
#include "models/dtype.hpp"
#include "models/model_file.hpp"

namespace memd {

// The format's bound on N (its reference reader's MAX_HEADER_SIZE, 100 MB,
// rounded to MiB): a header of more is hostile or broken.
inline constexpr std::uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::U8;
  std::vector<std::uint64_t> shape;
  // Offsets relative to the data section, as in the file.
  std::uint64_t begin = 0, end = 0;
  std::uint64_t bytes() const noexcept { return end - begin; }
};

struct SafetensorsHeader {
  std::uint64_t header_bytes = 0;  // N
  std::uint64_t data_offset = 0;   // 8 + N: where the data section starts in the file
  std::uint64_t data_bytes = 0;    // file size − data_offset
  std::vector<TensorInfo> tensors;  // sorted by begin (then end, then name)
  std::vector<std::pair<std::string, std::string>> metadata;  // __metadata__, sorted by key
  // Where the last byte of any tensor lies, relative to the data section.
  std::uint64_t used_bytes() const noexcept;
};

// Parses and checks the N bytes of header JSON of a file of `file_size`
// bytes. Pure: the fuzz target drives it. Messages name the tensor, not the
// file.
Result<SafetensorsHeader> parse_safetensors_header(std::string_view json, std::uint64_t file_size);

// Reads the length, then the header, of `file` and parses it as above.
// Messages start with the file's path.
Result<SafetensorsHeader> read_safetensors_header(const ModelFile& file);

}  // namespace memd
