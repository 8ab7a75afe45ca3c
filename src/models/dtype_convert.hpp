// models/dtype_convert.hpp — F32 weights narrowed to F16 or BF16 (issue 15,
// item 2: a load may ask for a narrower dtype than the file holds).
//
// Both conversions round to nearest, ties to even (IEEE 754's default, what
// PyTorch's `.half()` / `.bfloat16()` and the GPU's cvt.rn do), so a model
// converted by memd holds the same bits as one converted by PyTorch:
//   * F16: values past the largest finite half (65504, after rounding) become
//     ±inf; below the smallest normal they become subnormals (down to 2^-24),
//     then ±0, the sign kept;
//   * BF16: the top 16 bits of the float, rounded; it has F32's range, so
//     only values within half an ulp of F32's maximum overflow;
//   * NaN stays NaN (quiet, sign kept, payload's top bits where they fit),
//     never rounded into ±inf.
// These are the reference: the host device converts with them, and the CUDA
// path's results are checked against them.
//
// Thread safety: pure functions on values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "memd/error.hpp"
#include "models/dtype.hpp"

namespace memd {

std::uint16_t f32_to_f16_bits(float value) noexcept;
std::uint16_t f32_to_bf16_bits(float value) noexcept;
// Widening, exact (every F16 and BF16 value is a float).
float f16_bits_to_f32(std::uint16_t bits) noexcept;
float bf16_bits_to_f32(std::uint16_t bits) noexcept;

// Whether memd converts `from` to `to` on load: F32 → F16 or BF16 only (the
// issue's list; anything else is refused before a load starts).
bool convertible(Dtype from, Dtype to) noexcept;
// `src` holds little-endian F32 values; each becomes a 2-byte `to` in `dst`
// (little-endian). invalid_argument when the pair is not convertible, `src`
// is not whole floats or `dst` is not exactly half its size.
Result<void> convert_f32(std::span<const std::byte> src, std::span<std::byte> dst, Dtype to);
// The same in place: `buf` holds F32 values; their 2-byte conversions end up
// in its first half (the loader converts in its staging buffer, then copies
// that half). Same errors as convert_f32 (the size must be whole floats).
Result<void> convert_f32_in_place(std::span<std::byte> buf, Dtype to);

}  // namespace memd
