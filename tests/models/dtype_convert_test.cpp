// F32 → F16 / BF16: known answers at every edge (rounding ties, the subnormal
// range, overflow, NaN, signed zero), every half value round-tripping, and a
// million random floats each landing on a nearest representable neighbour.
#include "models/dtype_convert.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace memd {
namespace {

float f(std::uint32_t bits) { return std::bit_cast<float>(bits); }

TEST(DtypeConvert, F16KnownAnswers) {
  EXPECT_EQ(f32_to_f16_bits(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16_bits(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16_bits(0.0f), 0x0000);
  EXPECT_EQ(f32_to_f16_bits(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16_bits(65504.0f), 0x7bff);                // the largest finite half
  EXPECT_EQ(f32_to_f16_bits(65519.99f), 0x7bff);               // below the tie: stays finite
  EXPECT_EQ(f32_to_f16_bits(65520.0f), 0x7c00);                // the tie rounds to even: inf
  EXPECT_EQ(f32_to_f16_bits(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16_bits(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -14)), 0x0400);  // the smallest normal
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -25)), 0x0000);  // a tie between 0 and it: even, 0
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: the tie goes to even (2)
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(f32_to_f16_bits(-std::ldexp(1.0f, -30)), 0x8000);  // underflow keeps the sign
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: even (1); 1 + 3·2^-11 rounds up to even.
  EXPECT_EQ(f32_to_f16_bits(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16_bits(1.0f + std::ldexp(3.0f, -11)), 0x3c02);
  // The largest subnormal rounding up into the smallest normal.
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)), 0x0400);
  EXPECT_EQ(f32_to_f16_bits(std::numeric_limits<float>::infinity()), 0x7c00);
  const std::uint16_t nan = f32_to_f16_bits(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0) << "NaN stays NaN";
  EXPECT_NE(f32_to_f16_bits(f(0x7f800001)) & 0x03ff, 0) << "a signalling NaN with a low payload is not inf";
  EXPECT_EQ(f32_to_f16_bits(f(0xff800001)) & 0x8000, 0x8000) << "NaN keeps its sign";
}

TEST(DtypeConvert, Bf16KnownAnswers) {
  EXPECT_EQ(f32_to_bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16_bits(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16_bits(f(0x3f808000)), 0x3f80);  // tie: even stays
  EXPECT_EQ(f32_to_bf16_bits(f(0x3f818000)), 0x3f82);  // tie: odd goes up
  EXPECT_EQ(f32_to_bf16_bits(f(0x3f808001)), 0x3f81);  // past the tie
  EXPECT_EQ(f32_to_bf16_bits(f(0x7f7fffff)), 0x7f80);  // F32's max rounds to inf
  EXPECT_EQ(f32_to_bf16_bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16_bits(f(0x00000001)), 0x0000);  // the smallest F32 subnormal
  const std::uint16_t nan = f32_to_bf16_bits(f(0x7f800001));  // payload only in the low bits
  EXPECT_EQ(nan & 0x7f80, 0x7f80);
  EXPECT_NE(nan & 0x007f, 0) << "NaN is never rounded into inf";
  EXPECT_EQ(f32_to_bf16_bits(f(0xffffffff)) & 0xff80, 0xff80);
}

TEST(DtypeConvert, EveryHalfAndBf16ValueRoundTrips) {
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float wide = f16_bits_to_f32(bits);
    if (std::isnan(wide)) {
      EXPECT_TRUE(std::isnan(f16_bits_to_f32(f32_to_f16_bits(wide)))) << std::hex << h;
    } else {
      ASSERT_EQ(f32_to_f16_bits(wide), bits) << std::hex << h;
    }
    const float bwide = bf16_bits_to_f32(bits);
    if (std::isnan(bwide)) {
      EXPECT_TRUE(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(bwide)))) << std::hex << h;
    } else {
      ASSERT_EQ(f32_to_bf16_bits(bwide), bits) << std::hex << h;
    }
  }
}

// Each result is a nearest representable value: no neighbour is closer, and
// at a tie the even one wins. Checked in double, exact for both formats.
template <typename Narrow, typename Widen>
void expect_nearest(float x, Narrow narrow, Widen widen, std::uint16_t max_finite) {
  const std::uint16_t r = narrow(x);
  const double got = widen(r);
  const std::uint16_t mag = r & 0x7fff;
  if (std::isinf(got)) {
    // Only past the largest finite value, by at least half its ulp.
    const double top = widen(max_finite), below = widen(static_cast<std::uint16_t>(max_finite - 1));
    ASSERT_GE(std::fabs(static_cast<double>(x)), top + (top - below) / 2) << x;
    return;
  }
  const double err = std::fabs(got - x);
  for (const int step : {-1, 1}) {
    const int n = static_cast<int>(mag) + step;
    if (n < 0 || n > max_finite) continue;
    const double other = widen(static_cast<std::uint16_t>((r & 0x8000) | n));
    const double other_err = std::fabs(other - x);
    ASSERT_LE(err, other_err) << x << " → " << std::hex << r;
    if (err == other_err) {
      ASSERT_EQ(mag & 1u, 0u) << "a tie goes to even: " << x;
    }
  }
}

