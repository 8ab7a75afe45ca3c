// ModelLayout: each kind of model on disk becomes the components, placements
// and copy runs the header of model_layout.hpp promises — checked by loading
// every component through its runs and finding each tensor's bytes where its
// placement says — and each kind of malformed model is refused.
#include "models/model_layout.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "models/safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;

// The component's buffer as a loader fills it: run by run, with pread.
std::vector<std::byte> load(const ModelLayout& layout, const ComponentLayout& c) {
  std::vector<std::byte> buffer(c.bytes, std::byte{0xEE});
  for (const CopyRun& r : c.runs) {
    auto f = ModelFile::open(layout.files.at(r.file));
    EXPECT_TRUE(f) << f.error().message;
    if (!f) continue;
    auto read = f->read_at(r.file_offset, std::span(buffer).subspan(r.buffer_offset, r.bytes));
    EXPECT_TRUE(read) << read.error().message;
  }
  return buffer;
}

// Every tensor's bytes are where its placement says, in every component.
void expect_loads(const ModelLayout& layout) {
  auto valid = layout.validate();
  ASSERT_TRUE(valid) << valid.error().message;
  for (const auto& c : layout.components) {
    const auto buffer = load(layout, c);
    for (const auto& t : c.tensors)
      for (std::uint64_t i = 0; i < t.bytes; ++i)
        ASSERT_EQ(buffer[t.offset + i], tensor_byte(t.name, i)) << c.name << " / " << t.name << " byte " << i;
  }
}

std::vector<std::string> names_of(const ModelLayout& layout) {
  std::vector<std::string> names;
  for (const auto& c : layout.components) names.push_back(c.name);
  return names;
}

void expect_refused(const Result<ModelLayout>& r, ErrorCode code, std::string_view says) {
  ASSERT_FALSE(r) << "accepted; expected a refusal saying: " << says;
  EXPECT_EQ(r.error().code, code) << r.error().message;
  EXPECT_NE(r.error().message.find(says), std::string::npos) << "message: " << r.error().message;
}

TEST(ModelLayout, ASingleFileIsOneComponentAndOneRunWithTheFilesOffsets) {
  TempDir dir;
  const auto path = dir.path / "model.safetensors";
  write_safetensors(path, {{"a", {3}}, {"b", {5, 5}, "F32"}, {"c", {0}}, {"d", {1}, "U8"}}, {{"format", "pt"}},
                    /*gap=*/3);
  auto layout = read_model_layout(path);
  ASSERT_TRUE(layout) << layout.error().message;
  EXPECT_EQ(layout->kind, ModelLayout::Kind::Safetensors);
  ASSERT_EQ(names_of(*layout), std::vector<std::string>{"model"});
  ASSERT_EQ(layout->files, std::vector<fs::path>{path});
  EXPECT_EQ(layout->identities.at(0).size, fs::file_size(path));
  const auto& c = layout->components[0];
  // a [0,6) gap 3 b [9,109) gap 3 c [112,112) gap 3 d [115,116)
  ASSERT_EQ(c.tensors.size(), 4u);
  EXPECT_EQ(c.tensors[1].name, "b");
  EXPECT_EQ(c.tensors[1].offset, 9u);
  EXPECT_EQ(c.tensors[3].offset, 115u);
  EXPECT_EQ(c.bytes, 256u);
  const std::uint64_t data_offset = c.tensors[0].file_offset;
  EXPECT_EQ(c.runs, (std::vector<CopyRun>{{0, data_offset, 0, 116}})) << "one run, holes copied along";
  EXPECT_EQ(layout->total_bytes(), 256u);
  EXPECT_EQ(layout->metadata, (std::vector<std::pair<std::string, std::string>>{{"format", "pt"}}));
  expect_loads(*layout);
}

TEST(ModelLayout, AZeroSizeTensorInsideAnotherIsPlacedAndValid) {
  TempDir dir;
  const auto path = dir.path / "z.safetensors";
  std::string data;
  for (std::uint64_t i = 0; i < 8; ++i) data.push_back(static_cast<char>(tensor_byte("a", i)));
  write_raw_safetensors(path, R"({"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},
                                  "z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}})",
                        data);
  auto layout = read_model_layout(path);
  ASSERT_TRUE(layout) << layout.error().message;
  ASSERT_EQ(layout->components[0].tensors.size(), 2u);
  EXPECT_EQ(layout->components[0].tensors[1].offset, 4u);
  expect_loads(*layout);
}

