// models/model_layout.cpp — see model_layout.hpp.
#include "models/model_layout.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <unordered_map>

#include "models/dtype_convert.hpp"
#include "models/safetensors.hpp"
#include "models/strict_json.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Metadata = std::vector<std::pair<std::string, std::string>>;

// A shard index of a very large model (100k tensors) is a few MiB.
constexpr std::uint64_t kMaxIndexBytes = 64ull << 20;
constexpr std::uint64_t kMaxModelIndexBytes = 1ull << 20;

constexpr std::uint64_t align_up(std::uint64_t v) {
  return (v + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment;
}

struct CheckpointPrefix {
  std::string_view prefix;
  std::string_view component;
};
constexpr std::array<CheckpointPrefix, 5> kCheckpointPrefixes{{
    {"model.diffusion_model.", "unet"},
    {"first_stage_model.", "vae"},
    {"conditioner.embedders.0.", "text_encoder"},
    {"conditioner.embedders.1.", "text_encoder_2"},
    {"cond_stage_model.", "text_encoder"},
}};
// Components in the order a checkpoint's are listed; "other" last.
constexpr std::array<std::string_view, 5> kCheckpointComponents{"unet", "vae", "text_encoder", "text_encoder_2",
                                                                "other"};

std::optional<std::string_view> checkpoint_component(std::string_view tensor) {
  for (const auto& p : kCheckpointPrefixes)
    if (tensor.starts_with(p.prefix)) return p.component;
  return std::nullopt;
}

// A name that may be joined to a folder without leaving it.
bool plain_file_name(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find_first_of(std::string_view("/\\\0", 3)) ==
                                                               std::string_view::npos;
}

std::string scalar_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

struct OpenedFile {
  fs::path path;
  FileIdentity identity;
  SafetensorsHeader header;
};

Result<OpenedFile> open_safetensors(const fs::path& path) {
  auto file = ModelFile::open(path);
  if (!file) return fail(file.error());
  auto header = read_safetensors_header(*file);
  if (!header) return fail(header.error());
  return OpenedFile{path, file->identity(), std::move(*header)};
}

// Builds components tensor by tensor, keeping the placement rules of the
// header in one place.
class LayoutBuilder {
 public:
  explicit LayoutBuilder(ModelLayout::Kind kind) { layout_.kind = kind; }

  std::size_t add_file(const OpenedFile& f) {
    layout_.files.push_back(f.path);
    layout_.identities.push_back(f.identity);
    return layout_.files.size() - 1;
  }

  void begin_component(std::string name) {
    layout_.components.push_back(ComponentLayout{std::move(name), 0, {}, {}});
    cursor_ = 0;
    seen_.clear();
  }

  // The file's whole data section, up to its last tensor, at the next
  // aligned base: one run, offsets as in the file.
  Result<void> place_whole(std::size_t file, const SafetensorsHeader& h) {
    ComponentLayout& c = layout_.components.back();
    const std::uint64_t base = align_up(cursor_);
    for (const TensorInfo& t : h.tensors) {
      if (auto r = claim(t.name, file); !r) return r;
      c.tensors.push_back(placement(t, base + t.begin, file, h));
    }
    const std::uint64_t used = h.used_bytes();
    if (used > 0) c.runs.push_back(CopyRun{file, h.data_offset, base, used});
    cursor_ = base + used;
    return {};
  }

  // One tensor at the next aligned offset; its run joins the previous one
  // when both file and buffer continue it.
  Result<void> place_packed(std::size_t file, const SafetensorsHeader& h, const TensorInfo& t) {
    ComponentLayout& c = layout_.components.back();
    if (auto r = claim(t.name, file); !r) return r;
    const std::uint64_t offset = align_up(cursor_);
    c.tensors.push_back(placement(t, offset, file, h));
    cursor_ = offset + t.bytes();
    if (t.bytes() == 0) return {};
    const std::uint64_t file_offset = h.data_offset + t.begin;
    if (!c.runs.empty()) {
      CopyRun& last = c.runs.back();
      if (last.file == file && last.file_offset + last.bytes == file_offset &&
          last.buffer_offset + last.bytes == offset) {
        last.bytes += t.bytes();
        return {};
      }
    }
    c.runs.push_back(CopyRun{file, file_offset, offset, t.bytes()});
    return {};
  }

  Result<void> end_component(std::string_view where) {
    ComponentLayout& c = layout_.components.back();
    if (c.tensors.empty())
      return fail(ErrorCode::invalid_argument, "{}: component '{}' holds no tensors", where, c.name);
    c.bytes = align_up(cursor_);
    return {};
  }

  ModelLayout& layout() { return layout_; }
  ModelLayout take() { return std::move(layout_); }

 private:
  Result<void> claim(const std::string& name, std::size_t file) {
    const auto [it, fresh] = seen_.emplace(name, file);
    if (!fresh)
      return fail(ErrorCode::invalid_argument, "tensor {} of component '{}' is in both {} and {}",
                  quote_for_message(name), layout_.components.back().name, layout_.files[it->second].string(),
                  layout_.files[file].string());
    return {};
  }

  static TensorPlacement placement(const TensorInfo& t, std::uint64_t offset, std::size_t file,
                                   const SafetensorsHeader& h) {
    return TensorPlacement{t.name, t.dtype, t.shape, offset, t.bytes(), file, h.data_offset + t.begin};
  }

  ModelLayout layout_;
  std::uint64_t cursor_ = 0;  // end of the last tensor placed in the open component
  std::unordered_map<std::string, std::size_t> seen_;  // names in the open component → file
};

void add_metadata(Metadata& into, const Metadata& from) {
  for (const auto& kv : from) {
    const bool present =
        std::any_of(into.begin(), into.end(), [&](const auto& have) { return have.first == kv.first; });
    if (!present) into.push_back(kv);
  }
}

// A shard index's shards, read and checked against its weight_map, in name
// order; its "metadata" into `metadata`.
Result<std::vector<OpenedFile>> read_shards(const fs::path& index_path, Metadata& metadata) {
  const std::string where = index_path.string();
  auto file = ModelFile::open(index_path);
  if (!file) return fail(file.error());
  auto doc = read_strict_json(*file, kMaxIndexBytes);
  if (!doc) return fail(doc.error());
  if (!doc->is_object()) return fail(ErrorCode::invalid_argument, "{}: not a JSON object", where);
  if (doc->contains("metadata")) {
    const json& m = (*doc)["metadata"];
    if (!m.is_object()) return fail(ErrorCode::invalid_argument, "{}: \"metadata\" is not an object", where);
    for (const auto& [k, v] : m.items()) {
      if (v.is_structured())
        return fail(ErrorCode::invalid_argument, "{}: metadata {} is {}, not a scalar", where, quote_for_message(k),
                    v.type_name());
      metadata.emplace_back(k, scalar_text(v));
    }
  }
  if (!doc->contains("weight_map") || !(*doc)["weight_map"].is_object())
    return fail(ErrorCode::invalid_argument, "{}: no \"weight_map\" object", where);
  const json& map = (*doc)["weight_map"];
  if (map.empty()) return fail(ErrorCode::invalid_argument, "{}: weight_map lists no tensors", where);

  std::map<std::string, std::vector<std::string>> wanted;  // shard → tensors the map puts there
  for (const auto& [tensor, shard] : map.items()) {
    if (!shard.is_string())
      return fail(ErrorCode::invalid_argument, "{}: weight_map entry {} is {}, not a file name", where,
                  quote_for_message(tensor), shard.type_name());
    const auto& name = shard.get_ref<const std::string&>();
    if (!plain_file_name(name))
      return fail(ErrorCode::invalid_argument,
                  "{}: weight_map puts {} in {}, which is not a plain file name in the index's folder", where,
                  quote_for_message(tensor), quote_for_message(name));
    wanted[name].push_back(tensor);
  }

  std::vector<OpenedFile> shards;
  for (const auto& [name, tensors] : wanted) {
    auto shard = open_safetensors(index_path.parent_path() / name);
    if (!shard) {
      if (shard.error().code == ErrorCode::not_found)
        return fail(ErrorCode::not_found, "{}: weight_map puts {} in shard {}, which does not exist", where,
                    quote_for_message(tensors.front()), quote_for_message(name));
      return fail(shard.error());
    }
    std::set<std::string_view> held;
    for (const auto& t : shard->header.tensors) held.insert(t.name);
    for (const auto& t : tensors)
      if (!held.contains(t))
        return fail(ErrorCode::invalid_argument, "{}: weight_map puts {} in {}, which does not hold it", where,
                    quote_for_message(t), shard->path.string());
    shards.push_back(std::move(*shard));
  }
  return shards;
}

// One component from a file that is a safetensors file or a shard index.
Result<void> add_component(LayoutBuilder& b, std::string name, const fs::path& path, bool index) {
  b.begin_component(std::move(name));
  if (index) {
    Metadata ignored;  // a part's index metadata (total_size) says nothing the layout lacks
    auto shards = read_shards(path, ignored);
    if (!shards) return fail(shards.error());
    for (const auto& s : *shards)
      if (auto r = b.place_whole(b.add_file(s), s.header); !r) return r;
  } else {
    auto f = open_safetensors(path);
    if (!f) return fail(f.error());
    if (auto r = b.place_whole(b.add_file(*f), f->header); !r) return r;
  }
  return b.end_component(path.string());
}

// The weights file of a component folder by the rule in the header, or
// nullopt; `index` says whether it is a shard index.
struct WeightsFile {
  fs::path path;
  bool index = false;
};
Result<std::optional<WeightsFile>> find_weights(const fs::path& folder, std::string_view variant) {
  std::vector<std::string> variants;
  if (variant.empty()) {
    variants = {"", "fp16"};
  } else {
    variants = {std::string(variant), ""};
  }
  for (const auto& v : variants) {
    for (const std::string_view stem : {"diffusion_pytorch_model", "model"}) {
      const std::string single = v.empty() ? fmt::format("{}.safetensors", stem)
                                           : fmt::format("{}.{}.safetensors", stem, v);
      const std::string index = v.empty() ? fmt::format("{}.safetensors.index.json", stem)
                                          : fmt::format("{}.safetensors.index.{}.json", stem, v);
      for (const auto& [name, is_index] : {std::pair{single, false}, std::pair{index, true}}) {
        // Opening is the existence check (no stat-then-open race); the open
        // file is dropped and reopened by whoever reads it.
        auto f = ModelFile::open(folder / name);
        if (f) return std::optional<WeightsFile>(WeightsFile{folder / name, is_index});
        if (f.error().code != ErrorCode::not_found) return fail(f.error());
      }
    }
  }
  return std::optional<WeightsFile>();
}

bool holds_pickle_weights(const fs::path& folder) {
  std::error_code ec;
  for (const char* name : {"diffusion_pytorch_model.bin", "pytorch_model.bin", "diffusion_pytorch_model.fp16.bin",
                           "pytorch_model.fp16.bin"})
    if (fs::exists(folder / name, ec)) return true;
  return false;
}

Result<ModelLayout> read_diffusers(const fs::path& folder, std::string_view variant) {
  const fs::path index_path = folder / "model_index.json";
  const std::string where = index_path.string();
  auto file = ModelFile::open(index_path);
  if (!file) return fail(file.error());
  auto doc = read_strict_json(*file, kMaxModelIndexBytes);
  if (!doc) return fail(doc.error());
  if (!doc->is_object()) return fail(ErrorCode::invalid_argument, "{}: not a JSON object", where);

  LayoutBuilder b(ModelLayout::Kind::Diffusers);
  for (const auto& [key, value] : doc->items()) {
    // ["library", "Class"] is a part; [null, null] a part this pipeline
    // lacks; anything else (_class_name, force_zeros_for_empty_prompt, …)
    // is configuration, kept as metadata when it is a scalar.
    const bool part = !key.starts_with('_') && value.is_array() && value.size() == 2;
    if (!part) {
      if (!value.is_structured()) b.layout().metadata.emplace_back(key, scalar_text(value));
      continue;
    }
    if (value[0].is_null() || value[1].is_null()) continue;
    if (!value[0].is_string() || !value[1].is_string())
      return fail(ErrorCode::invalid_argument, "{}: part {} is not [\"library\", \"Class\"]", where,
                  quote_for_message(key));
    if (!plain_file_name(key))
      return fail(ErrorCode::invalid_argument, "{}: part {} is not a plain folder name", where,
                  quote_for_message(key));
    const fs::path sub = folder / key;
    std::error_code ec;
    const auto status = fs::status(sub, ec);
    if (!fs::exists(status))
      return fail(ErrorCode::not_found, "{}: lists part '{}', but {} does not exist", where, key, sub.string());
    if (!fs::is_directory(status))
      return fail(ErrorCode::invalid_argument, "{}: lists part '{}', but {} is not a folder", where, key,
                  sub.string());
    auto weights = find_weights(sub, variant);
    if (!weights) return fail(weights.error());
    if (!*weights) {
      if (holds_pickle_weights(sub))
        return fail(ErrorCode::invalid_argument,
                    "{}: part '{}' has only pickle weights (*.bin); memd reads safetensors only", where, key);
      continue;  // a scheduler, a tokenizer: configuration, no tensors
    }
    if (auto r = add_component(b, key, (*weights)->path, (*weights)->index); !r) return fail(r.error());
  }
  if (b.layout().components.empty())
    return fail(ErrorCode::invalid_argument, "{}: no part holds safetensors weights", where);
  return b.take();
}

// A single safetensors file: a checkpoint split into its components, or one
// component "model".
Result<ModelLayout> read_single(const fs::path& path) {
  auto f = open_safetensors(path);
  if (!f) return fail(f.error());
  const SafetensorsHeader& h = f->header;

  std::set<std::string_view> recognised;
  for (const auto& t : h.tensors)
    if (const auto c = checkpoint_component(t.name)) recognised.insert(*c);

  if (recognised.size() < 2) {
    LayoutBuilder b(ModelLayout::Kind::Safetensors);
    b.layout().metadata = h.metadata;
    b.begin_component("model");
    if (auto r = b.place_whole(b.add_file(*f), h); !r) return fail(r.error());
    if (auto r = b.end_component(path.string()); !r) return fail(r.error());
    return b.take();
  }

  LayoutBuilder b(ModelLayout::Kind::Checkpoint);
  b.layout().metadata = h.metadata;
  const std::size_t file = b.add_file(*f);
  for (const std::string_view component : kCheckpointComponents) {
    bool any = false;
    for (const auto& t : h.tensors) {
      if (checkpoint_component(t.name).value_or("other") != component) continue;
      if (!any) b.begin_component(std::string(component));
      any = true;
      if (auto r = b.place_packed(file, h, t); !r) return fail(r.error());
    }
    if (any)
      if (auto r = b.end_component(path.string()); !r) return fail(r.error());
  }
  return b.take();
}

// A shard index as one component "model" across its shards.
Result<ModelLayout> read_sharded(const fs::path& index_path) {
  LayoutBuilder b(ModelLayout::Kind::Sharded);
  auto shards = read_shards(index_path, b.layout().metadata);
  if (!shards) return fail(shards.error());
  b.begin_component("model");
  for (const auto& s : *shards) {
    add_metadata(b.layout().metadata, s.header.metadata);
    if (auto r = b.place_whole(b.add_file(s), s.header); !r) return fail(r.error());
  }
  if (auto r = b.end_component(index_path.string()); !r) return fail(r.error());
  return b.take();
}

}  // namespace

