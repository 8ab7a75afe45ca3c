// tests/models/safetensors_writer.hpp — writes small model files for tests:
// valid safetensors files (and raw, corruptible ones), shard indices,
// diffusers pipeline folders and single-file SDXL checkpoints.
//
// Every tensor's bytes are a pattern of its name (tensor_byte), so a test can
// load a layout's copy runs and check each tensor landed where it says.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/dtype.hpp"

namespace memd::test_models {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/memd-models-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

struct FakeTensor {
  std::string name;
  std::vector<std::uint64_t> shape;
  std::string dtype = "F16";
};

inline std::uint64_t tensor_bytes(const FakeTensor& t) {
  std::uint64_t bits = dtype_bits(*parse_dtype(t.dtype));
  for (const auto d : t.shape) bits *= d;
  return bits / 8;
}

// Byte i of tensor `name`: differs between tensors and along each one.
inline std::uint32_t tensor_seed(std::string_view name) {
  std::uint32_t h = 2166136261u;
  for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return h;
}
inline std::byte tensor_byte(std::uint32_t seed, std::uint64_t i) {
  return static_cast<std::byte>((seed + i * 131) & 0xff);
}
inline std::byte tensor_byte(std::string_view name, std::uint64_t i) { return tensor_byte(tensor_seed(name), i); }

inline void write_bytes(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string le64(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// The header JSON for `tensors` laid out in the order given, `gap` bytes
// between them, and the data section to go with it.
struct Built {
  std::string header;
  std::string data;
};
inline Built build_safetensors(const std::vector<FakeTensor>& tensors,
                               const std::map<std::string, std::string>& metadata = {}, std::uint64_t gap = 0) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  Built b;
  for (const auto& t : tensors) {
    if (!b.data.empty()) b.data.append(gap, '\0');
    const std::uint64_t begin = b.data.size(), bytes = tensor_bytes(t);
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, begin + bytes}}};
    const std::uint32_t seed = tensor_seed(t.name);
    b.data.resize(begin + bytes);
    for (std::uint64_t i = 0; i < bytes; ++i) b.data[begin + i] = static_cast<char>(tensor_byte(seed, i));
  }
  b.header = h.dump();
  // As the reference writer does: pad the header with spaces to 8 bytes.
  b.header.append((8 - b.header.size() % 8) % 8, ' ');
  return b;
}

// A file of: `declared` (default: the header's length) as 8 LE bytes, the
// header text, then `data`. Lets a test write any header, however broken.
inline void write_raw_safetensors(const fs::path& path, std::string_view header, std::string_view data = {},
                                  std::optional<std::uint64_t> declared = std::nullopt) {
  std::string file = le64(declared.value_or(header.size()));
  file.append(header);
  file.append(data);
  write_bytes(path, file);
}

inline void write_safetensors(const fs::path& path, const std::vector<FakeTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}, std::uint64_t gap = 0) {
  const Built b = build_safetensors(tensors, metadata, gap);
  write_raw_safetensors(path, b.header, b.data);
}

// `stem`-0000i-of-0000n.safetensors for each shard plus
// `stem`.safetensors.index.json mapping every tensor to its shard (and
// `extra_map` entries on top, for hostile tests). Returns the index's path.
inline fs::path write_sharded(const fs::path& dir, const std::string& stem,
                              const std::vector<std::vector<FakeTensor>>& shards,
                              const std::map<std::string, std::string>& extra_map = {},
                              const std::string& index_name = "") {
  nlohmann::json map = nlohmann::json::object();
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    char name[256];
    std::snprintf(name, sizeof name, "%s-%05zu-of-%05zu.safetensors", stem.c_str(), i + 1, shards.size());
    write_safetensors(dir / name, shards[i], {{"shard", std::to_string(i + 1)}});
    for (const auto& t : shards[i]) {
      map[t.name] = name;
      total += tensor_bytes(t);
    }
  }
  for (const auto& [k, v] : extra_map) map[k] = v;
  const nlohmann::json index = {{"metadata", {{"total_size", total}, {"format", "pt"}}}, {"weight_map", map}};
  const fs::path path = dir / (index_name.empty() ? stem + ".safetensors.index.json" : index_name);
  write_bytes(path, index.dump(2));
  return path;
}

// A diffusers pipeline: model_index.json listing every part of `parts` (each
// written as <part>/<file>) and every config-only part (a folder with a JSON
// file and no weights), plus a [null, null] safety_checker.
inline void write_diffusers(const fs::path& dir, const std::map<std::string, std::vector<FakeTensor>>& parts,
                            const std::vector<std::string>& config_parts = {"scheduler", "tokenizer"},
                            const std::map<std::string, std::string>& file_names = {}) {
  nlohmann::json index = {{"_class_name", "StableDiffusionXLPipeline"},
                          {"_diffusers_version", "0.30.0"},
                          {"force_zeros_for_empty_prompt", true},
                          {"safety_checker", {nullptr, nullptr}}};
  for (const auto& [name, tensors] : parts) {
    const bool unet_like = name == "unet" || name == "vae";
    index[name] = {unet_like ? "diffusers" : "transformers", name + "Class"};
    const auto custom = file_names.find(name);
    const std::string file = custom != file_names.end() ? custom->second
                             : unet_like                ? "diffusion_pytorch_model.safetensors"
                                                        : "model.safetensors";
    write_safetensors(dir / name / file, tensors);
    write_bytes(dir / name / "config.json", "{}");
  }
  for (const auto& name : config_parts) {
    index[name] = {"diffusers", name + "Class"};
    write_bytes(dir / name / (name + "_config.json"), "{}");
  }
  write_bytes(dir / "model_index.json", index.dump(2));
}

// Tensors shaped like an SDXL single-file checkpoint (tiny): some under each
// component prefix, interleaved in name order as the reference writer sorts
// them, and one with no prefix. Sizes mix multiples of 256 and odd ones.
inline std::vector<FakeTensor> sdxl_checkpoint_tensors() {
  return {
      {"conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight", {4, 64}},
      {"conditioner.embedders.0.transformer.text_model.final_layer_norm.bias", {5}},
      {"conditioner.embedders.1.model.ln_final.weight", {3, 3}},
      {"conditioner.embedders.1.model.text_projection", {8, 16}, "F32"},
      {"denoiser.sigmas", {10}, "F32"},
      {"first_stage_model.decoder.conv_in.weight", {128}},
      {"first_stage_model.decoder.conv_in.bias", {7}},
      {"model.diffusion_model.input_blocks.0.0.weight", {2, 128}},
      {"model.diffusion_model.input_blocks.0.0.bias", {128}},
      {"model.diffusion_model.out.2.bias", {3}},
  };
}

}  // namespace memd::test_models
