// dtype_convert_bench — the narrowing a load does on its reader threads
// (models/dtype_convert.hpp), per core: the bulk conversion (what the loader
// calls) against the reference one value at a time (f32_to_f16_bits /
// f32_to_bf16_bits in a plain loop), on the same 64 MiB of F32 weights drawn
// like a model's (normal, sigma 0.02: mostly half normals, a tail of
// subnormals). GB/s of F32 bytes, median of --reps. A plain program.
//   memd_dtype_convert_bench [--reps 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "models/dtype_convert.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace memd;
  int reps = 5;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
  std::vector<std::byte> weights(64u << 20);
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  for (std::size_t i = 0; i < weights.size() / 4; ++i) {
    const float v = dist(rng);
    std::memcpy(weights.data() + 4 * i, &v, 4);
  }
  std::vector<std::byte> out(weights.size() / 2), ref(weights.size() / 2);
  int failed = 0;
  for (Dtype to : {Dtype::F16, Dtype::BF16}) {
    std::vector<double> bulk, one;
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      if (!convert_f32(weights, out, to)) return 1;
      bulk.push_back(static_cast<double>(weights.size()) / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9);
      t0 = Clock::now();
      for (std::size_t i = 0; i < weights.size() / 4; ++i) {
        float v;
        std::memcpy(&v, weights.data() + 4 * i, 4);
        const std::uint16_t h = to == Dtype::F16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v);
        std::memcpy(ref.data() + 2 * i, &h, 2);
      }
      one.push_back(static_cast<double>(weights.size()) / std::chrono::duration<double>(Clock::now() - t0).count() / 1e9);
    }
    const bool same = out == ref;
    failed += same ? 0 : 1;
    std::printf("F32 -> %-4s bulk %6.2f GB/s, reference one value at a time %6.2f GB/s (%.1fx)%s\n",
                std::string(to_string(to)).c_str(), median(bulk), median(one), median(bulk) / median(one),
                same ? "" : "  RESULTS DIFFER");
  }
  return failed;
}