std::uint64_t ModelLayout::total_bytes() const noexcept {
  std::uint64_t total = 0;
  for (const auto& c : components) total += c.bytes;
  return total;
}

const ComponentLayout* ModelLayout::component(std::string_view name) const noexcept {
  for (const auto& c : components)
    if (c.name == name) return &c;
  return nullptr;
}

Result<void> ModelLayout::validate() const {
  if (identities.size() != files.size())
    return fail(ErrorCode::internal, "{} files but {} identities", files.size(), identities.size());
  for (const auto& c : components) {
    if (c.bytes % kTensorAlignment != 0)
      return fail(ErrorCode::internal, "component '{}': {} bytes, not a multiple of {}", c.name, c.bytes,
                  kTensorAlignment);
    std::uint64_t run_end = 0;
    for (std::size_t i = 0; i < c.runs.size(); ++i) {
      const CopyRun& r = c.runs[i];
      if (r.bytes == 0 || r.file >= files.size())
        return fail(ErrorCode::internal, "component '{}': run {} is empty or names file {}", c.name, i, r.file);
      if (r.narrow_to && (!convertible(Dtype::F32, *r.narrow_to) || r.bytes % 4 != 0))
        return fail(ErrorCode::internal, "component '{}': run {} narrows {} bytes to {}", c.name, i, r.bytes,
                    to_string(*r.narrow_to));
      if (r.buffer_offset < run_end || r.buffer_offset + r.buffer_bytes() > c.bytes)
        return fail(ErrorCode::internal, "component '{}': run {} [{}, +{}) overlaps another or leaves the buffer",
                    c.name, i, r.buffer_offset, r.buffer_bytes());
      if (r.file_offset + r.bytes > identities[r.file].size)
        return fail(ErrorCode::internal, "component '{}': run {} reads past the end of {}", c.name, i,
                    files[r.file].string());
      run_end = r.buffer_offset + r.buffer_bytes();
    }
    std::uint64_t tensor_end = 0;
    for (const auto& t : c.tensors) {
      // A zero-size tensor holds no byte, so it may sit inside another (the
      // header allows it); it must only lie inside the buffer.
      if (t.file >= files.size() || (t.bytes > 0 && t.offset < tensor_end) || t.offset + t.bytes > c.bytes)
        return fail(ErrorCode::internal, "component '{}': tensor '{}' at [{}, +{}) overlaps another or leaves the buffer",
                    c.name, t.name, t.offset, t.bytes);
      if (t.bytes == 0) continue;
      tensor_end = std::max(tensor_end, t.offset + t.bytes);
      // The run holding the tensor's first byte must hold all of it, from
      // the file bytes the tensor names.
      const auto it = std::upper_bound(c.runs.begin(), c.runs.end(), t.offset,
                                       [](std::uint64_t off, const CopyRun& r) { return off < r.buffer_offset; });
      if (it == c.runs.begin())
        return fail(ErrorCode::internal, "component '{}': tensor '{}' is in no run", c.name, t.name);
      const CopyRun& r = *std::prev(it);
      // A narrowed run reads two file bytes for each buffer byte.
      const std::uint64_t scale = r.narrow_to ? 2 : 1;
      if (r.file != t.file || t.offset + t.bytes > r.buffer_offset + r.buffer_bytes() ||
          r.file_offset + (t.offset - r.buffer_offset) * scale != t.file_offset ||
          r.narrow_to.has_value() != t.converted_from.has_value() || (r.narrow_to && *r.narrow_to != t.dtype))
        return fail(ErrorCode::internal, "component '{}': tensor '{}' is not filled from its file bytes", c.name,
                    t.name);
    }
  }
  return {};
}

