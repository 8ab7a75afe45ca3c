// narrow_layout: a model's F32 tensors re-laid as F16 / BF16 — every placement
// aligned and inside its buffer, every run reading the F32 bytes its tensors
// came from (checked by converting the file's bytes through the runs and
// comparing each tensor with the reference conversion), other dtypes kept
// byte for byte, components without F32 untouched, and a target that is not
// a narrowing refused.
#include "models/layout_narrowing.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "models/dtype_convert.hpp"
#include "models/safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;

// The component's buffer as the loader fills it: run by run, narrowing.
std::vector<std::byte> land(const ModelLayout& layout, const ComponentLayout& c) {
  std::vector<std::byte> buffer(c.bytes, std::byte{0xEE});
  for (const CopyRun& r : c.runs) {
    auto f = ModelFile::open(layout.files.at(r.file));
    EXPECT_TRUE(f) << f.error().message;
    std::vector<std::byte> read(r.bytes);
    EXPECT_TRUE(f->read_at(r.file_offset, read));
    if (r.narrow_to) {
      EXPECT_TRUE(convert_f32_in_place(read, *r.narrow_to));
    }
    std::memcpy(buffer.data() + r.buffer_offset, read.data(), r.buffer_bytes());
  }
  return buffer;
}

// What tensor `name` of the writer's pattern holds after narrowing to `to`.
std::vector<std::byte> expected(const std::string& name, std::uint64_t file_bytes, std::optional<Dtype> to) {
  std::vector<std::byte> raw(file_bytes);
  for (std::uint64_t i = 0; i < file_bytes; ++i) raw[i] = tensor_byte(name, i);
  if (!to) return raw;
  std::vector<std::byte> out(file_bytes / 2);
  EXPECT_TRUE(convert_f32(raw, out, *to));
  return out;
}

const std::vector<FakeTensor> kMixed = {
    {"a.weight", {300, 7}, "F32"},  // 8,400 bytes: its half is not a multiple of 256
    {"a.bias", {7}, "F16"},
    {"pos", {3}, "I64"},
    {"empty", {0}, "F32"},
    {"b.weight", {64, 64}, "F32"},
    {"c.weight", {64, 64}, "F32"},  // contiguous with b in file and in buffer: one run
};

TEST(LayoutNarrowing, F32TensorsLandHalvedAlignedAndConvertedOthersAsTheyAre) {
  TempDir dir;
  write_safetensors(dir.path / "m.safetensors", kMixed);
  auto layout = read_model_layout(dir.path / "m.safetensors");
  ASSERT_TRUE(layout) << layout.error().message;
  for (Dtype to : {Dtype::F16, Dtype::BF16}) {
    auto narrowed = narrow_layout(*layout, to);
    ASSERT_TRUE(narrowed) << narrowed.error().message;
    ASSERT_TRUE(narrowed->validate()) << narrowed->validate().error().message;
    const auto& c = narrowed->components.at(0);
    ASSERT_EQ(c.tensors.size(), kMixed.size());
    std::uint64_t f32_bytes = 0, other_bytes = 0;
    const auto buffer = land(*narrowed, c);
    for (std::size_t i = 0; i < kMixed.size(); ++i) {
      const auto& t = c.tensors[i];
      const bool f32 = kMixed[i].dtype == "F32";
      EXPECT_EQ(t.name, kMixed[i].name);
      EXPECT_EQ(t.offset % kTensorAlignment, 0u) << t.name;
      EXPECT_EQ(t.shape, kMixed[i].shape) << t.name;
      EXPECT_EQ(t.dtype, f32 ? to : *parse_dtype(kMixed[i].dtype)) << t.name;
      EXPECT_EQ(t.converted_from.has_value(), f32) << t.name;
      EXPECT_EQ(t.bytes, f32 ? tensor_bytes(kMixed[i]) / 2 : tensor_bytes(kMixed[i])) << t.name;
      (f32 ? f32_bytes : other_bytes) += tensor_bytes(kMixed[i]);
      const auto want = expected(t.name, tensor_bytes(kMixed[i]), f32 ? std::optional(to) : std::nullopt);
      ASSERT_TRUE(std::equal(want.begin(), want.end(), buffer.begin() + static_cast<std::ptrdiff_t>(t.offset)))
          << to_string(to) << " " << t.name;
    }
    // Smaller than the file's bytes by half the F32 bytes, up to alignment.
    EXPECT_LT(c.bytes, layout->components[0].bytes);
    EXPECT_LE(c.bytes, f32_bytes / 2 + other_bytes + kMixed.size() * kTensorAlignment);
    // b and c are contiguous both ways: one run; a, the bias, pos: one each.
    EXPECT_EQ(c.runs.size(), 4u);
    EXPECT_EQ(c.runs.back().narrow_to, to);
    EXPECT_EQ(c.runs.back().bytes, 2 * 64 * 64 * 4u);
  }
}

