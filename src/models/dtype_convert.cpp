// F32 narrowed to F16 / BF16; see dtype_convert.hpp.
#include "models/dtype_convert.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace memd {

std::uint16_t f32_to_f16_bits(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t exp = (x >> 23) & 0xffu;
  std::uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) {
    if (mant == 0) return static_cast<std::uint16_t>(sign | 0x7c00u);  // ±inf
    // NaN: quiet, the payload's top bits kept.
    return static_cast<std::uint16_t>(sign | 0x7e00u | (mant >> 13));
  }
  // The value's exponent re-biased for half (bias 15 instead of 127).
  const int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 0x1f) return static_cast<std::uint16_t>(sign | 0x7c00u);  // too large: ±inf
  if (e <= 0) {
    // Subnormal half (or zero): the implicit 1 joins the mantissa, shifted
    // right by 1 - e more places; below 2^-25 (shift past 24) it is ±0 —
    // 2^-25 itself is a tie between 0 and the smallest subnormal: even, 0.
    if (e < -10) return sign;
    mant |= 0x800000u;
    const unsigned shift = static_cast<unsigned>(14 - e);  // 13 + (1 - e)
    std::uint32_t half = mant >> shift;
    const std::uint32_t rest = mant & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) ++half;  // may carry into the smallest normal: right
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t half = (static_cast<std::uint32_t>(e) << 10) | (mant >> 13);
  const std::uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // a carry may reach inf: right
  return static_cast<std::uint16_t>(sign | half);
}

std::uint16_t f32_to_bf16_bits(float value) noexcept {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(value);
  if ((x & 0x7f800000u) == 0x7f800000u && (x & 0x7fffffu) != 0)
    return static_cast<std::uint16_t>((x >> 16) | 0x0040u);  // NaN: quiet, never rounded into inf
  // Round to nearest even on the low 16 bits: add 0x7fff plus the kept lsb.
  const std::uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

float f16_bits_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalise.
    int e = -14;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      --e;
    }
    mant &= 0x3ffu;
    bits = sign | (static_cast<std::uint32_t>(e + 127) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

float bf16_bits_to_f32(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

namespace {

// f32_to_f16_bits without branches, for the bulk conversion (a load narrows
// gigabytes: the branchy reference runs at ~0.7 GB/s a core, this one lets
// the compiler vectorise). Every case is computed and one is selected:
//   * half normals (|x| in [2^-14, 65536)): re-bias the exponent and round
//     the 13 dropped bits to nearest even by adding 0xfff plus the kept
//     lsb; a carry out of the top normal lands on inf, as it should;
//   * half subnormals and zero (|x| < 2^-14): adding 0.5f puts x's multiple
//     of 2^-24 (half's subnormal step) in the float's low mantissa bits,
//     rounded by the FPU to nearest even; subtracting 0.5f's bits leaves it;
//   * inf and values past 65536: 0x7c00; NaN: quiet, payload's top bits.
// The tests hold it equal to f32_to_f16_bits on every exponent and on
// random bit patterns.
inline std::uint16_t f16_bits_branchless(std::uint32_t x) noexcept {
  constexpr std::uint32_t kHalfMinNormal = 113u << 23;  // 2^-14
  constexpr std::uint32_t kHalfOverflow = 143u << 23;   // 2^16
  constexpr std::uint32_t kInf = 0x7f800000u;
  constexpr std::uint32_t kHalfPoint = 126u << 23;      // 0.5f
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t a = x & 0x7fffffffu;
  const std::uint32_t normal = (a - ((127u - 15u) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
  const std::uint32_t sub = std::bit_cast<std::uint32_t>(std::bit_cast<float>(a) + std::bit_cast<float>(kHalfPoint)) -
                            kHalfPoint;
  const std::uint32_t special = a > kInf ? (0x7e00u | ((a & 0x7fffffu) >> 13)) : 0x7c00u;
  const std::uint32_t h = a < kHalfMinNormal ? sub : (a < kHalfOverflow ? normal : special);
  return static_cast<std::uint16_t>(sign | h);
}

// f32_to_bf16_bits with a select in place of its NaN branch.
inline std::uint16_t bf16_bits_branchless(std::uint32_t x) noexcept {
  const std::uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const std::uint32_t quiet = (x >> 16) | 0x0040u;
  return static_cast<std::uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

}  // namespace

bool convertible(Dtype from, Dtype to) noexcept {
  return from == Dtype::F32 && (to == Dtype::F16 || to == Dtype::BF16);
}

Result<void> convert_f32(std::span<const std::byte> src, std::span<std::byte> dst, Dtype to) {
  if (!convertible(Dtype::F32, to))
    return fail(ErrorCode::invalid_argument, "F32 converts to F16 or BF16, not {}", to_string(to));
  if (src.size() % 4 != 0)
    return fail(ErrorCode::invalid_argument, "{} bytes are not whole F32 values", src.size());
  if (dst.size() != src.size() / 2)
    return fail(ErrorCode::invalid_argument, "{} F32 values need {} bytes, not {}", src.size() / 4, src.size() / 2,
                dst.size());
  static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
  const std::size_t n = src.size() / 4;
  if (to == Dtype::BF16) {
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t x;
      std::memcpy(&x, src.data() + 4 * i, 4);
      const std::uint16_t out = bf16_bits_branchless(x);
      std::memcpy(dst.data() + 2 * i, &out, 2);
    }
    return {};
  }
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t x;
    std::memcpy(&x, src.data() + 4 * i, 4);
    const std::uint16_t out = f16_bits_branchless(x);
    std::memcpy(dst.data() + 2 * i, &out, 2);
  }
  return {};
}

Result<void> convert_f32_in_place(std::span<std::byte> buf, Dtype to) {
  if (buf.size() % 4 != 0)
    return fail(ErrorCode::invalid_argument, "{} bytes are not whole F32 values", buf.size());
  // Block by block through a small buffer: block k's output [2kB, 2kB+2B)
  // only overlaps input blocks 0..k, all read by then (block 0's own input
  // is read whole before its output is written).
  constexpr std::size_t kBlock = 4096;  // values
  std::byte out[2 * kBlock];
  const std::size_t n = buf.size() / 4;
  for (std::size_t at = 0; at < n; at += kBlock) {
    const std::size_t k = std::min(kBlock, n - at);
    if (auto ok = convert_f32(buf.subspan(4 * at, 4 * k), std::span<std::byte>(out, 2 * k), to); !ok) return ok;
    std::memcpy(buf.data() + 2 * at, out, 2 * k);
  }
  return {};
}

}  // namespace memd
