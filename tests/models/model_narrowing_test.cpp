// Loads that narrow (ModelLoadRequest::dtype, issue 15 item 2): a diffusers
// model's F32 tensors land as F16 / BF16 equal to the reference conversion,
// the rest as the file holds them; the narrowed model is what status,
// estimates and sharing see; it survives the RAM tier and the Disk tier;
// asking for the same model with another dtype, or for a dtype that is not
// a narrowing, is refused.
#include <gtest/gtest.h>

#include <set>

#include "model_manager_fixture.hpp"
#include "models/dtype_convert.hpp"
#include "models/layout_narrowing.hpp"
#include "safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;

const DeviceId kDev = DeviceId::host(0);

struct Fixture : ModelManagerFixture {
  Fixture() : ModelManagerFixture({.host_device_sizes = {64 * kMiB}}) {}

  // A pipeline whose UNet is mostly F32 (with an F16 bias and an I64 table)
  // and whose VAE is F16 only.
  void write_pipeline(const std::string& dir) {
    std::vector<FakeTensor> u;
    for (int i = 0; i < 3; ++i) u.push_back({"unet.block." + std::to_string(i) + ".weight", {250, 1024}, "F32"});
    u.push_back({"unet.conv_out.bias", {7}, "F16"});
    u.push_back({"unet.positions", {77}, "I64"});
    write_diffusers(root.path / dir, {{"unet", u}, {"vae", vae()}});
  }

  // Every tensor in VRAM equals the file's bytes narrowed to `to` (as
  // layout_narrowing says), read through the model's own allocations.
  void expect_narrowed(const ModelStatus& s, Dtype to) {
    auto layout = read_model_layout(s.path);
    ASSERT_TRUE(layout);
    auto narrowed = narrow_layout(*layout, to);
    ASSERT_TRUE(narrowed);
    for (const auto& c : s.components) {
      ASSERT_TRUE(c.allocation) << c.name << " is not in VRAM";
      const auto* lc = narrowed->component(c.name);
      ASSERT_NE(lc, nullptr);
      EXPECT_EQ(c.bytes, lc->bytes) << c.name;
      for (const auto& t : lc->tensors) {
        const std::uint64_t file_bytes = t.converted_from ? 2 * t.bytes : t.bytes;
        std::vector<std::byte> want(file_bytes);
        for (std::uint64_t i = 0; i < file_bytes; ++i) want[i] = tensor_byte(t.name, i);
        if (t.converted_from) {
          std::vector<std::byte> half(t.bytes);
          ASSERT_TRUE(convert_f32(want, half, to));
          want = std::move(half);
        }
        auto got = engine->read(*c.allocation, t.offset, t.bytes);
        ASSERT_TRUE(got) << got.error().message;
        ASSERT_TRUE(std::equal(want.begin(), want.end(), got->begin())) << s.name << "/" << t.name;
      }
    }
  }
};

TEST(ModelNarrowing, F32TensorsLandConvertedAndTheModelSaysSo) {
  for (Dtype to : {Dtype::F16, Dtype::BF16}) {
    Fixture f;
    f.write_pipeline("p");
    ModelLoadRequest plain{.name = "plain", .path = "p", .device = kDev};
    ModelLoadRequest half{.name = "half", .path = "p", .device = kDev, .dtype = to};
    auto estimate_plain = f.models->estimate(plain);
    auto estimate_half = f.models->estimate(half);
    ASSERT_TRUE(estimate_plain && estimate_half);
    const auto s = f.load(half);
    ASSERT_EQ(s.state, ModelState::Loaded) << s.error;
    EXPECT_EQ(s.narrowed_to, to);
    EXPECT_EQ(std::set<std::string>(s.dtypes.begin(), s.dtypes.end()),
              (std::set<std::string>{std::string(to_string(to)), "I64", "F16"}));
    // The estimate saw the narrowed model: about half the UNet's bytes.
    EXPECT_EQ(estimate_half->bytes, s.bytes);
    EXPECT_LT(estimate_half->bytes, estimate_plain->bytes * 6 / 10);
    EXPECT_EQ(s.progress_bytes, s.progress_total) << "progress counts the bytes that landed";
    f.expect_narrowed(s, to);
    // Down to the RAM tier and back: the narrowed bytes come back.
    ASSERT_GT(f.models->evict_for(kDev, s.bytes), 0u);
    ASSERT_EQ(f.models->status("half")->tier, ModelTier::RAM);
    const auto back = f.load(half);
    ASSERT_EQ(back.tier, ModelTier::VRAM) << back.error;
    f.expect_narrowed(back, to);
    ASSERT_TRUE(f.models->unload("half"));
  }
}