TEST(LayoutNarrowing, AComponentWithoutF32IsUntouchedSoItStillShares) {
  TempDir dir;
  // A diffusers folder: the UNet has F32 tensors, the VAE has none.
  write_safetensors(dir.path / "p" / "unet" / "diffusion_pytorch_model.safetensors",
                    {{"conv.weight", {128, 9}, "F32"}, {"conv.bias", {128}, "F16"}});
  write_safetensors(dir.path / "p" / "vae" / "diffusion_pytorch_model.safetensors",
                    {{"decoder.weight", {256, 4}, "F16"}});
  write_bytes(dir.path / "p" / "model_index.json",
              R"({"_class_name": "X", "unet": ["diffusers", "U"], "vae": ["diffusers", "V"]})");
  auto layout = read_model_layout(dir.path / "p");
  ASSERT_TRUE(layout) << layout.error().message;
  auto narrowed = narrow_layout(*layout, Dtype::BF16);
  ASSERT_TRUE(narrowed) << narrowed.error().message;
  ASSERT_TRUE(narrowed->validate());
  const auto* vae = narrowed->component("vae");
  const auto* was = layout->component("vae");
  ASSERT_TRUE(vae && was);
  EXPECT_EQ(vae->runs, was->runs);
  EXPECT_EQ(vae->bytes, was->bytes);
  EXPECT_LT(narrowed->component("unet")->bytes, layout->component("unet")->bytes);
  EXPECT_LT(narrowed->total_bytes(), layout->total_bytes());
}

TEST(LayoutNarrowing, OnlyF16AndBf16AreTargets) {
  TempDir dir;
  write_safetensors(dir.path / "m.safetensors", kMixed);
  auto layout = read_model_layout(dir.path / "m.safetensors");
  ASSERT_TRUE(layout);
  for (Dtype to : {Dtype::F32, Dtype::F64, Dtype::I8, Dtype::F8_E4M3, Dtype::U16}) {
    auto r = narrow_layout(*layout, to);
    ASSERT_FALSE(r) << to_string(to);
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  }
}

TEST(LayoutNarrowing, ValidateCatchesARunThatDisagreesWithItsTensors) {
  TempDir dir;
  write_safetensors(dir.path / "m.safetensors", kMixed);
  auto narrowed = narrow_layout(*read_model_layout(dir.path / "m.safetensors"), Dtype::F16);
  ASSERT_TRUE(narrowed);
  auto broken = *narrowed;
  broken.components[0].runs[0].narrow_to.reset();  // a's bytes would land unconverted
  EXPECT_FALSE(broken.validate());
  broken = *narrowed;
  broken.components[0].runs[0].bytes += 2;  // not whole floats
  EXPECT_FALSE(broken.validate());
  broken = *narrowed;
  broken.components[0].runs[0].narrow_to = Dtype::I16;
  EXPECT_FALSE(broken.validate());
}

}  // namespace
}  // namespace memd