TEST(ModelLayout, AShardIndexIsOneComponentWithOneRunPerShard) {
  TempDir dir;
  const auto index = write_sharded(dir.path, "model",
                                   {{{"layers.0.w", {10, 10}}, {"layers.0.b", {10}}},
                                    {{"layers.1.w", {10, 10}}, {"layers.1.b", {10}}},
                                    {{"head", {7}, "F32"}}});
  auto layout = read_model_layout(index);
  ASSERT_TRUE(layout) << layout.error().message;
  EXPECT_EQ(layout->kind, ModelLayout::Kind::Sharded);
  ASSERT_EQ(names_of(*layout), std::vector<std::string>{"model"});
  ASSERT_EQ(layout->files.size(), 3u);
  EXPECT_EQ(layout->files[0].filename(), "model-00001-of-00003.safetensors");
  const auto& c = layout->components[0];
  ASSERT_EQ(c.runs.size(), 3u);
  // Shard 1 holds 220 bytes at 0; shard 2 starts at the next 256.
  EXPECT_EQ(c.runs[0].buffer_offset, 0u);
  EXPECT_EQ(c.runs[1].buffer_offset, 256u);
  EXPECT_EQ(c.runs[2].buffer_offset, 512u);
  EXPECT_EQ(c.runs[2].bytes, 28u);
  EXPECT_EQ(c.bytes, 768u);
  for (const auto& r : c.runs) EXPECT_EQ(r.buffer_offset % kTensorAlignment, 0u);
  // The index's metadata first (numbers as their JSON text), then what a
  // shard adds.
  const std::map<std::string, std::string> meta(layout->metadata.begin(), layout->metadata.end());
  EXPECT_EQ(meta.at("total_size"), "468");
  EXPECT_EQ(meta.at("format"), "pt");
  EXPECT_EQ(meta.at("shard"), "1");
  expect_loads(*layout);
}

TEST(ModelLayout, ADiffusersFolderIsOneComponentPerPartWithWeights) {
  TempDir dir;
  write_diffusers(dir.path, {{"unet", {{"conv_in.weight", {4, 4}}, {"conv_in.bias", {4}}}},
                             {"vae", {{"decoder.conv_in.weight", {8}}}},
                             {"text_encoder", {{"text_model.embeddings.token_embedding.weight", {16, 8}}}},
                             {"text_encoder_2", {{"text_model.embeddings.token_embedding.weight", {16, 8}},
                                                 {"text_projection.weight", {8, 8}}}}});
  auto layout = read_model_layout(dir.path);
  ASSERT_TRUE(layout) << layout.error().message;
  EXPECT_EQ(layout->kind, ModelLayout::Kind::Diffusers);
  EXPECT_EQ(names_of(*layout), (std::vector<std::string>{"text_encoder", "text_encoder_2", "unet", "vae"}))
      << "scheduler and tokenizer hold no weights; safety_checker is [null, null]";
  EXPECT_EQ(layout->files.size(), 4u);
  EXPECT_EQ(layout->component("unet")->runs.size(), 1u);
  EXPECT_EQ(layout->files[layout->component("vae")->runs[0].file],
            dir.path / "vae" / "diffusion_pytorch_model.safetensors");
  EXPECT_EQ(layout->component("text_encoder_2")->bytes, 512u) << "256 + 128 bytes, rounded up";
  EXPECT_EQ(layout->total_bytes(), 5u * 256);
  const std::map<std::string, std::string> meta(layout->metadata.begin(), layout->metadata.end());
  EXPECT_EQ(meta.at("_class_name"), "StableDiffusionXLPipeline");
  EXPECT_EQ(meta.at("force_zeros_for_empty_prompt"), "true");
  expect_loads(*layout);

  // The same pipeline named by its model_index.json.
  auto again = read_model_layout(dir.path / "model_index.json");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(names_of(*again), names_of(*layout));
}