TEST(ModelNarrowing, TheDiskTierNarrowsAgainOnTheWayBack) {
  // No RAM tier: an eviction sends the model to Disk, and the restore reads
  // (and converts) its files again.
  ModelManagerFixture f({.host_device_sizes = {64 * kMiB}, .ram_cache_bytes = 0});
  std::vector<FakeTensor> u = {{"w", {2000, 1024}, "F32"}, {"b", {9}, "F16"}};
  write_safetensors(f.root.path / "m.safetensors", u);
  ModelLoadRequest r{.name = "m", .path = "m.safetensors", .device = kDev, .dtype = Dtype::F16};
  const auto first = f.load(r);
  ASSERT_EQ(first.state, ModelState::Loaded);
  ASSERT_GT(f.models->evict_for(kDev, first.bytes), 0u);
  ASSERT_EQ(f.models->status("m")->tier, ModelTier::Disk);
  const auto s = f.load(r);
  ASSERT_EQ(s.tier, ModelTier::VRAM) << s.error;
  auto got = f.engine->read(*s.components.at(0).allocation, 0, 2000 * 1024 * 2);
  ASSERT_TRUE(got);
  std::vector<std::byte> file(2000 * 1024 * 4), want(2000 * 1024 * 2);
  for (std::uint64_t i = 0; i < file.size(); ++i) file[i] = tensor_byte("w", i);
  ASSERT_TRUE(convert_f32(file, want, Dtype::F16));
  EXPECT_TRUE(std::equal(want.begin(), want.end(), got->begin()));
  ASSERT_TRUE(f.models->unload("m"));
}

TEST(ModelNarrowing, SharingKnowsNarrowedFromPlain) {
  Fixture f;
  f.write_pipeline("p");
  f.write_pipeline("q");  // the same bytes in another folder
  ASSERT_EQ(f.load({.name = "plain", .path = "p", .device = kDev}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "half", .path = "p", .device = kDev, .dtype = Dtype::F16}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "half2", .path = "q", .device = kDev, .dtype = Dtype::F16}).state, ModelState::Loaded);
  auto plain = *f.models->status("plain");
  auto half = *f.models->status("half");
  auto half2 = *f.models->status("half2");
  auto component = [](const ModelStatus& s, const std::string& name) {
    for (const auto& c : s.components)
      if (c.name == name) return c;
    return ComponentStatus{};
  };
  // The VAE has no F32: one copy for all three. The UNet narrowed differs
  // from the plain one, and is one copy for the two narrowed models.
  EXPECT_EQ(component(plain, "vae").holders, 3u);
  EXPECT_EQ(component(plain, "unet").holders, 1u);
  EXPECT_EQ(component(half, "unet").holders, 2u);
  EXPECT_EQ(component(half, "unet").allocation, component(half2, "unet").allocation);
  EXPECT_NE(component(half, "unet").allocation, component(plain, "unet").allocation);
  EXPECT_EQ(f.held_by_models(),
            component(plain, "unet").bytes + component(half, "unet").bytes + component(plain, "vae").bytes);
  f.expect_narrowed(half2, Dtype::F16);
  for (const auto* n : {"plain", "half", "half2"}) ASSERT_TRUE(f.models->unload(n));
}

TEST(ModelNarrowing, AnotherDtypeForAKnownModelOrANonNarrowingIsRefused) {
  Fixture f;
  f.write_pipeline("p");
  ASSERT_EQ(f.load({.name = "m", .path = "p", .device = kDev, .dtype = Dtype::F16}).state, ModelState::Loaded);
  for (std::optional<Dtype> other : {std::optional<Dtype>(Dtype::BF16), std::optional<Dtype>()}) {
    auto r = f.models->load({.name = "m", .path = "p", .device = kDev, .dtype = other});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::conflict);
    EXPECT_NE(r.error().message.find("unload it"), std::string::npos) << r.error().message;
  }
  for (Dtype bad : {Dtype::F32, Dtype::F64, Dtype::I8, Dtype::F8_E4M3}) {
    auto r = f.models->load({.name = "x", .path = "p", .device = kDev, .dtype = bad});
    ASSERT_FALSE(r) << to_string(bad);
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    auto e = f.models->estimate({.name = "x", .path = "p", .device = kDev, .dtype = bad});
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error().code, ErrorCode::invalid_argument);
  }
  EXPECT_FALSE(f.models->status("x")) << "a refused load registers nothing";
  // The first model is unharmed.
  f.expect_narrowed(*f.models->status("m"), Dtype::F16);
  ASSERT_TRUE(f.models->unload("m"));
}

}  // namespace
}  // namespace memd
