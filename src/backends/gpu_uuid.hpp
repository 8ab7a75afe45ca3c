// backends/gpu_uuid.hpp — a GPU's 16-byte UUID written as nvidia-smi writes it.
//
// cudaDeviceProp::uuid holds the raw bytes; NVML, nvidia-smi and
// CUDA_VISIBLE_DEVICES name the same GPU as "GPU-" and the bytes in hex,
// grouped 4-2-2-2-6. memd reports that spelling so a client can match memd's
// cuda:N with the GPU its own tools see. Kept outside the CUDA folder so it is
// tested on machines without a GPU.
//
// Thread safety: a pure function.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace memd {

inline std::string format_gpu_uuid(std::span<const std::uint8_t, 16> bytes) {
  constexpr char kHex[] = "0123456789abcdef";
  std::string out = "GPU-";
  out.reserve(40);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0x0F]);
  }
  return out;
}

}  // namespace memd