std::string_view to_string(ModelLayout::Kind kind) noexcept {
  switch (kind) {
    case ModelLayout::Kind::Safetensors: return "safetensors";
    case ModelLayout::Kind::Sharded: return "sharded";
    case ModelLayout::Kind::Diffusers: return "diffusers";
    case ModelLayout::Kind::Checkpoint: return "checkpoint";
  }
  return "?";
}

Result<ModelLayout> read_model_layout(const std::filesystem::path& path, std::string_view variant) {
  if (!variant.empty() &&
      !std::all_of(variant.begin(), variant.end(),
                   [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-'; }))
    return fail(ErrorCode::invalid_argument, "variant {} is not a plain name (letters, digits, '_', '-')",
                quote_for_message(variant));
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) return fail(ErrorCode::not_found, "no model at {}", path.string());

  if (fs::is_directory(status)) {
    auto index = ModelFile::open(path / "model_index.json");
    if (index) return read_diffusers(path, variant);
    if (index.error().code != ErrorCode::not_found) return fail(index.error());
    // Not a pipeline: a folder holding one model's weights.
    auto weights = find_weights(path, variant);
    if (!weights) return fail(weights.error());
    if (!*weights)
      return fail(ErrorCode::invalid_argument,
                  "{}: a folder with neither model_index.json nor safetensors weights (diffusion_pytorch_model or "
                  "model, .safetensors or .safetensors.index.json)",
                  path.string());
    return (*weights)->index ? read_sharded((*weights)->path) : read_single((*weights)->path);
  }
  const std::string name = path.filename().string();
  if (name == "model_index.json") return read_diffusers(path.parent_path(), variant);
  if (name.ends_with(".json")) return read_sharded(path);
  return read_single(path);
}

}  // namespace memd