TEST(ModelLayout, DiffusersPartsMayBeShardedOrInAVariant) {
  TempDir dir;
  write_diffusers(dir.path, {{"vae", {{"plain", {4}}}}}, {"scheduler"});
  // unet: sharded; text_encoder: fp16 only; vae: plain and fp16 both.
  write_sharded(dir.path / "unet", "diffusion_pytorch_model", {{{"u.a", {100}}}, {{"u.b", {100}}}});
  write_safetensors(dir.path / "text_encoder" / "model.fp16.safetensors", {{"te", {4}}});
  write_safetensors(dir.path / "vae" / "diffusion_pytorch_model.fp16.safetensors", {{"half", {4}}});
  auto index = nlohmann::json::parse(std::ifstream(dir.path / "model_index.json"));
  index["unet"] = {"diffusers", "UNet2DConditionModel"};
  index["text_encoder"] = {"transformers", "CLIPTextModel"};
  write_bytes(dir.path / "model_index.json", index.dump());

  auto plain = read_model_layout(dir.path);
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_EQ(names_of(*plain), (std::vector<std::string>{"text_encoder", "unet", "vae"}));
  EXPECT_EQ(plain->component("unet")->runs.size(), 2u);
  EXPECT_EQ(plain->component("unet")->tensors.size(), 2u);
  EXPECT_EQ(plain->component("text_encoder")->tensors[0].name, "te") << "fp16 only: the variant is the fallback";
  EXPECT_EQ(plain->component("vae")->tensors[0].name, "plain") << "without a variant the plain file wins";
  expect_loads(*plain);

  auto fp16 = read_model_layout(dir.path, "fp16");
  ASSERT_TRUE(fp16) << fp16.error().message;
  EXPECT_EQ(fp16->component("vae")->tensors[0].name, "half") << "with the variant asked for, it wins";
  EXPECT_EQ(fp16->component("unet")->runs.size(), 2u) << "no fp16 unet: the plain one";

  expect_refused(read_model_layout(dir.path, "../x"), ErrorCode::invalid_argument, "not a plain name");
}

TEST(ModelLayout, AFolderWithoutModelIndexIsOneComponentFolder) {
  TempDir dir;
  write_safetensors(dir.path / "diffusion_pytorch_model.safetensors", {{"w", {8}}});
  auto layout = read_model_layout(dir.path);
  ASSERT_TRUE(layout) << layout.error().message;
  EXPECT_EQ(layout->kind, ModelLayout::Kind::Safetensors);
  EXPECT_EQ(names_of(*layout), std::vector<std::string>{"model"});

  TempDir sharded;
  write_sharded(sharded.path, "model", {{{"a", {8}}}, {{"b", {8}}}});
  auto s = read_model_layout(sharded.path);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->kind, ModelLayout::Kind::Sharded);

  TempDir empty;
  expect_refused(read_model_layout(empty.path), ErrorCode::invalid_argument,
                 "neither model_index.json nor safetensors weights");
}

TEST(ModelLayout, ASingleFileCheckpointSplitsIntoComponentsByPrefix) {
  TempDir dir;
  const auto path = dir.path / "sd_xl_base_1.0.safetensors";
  write_safetensors(path, sdxl_checkpoint_tensors());
  auto layout = read_model_layout(path);
  ASSERT_TRUE(layout) << layout.error().message;
  EXPECT_EQ(layout->kind, ModelLayout::Kind::Checkpoint);
  EXPECT_EQ(names_of(*layout),
            (std::vector<std::string>{"unet", "vae", "text_encoder", "text_encoder_2", "other"}));
  EXPECT_EQ(layout->files.size(), 1u);
  for (const auto& c : layout->components) {
    for (const auto& t : c.tensors) EXPECT_EQ(t.offset % kTensorAlignment, 0u) << t.name;
    EXPECT_EQ(c.bytes % kTensorAlignment, 0u);
  }
  const auto* unet = layout->component("unet");
  ASSERT_EQ(unet->tensors.size(), 3u);
  EXPECT_EQ(unet->tensors[0].name, "model.diffusion_model.input_blocks.0.0.weight") << "names keep their prefix";
  // 512 + 256 + 6 bytes, contiguous in the file and, being multiples of 256,
  // in the buffer: one run.
  EXPECT_EQ(unet->runs.size(), 1u);
  EXPECT_EQ(unet->bytes, 1024u);
  // 18 bytes then 512: the second tensor moves to 256, so two runs.
  EXPECT_EQ(layout->component("text_encoder_2")->runs.size(), 2u);
  EXPECT_EQ(layout->component("other")->tensors.at(0).name, "denoiser.sigmas");
  expect_loads(*layout);
}

TEST(ModelLayout, OneRecognisedPrefixIsAPlainModel) {
  TempDir dir;
  const auto path = dir.path / "unet_only.safetensors";
  write_safetensors(path, {{"model.diffusion_model.a", {4}}, {"model.diffusion_model.b", {4}}, {"x", {1}}});
  auto layout = read_model_layout(path);
  ASSERT_TRUE(layout) << layout.error().message;
  EXPECT_EQ(layout->kind, ModelLayout::Kind::Safetensors);
  EXPECT_EQ(names_of(*layout), std::vector<std::string>{"model"});
}