TEST(DtypeConvert, RandomFloatsLandOnANearestNeighbour) {
  std::mt19937 rng(20261207);
  std::uniform_int_distribution<std::uint32_t> any;
  std::uniform_int_distribution<int> exp16(-27, 17);
  for (int i = 0; i < 1'000'000; ++i) {
    // Half the draws in F16's range (where rounding is interesting), half anywhere.
    float x = std::bit_cast<float>(any(rng));
    if (std::isnan(x)) continue;
    if (i % 2 == 0) x = std::ldexp(1.0f + static_cast<float>(any(rng) % (1u << 23)) / 8388608.0f, exp16(rng)) * (any(rng) & 1 ? 1.0f : -1.0f);
    expect_nearest(x, f32_to_f16_bits, f16_bits_to_f32, 0x7bff);
    expect_nearest(x, f32_to_bf16_bits, bf16_bits_to_f32, 0x7f7f);
  }
}

TEST(DtypeConvert, BulkConversionAndItsRefusals) {
  const std::vector<float> in = {1.0f, -2.5f, 65504.0f, 1e-8f, 3.140625f};
  std::vector<std::byte> src(in.size() * 4), dst(in.size() * 2);
  std::memcpy(src.data(), in.data(), src.size());
  ASSERT_TRUE(convert_f32(src, dst, Dtype::F16));
  for (std::size_t i = 0; i < in.size(); ++i) {
    std::uint16_t h;
    std::memcpy(&h, dst.data() + 2 * i, 2);
    EXPECT_EQ(h, f32_to_f16_bits(in[i])) << i;
  }
  ASSERT_TRUE(convert_f32(src, dst, Dtype::BF16));
  std::uint16_t b;
  std::memcpy(&b, dst.data() + 2, 2);
  EXPECT_EQ(b, f32_to_bf16_bits(-2.5f));
  EXPECT_FALSE(convert_f32(src, dst, Dtype::F32));                                   // not a narrowing
  EXPECT_FALSE(convert_f32(src, dst, Dtype::I8));
  EXPECT_FALSE(convert_f32(std::span(src).first(7), dst, Dtype::F16));              // not whole floats
  EXPECT_FALSE(convert_f32(src, std::span(dst).first(8), Dtype::F16));             // wrong size
  EXPECT_TRUE(convertible(Dtype::F32, Dtype::BF16));
  EXPECT_FALSE(convertible(Dtype::F16, Dtype::F32));
  EXPECT_FALSE(convertible(Dtype::F64, Dtype::F16));
}

TEST(DtypeConvert, BulkEqualsTheReferenceOnEveryExponentAndRandomBits) {
  // The bulk paths (branchless) against f32_to_f16_bits / f32_to_bf16_bits,
  // one value at a time:
  // every exponent with mantissas at the rounding edges (ties, one below,
  // one above, the kept lsb odd and even), both signs, then 4 million
  // random bit patterns.
  std::vector<std::uint32_t> bits;
  for (std::uint32_t e = 0; e < 256; ++e)
    for (std::uint32_t m : {0x0u, 0x1u, 0xfffu, 0x1000u, 0x1001u, 0x2000u, 0x3000u, 0x2fffu, 0x3001u, 0x7fe000u,
                            0x7fefffu, 0x7ff000u, 0x7ff001u, 0x7fffffu, 0x400000u, 0x400001u})
      for (std::uint32_t sign : {0u, 0x80000000u}) bits.push_back(sign | (e << 23) | m);
  std::mt19937 rng(11);
  for (int i = 0; i < 4'000'000; ++i) bits.push_back(rng());
  std::vector<std::byte> src(bits.size() * 4), dst(bits.size() * 2);
  std::memcpy(src.data(), bits.data(), src.size());
  for (Dtype to : {Dtype::F16, Dtype::BF16}) {
    ASSERT_TRUE(convert_f32(src, dst, to));
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < bits.size(); ++i) {
      std::uint16_t got;
      std::memcpy(&got, dst.data() + 2 * i, 2);
      const std::uint16_t want = to == Dtype::F16 ? f32_to_f16_bits(f(bits[i])) : f32_to_bf16_bits(f(bits[i]));
      if (got != want && ++wrong <= 5)
        ADD_FAILURE() << to_string(to) << std::hex << " bits 0x" << bits[i] << ": bulk 0x" << got
                      << ", reference 0x" << want;
    }
    EXPECT_EQ(wrong, 0u) << to_string(to);
  }
}

TEST(DtypeConvert, InPlaceEqualsTheTwoBufferConversionAcrossBlocks) {
  // 10,000 values: past two of the in-place converter's 4,096-value blocks,
  // the last one partial; random bit patterns (NaNs, infinities and
  // subnormals among them).
  std::mt19937 rng(7);
  std::vector<std::byte> src(10'000 * 4);
  for (auto& b : src) b = static_cast<std::byte>(rng() & 0xff);
  for (Dtype to : {Dtype::F16, Dtype::BF16}) {
    std::vector<std::byte> want(src.size() / 2);
    ASSERT_TRUE(convert_f32(src, want, to));
    std::vector<std::byte> buf = src;
    ASSERT_TRUE(convert_f32_in_place(buf, to));
    EXPECT_TRUE(std::equal(want.begin(), want.end(), buf.begin())) << to_string(to);
  }
  std::vector<std::byte> odd(10);
  EXPECT_FALSE(convert_f32_in_place(odd, Dtype::F16));                  // not whole floats
  EXPECT_FALSE(convert_f32_in_place(std::span(src).first(8), Dtype::I16));  // not a narrowing
  EXPECT_TRUE(convert_f32_in_place({}, Dtype::F16));                    // nothing to do
}

}  // namespace
}  // namespace memd
