// models/dtype.hpp — the element types a safetensors header may name.
//
// The list is the safetensors format's own (its Rust crate's `Dtype`), spelt
// as the header spells it: "F16", "BF16", "F8_E4M3", … A name outside it is a
// malformed header, not an unknown-but-tolerated type: memd must know every
// tensor's exact byte count before a load starts.
//
// Sizes are given in bits because the format has sub-byte types (F4 packs two
// values a byte, F6_* four values in three bytes); a tensor of those is valid
// only when its element count fills whole bytes (tensor_bits / 8).
//
// Thread safety: pure functions on values.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace memd {

enum class Dtype : std::uint8_t {
  BOOL,
  F4,       // E2M1 (OCP MX), 4 bits
  F6_E2M3,  // OCP MX, 6 bits
  F6_E3M2,  // OCP MX, 6 bits
  U8,
  I8,
  F8_E5M2,
  F8_E4M3,
  F8_E8M0,  // OCP MX scale
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  C64,  // complex of two F32
  F64,
  I64,
  U64,
};

inline constexpr Dtype kAllDtypes[] = {
    Dtype::BOOL, Dtype::F4,   Dtype::F6_E2M3, Dtype::F6_E3M2, Dtype::U8,  Dtype::I8,  Dtype::F8_E5M2,
    Dtype::F8_E4M3, Dtype::F8_E8M0, Dtype::I16, Dtype::U16, Dtype::F16, Dtype::BF16, Dtype::I32,
    Dtype::U32,  Dtype::F32,  Dtype::C64,     Dtype::F64,     Dtype::I64, Dtype::U64,
};

// The header's name, e.g. "BF16".
std::string_view to_string(Dtype dtype) noexcept;
// Inverse of to_string (exact, case-sensitive, as the format is); nullopt for
// any other name.
std::optional<Dtype> parse_dtype(std::string_view name) noexcept;
// Bits per element: 4 for F4, 6 for F6_*, 8 for BOOL and the 8-bit types, …
std::uint32_t dtype_bits(Dtype dtype) noexcept;
// Bytes per element for the whole-byte types; 0 for the sub-byte ones (F4,
// F6_*), whose size only a whole tensor has (see dtype_bits).
std::uint32_t dtype_bytes(Dtype dtype) noexcept;

}  // namespace memd