TEST(ModelLayout, SD1CheckpointsUseCondStageModel) {
  TempDir dir;
  const auto path = dir.path / "v1-5.safetensors";
  write_safetensors(path, {{"alphas_cumprod", {1000}, "F32"},
                           {"cond_stage_model.transformer.w", {4}},
                           {"first_stage_model.encoder.w", {4}},
                           {"model.diffusion_model.w", {4}},
                           {"model_ema.decay", {}, "F32"}});
  auto layout = read_model_layout(path);
  ASSERT_TRUE(layout) << layout.error().message;
  EXPECT_EQ(names_of(*layout), (std::vector<std::string>{"unet", "vae", "text_encoder", "other"}));
  EXPECT_EQ(layout->component("other")->tensors.size(), 2u);
  expect_loads(*layout);
}

TEST(ModelLayout, DuplicateNamesAcrossShardsAreRefused) {
  TempDir dir;
  // The index maps "w" to the second shard; the first (mapped for "x") holds
  // a "w" too.
  const auto index = write_sharded(dir.path, "model", {{{"w", {4}}, {"x", {4}}}, {{"w", {4}}, {"v", {4}}}});
  expect_refused(read_model_layout(index), ErrorCode::invalid_argument, "tensor 'w' of component 'model' is in both");
}

TEST(ModelLayout, ShardNamesMustBePlainFileNames) {
  TempDir dir;
  for (const std::string bad : {"../model-00001-of-00001.safetensors", "sub/model.safetensors", "..", ".", "",
                                "/etc/passwd"}) {
    SCOPED_TRACE(bad);
    const auto index = write_sharded(dir.path, "model", {{{"a", {4}}}}, {{"evil", bad}});
    expect_refused(read_model_layout(index), ErrorCode::invalid_argument, "not a plain file name");
  }
}

TEST(ModelLayout, IndexRefusals) {
  TempDir dir;
  const auto missing = write_sharded(dir.path, "model", {{{"a", {4}}}}, {{"b", "model-00002-of-00002.safetensors"}});
  expect_refused(read_model_layout(missing), ErrorCode::not_found,
                 "weight_map puts 'b' in shard 'model-00002-of-00002.safetensors', which does not exist");

  const auto absent = write_sharded(dir.path, "model", {{{"a", {4}}}}, {{"b", "model-00001-of-00001.safetensors"}});
  expect_refused(read_model_layout(absent), ErrorCode::invalid_argument, "weight_map puts 'b' in");

  const auto p = dir.path / "x.safetensors.index.json";
  write_bytes(p, R"({"weight_map": {}})");
  expect_refused(read_model_layout(p), ErrorCode::invalid_argument, "weight_map lists no tensors");
  write_bytes(p, R"({"metadata": {}})");
  expect_refused(read_model_layout(p), ErrorCode::invalid_argument, "no \"weight_map\" object");
  write_bytes(p, R"([1])");
  expect_refused(read_model_layout(p), ErrorCode::invalid_argument, "not a JSON object");
  write_bytes(p, R"({"weight_map": {"a": 3}})");
  expect_refused(read_model_layout(p), ErrorCode::invalid_argument, "weight_map entry 'a' is number");
  write_bytes(p, R"({"weight_map": {"a": "s.safetensors", "a": "t.safetensors"}})");
  expect_refused(read_model_layout(p), ErrorCode::invalid_argument, "key 'a' appears twice");
  write_bytes(p, R"({"metadata": {"x": [1]}, "weight_map": {"a": "s.safetensors"}})");
  expect_refused(read_model_layout(p), ErrorCode::invalid_argument, "metadata 'x' is array");

  // A malformed shard is refused with the shard's path.
  write_raw_safetensors(dir.path / "s.safetensors", R"({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 3]}})",
                        "abc");
  write_bytes(p, R"({"weight_map": {"a": "s.safetensors"}})");
  expect_refused(read_model_layout(p), ErrorCode::invalid_argument,
                 (dir.path / "s.safetensors").string() + ": tensor 'a': data_offsets [0, 3] hold 3 bytes");
}

TEST(ModelLayout, DiffusersRefusals) {
  {
    TempDir dir;
    write_diffusers(dir.path, {{"unet", {{"w", {4}}}}});
    auto index = nlohmann::json::parse(std::ifstream(dir.path / "model_index.json"));
    index["vae"] = {"diffusers", "AutoencoderKL"};
    write_bytes(dir.path / "model_index.json", index.dump());
    expect_refused(read_model_layout(dir.path), ErrorCode::not_found, "lists part 'vae', but");
  }
  {
    TempDir dir;
    write_diffusers(dir.path, {{"unet", {{"w", {4}}}}});
    auto index = nlohmann::json::parse(std::ifstream(dir.path / "model_index.json"));
    index[".."] = {"diffusers", "AutoencoderKL"};
    write_bytes(dir.path / "model_index.json", index.dump());
    expect_refused(read_model_layout(dir.path), ErrorCode::invalid_argument, "part '..' is not a plain folder name");
  }
  {
    TempDir dir;
    write_diffusers(dir.path, {{"unet", {{"w", {4}}}}}, {"text_encoder"});
    write_bytes(dir.path / "text_encoder" / "pytorch_model.bin", "pickle");
    expect_refused(read_model_layout(dir.path), ErrorCode::invalid_argument,
                   "part 'text_encoder' has only pickle weights");
  }
  {
    TempDir dir;
    write_diffusers(dir.path, {}, {"scheduler"});
    expect_refused(read_model_layout(dir.path), ErrorCode::invalid_argument, "no part holds safetensors weights");
  }
  {
    TempDir dir;
    write_diffusers(dir.path, {{"unet", {{"w", {4}}}}});
    write_bytes(dir.path / "model_index.json", R"({"unet": ["diffusers", 3]})");
    expect_refused(read_model_layout(dir.path), ErrorCode::invalid_argument, "part 'unet' is not [\"library\", \"Class\"]");
    write_bytes(dir.path / "model_index.json", "{\"unet\": ");
    expect_refused(read_model_layout(dir.path), ErrorCode::invalid_argument, "model_index.json: not valid JSON at byte");
    write_bytes(dir.path / "model_index.json", std::string(2 << 20, ' '));
    expect_refused(read_model_layout(dir.path), ErrorCode::invalid_argument, "more than the 1048576");
  }
  {
    TempDir dir;  // a part whose weights file is itself malformed
    write_diffusers(dir.path, {{"unet", {{"w", {4}}}}});
    write_raw_safetensors(dir.path / "unet" / "diffusion_pytorch_model.safetensors", "{}", "", 1u << 30);
    expect_refused(read_model_layout(dir.path), ErrorCode::invalid_argument, "declares a header of 1073741824 bytes");
  }
}

TEST(ModelLayout, OtherRefusals) {
  TempDir dir;
  expect_refused(read_model_layout(dir.path / "nope.safetensors"), ErrorCode::not_found, "no model at");
  write_safetensors(dir.path / "empty.safetensors", {});
  expect_refused(read_model_layout(dir.path / "empty.safetensors"), ErrorCode::invalid_argument,
                 "component 'model' holds no tensors");
  write_bytes(dir.path / "weights.bin", "not safetensors at all");
  auto r = read_model_layout(dir.path / "weights.bin");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  // Duplicate names inside a checkpoint component cannot come from one
  // header (its JSON refuses a key twice): the check is the index's.
}

TEST(ModelLayout, AFileTruncatedAfterItsLayoutWasReadFailsItsReadsCleanly) {
  TempDir dir;
  const auto path = dir.path / "model.safetensors";
  write_safetensors(path, {{"a", {64}}, {"b", {64}}});
  auto layout = read_model_layout(path);
  ASSERT_TRUE(layout) << layout.error().message;
  const auto& b = layout->components[0].tensors[1];
  std::vector<std::byte> buf(b.bytes);

  // A loader that opened the file before it shrank: the read crosses the new
  // end and says the file was truncated (pread: no SIGBUS).
  auto before = ModelFile::open(layout->files[b.file]);
  ASSERT_TRUE(before);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(b.file_offset + 10)), 0);
  auto r1 = before->read_at(b.file_offset, buf);
  ASSERT_FALSE(r1);
  EXPECT_EQ(r1.error().code, ErrorCode::invalid_file);
  EXPECT_NE(r1.error().message.find("truncated"), std::string::npos) << r1.error().message;

  // One that opens it after: its identity differs from the layout's, and the
  // read is past the end it sees.
  auto after = ModelFile::open(layout->files[b.file]);
  ASSERT_TRUE(after);
  EXPECT_NE(after->identity(), layout->identities[b.file]);
  auto r2 = after->read_at(b.file_offset, buf);
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message.find("past its end"), std::string::npos) << r2.error().message;

  // And reading the layout again refuses the file: its tensor now ends past it.
  expect_refused(read_model_layout(path), ErrorCode::invalid_argument, "tensor 'b': data_offsets");
}

}  // namespace
}  // namespace memd
