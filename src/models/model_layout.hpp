// models/model_layout.hpp — what a model on disk is: its files, and the
// components a loader makes of them.
//
// A model is loaded as one buffer per component (DESIGN.md "Models": sharing,
// eviction and export work on components), so this says, per component, how
// big its buffer is, where each tensor lies in it, and which byte ranges of
// which files fill it (copy runs: a loader copies runs, not tensors).
//
// What a path may be (the caller has confined it; nothing here resolves
// symlinks or roots, and every file is opened through ModelFile::open):
//   - a safetensors file (any name not ending ".json") → Kind::Safetensors,
//     one component "model"; unless its tensors carry the prefixes of a
//     single-file Stable Diffusion checkpoint (below) → Kind::Checkpoint;
//   - a shard index, *.safetensors.index.json (any other name ending
//     ".json"): its weight_map maps tensor → shard; shards are plain file
//     names in the index's folder (no '/', no "..") → Kind::Sharded, one
//     component "model" across the shards. Every tensor the map names must
//     be in the shard it names; a shard's tensors the map leaves out are
//     loaded all the same (a shard is read whole);
//   - a diffusers pipeline folder (holding model_index.json), or that
//     model_index.json itself → Kind::Diffusers, one component per entry of
//     model_index.json whose value is ["library", "Class"] and whose
//     subfolder holds safetensors weights, named after the subfolder (unet,
//     vae, text_encoder, text_encoder_2, …). Entries of [null, null] are
//     absent parts; a listed folder that does not exist is not_found; a
//     folder without weights (scheduler, tokenizer) is skipped, unless it
//     holds only pickle weights (*.bin), which memd does not read: refused;
//   - any other folder is read as one diffusers component folder →
//     Kind::Safetensors or Kind::Sharded, component "model".
//
// Which file of a component folder holds its weights: the first that exists
// of diffusion_pytorch_model.safetensors, its shard index
// diffusion_pytorch_model.safetensors.index.json, model.safetensors,
// model.safetensors.index.json. With a `variant` ("fp16") the variant's names
// (diffusion_pytorch_model.fp16.safetensors, ….safetensors.index.fp16.json)
// are tried first and the plain ones after; without one the plain names come
// first and the "fp16" variant after, so a folder published in fp16 only
// still loads.
//
// Single-file checkpoints (the A1111 / ComfyUI layout): tensor-name prefixes
// name the components —
//   model.diffusion_model.     → unet
//   first_stage_model.         → vae
//   conditioner.embedders.0.   → text_encoder     (SDXL)
//   conditioner.embedders.1.   → text_encoder_2   (SDXL)
//   cond_stage_model.          → text_encoder     (SD 1.x / 2.x)
// A file is a checkpoint when its tensors fall under at least two of those
// components; a file of one (a bare UNet) is a plain model. In a checkpoint,
// tensors under no prefix (SD 1.x's alphas_cumprod, model_ema.*, …) make a
// component "other" rather than a refusal: such files are common and those
// tensors are real bytes of the model. Tensor names are kept whole, prefix
// included, so each can be found again in its file.
//
// Placement in a component's buffer (the alignment rule, kTensorAlignment =
// 256 bytes, enough for any dtype and for CUDA's own allocation alignment):
//   - a file all of whose tensors belong to the component (a plain file, each
//     shard, each diffusers part) is placed whole: its data section from byte
//     0 to the end of its last tensor goes to a 256-aligned base, tensors keep
//     the file's relative offsets (and so the alignment the writer gave
//     them), and the file is ONE copy run (holes between tensors, if any, are
//     copied along);
//   - a file split between components (a checkpoint) has each component's
//     tensors packed in file order, each at the next 256-aligned offset;
//     runs that are contiguous in both file and buffer are merged.
// Files follow each other in the order given (shards by name), each base
// 256-aligned. A component's bytes is the end of its last tensor rounded up
// to 256.
//
// Tensor names are unique within a component (a name in two shards, or twice
// in one checkpoint component, is refused); two diffusers components may
// hold equal names (text_encoder and text_encoder_2 both do).
//
// Errors: invalid_argument for anything malformed, naming the file and what
// is wrong; not_found for a missing file or folder the model names.
//
// Thread safety: read_model_layout only reads files; the result is a value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "memd/error.hpp"
#include "models/dtype.hpp"
#include "models/model_file.hpp"

namespace memd {

inline constexpr std::uint64_t kTensorAlignment = 256;

struct TensorPlacement {
  std::string name;
  Dtype dtype = Dtype::U8;        // in the buffer
  std::vector<std::uint64_t> shape;
  std::uint64_t offset = 0;       // in the component buffer
  std::uint64_t bytes = 0;        // in the buffer
  std::size_t file = 0;           // index into ModelLayout::files
  std::uint64_t file_offset = 0;  // absolute, in that file
  // The file's dtype when the load narrows it (models/layout_narrowing.hpp:
  // F32 held as F16 or BF16, the file's bytes twice `bytes`); none: as read.
  std::optional<Dtype> converted_from;
};

// `bytes` from `file` at `file_offset` go to `buffer_offset` in the
// component; with `narrow_to`, those bytes are F32 values that land as
// F16 or BF16 (buffer_bytes(): half of them).
struct CopyRun {
  std::size_t file = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t buffer_offset = 0;
  std::uint64_t bytes = 0;  // read from the file
  std::optional<Dtype> narrow_to;
  std::uint64_t buffer_bytes() const noexcept { return narrow_to ? bytes / 2 : bytes; }
  friend bool operator==(const CopyRun&, const CopyRun&) = default;
};

struct ComponentLayout {
  std::string name;
  std::uint64_t bytes = 0;  // buffer size: a multiple of kTensorAlignment
  std::vector<TensorPlacement> tensors;  // in buffer order
  std::vector<CopyRun> runs;             // in buffer order, none empty
};

struct ModelLayout {
  enum class Kind : std::uint8_t { Safetensors, Sharded, Diffusers, Checkpoint };
  Kind kind = Kind::Safetensors;
  std::vector<std::filesystem::path> files;
  // Parallel to files: each as seen when its header was read, for a loader
  // (or a restore from the Disk tier) to check it still reads the same file.
  std::vector<FileIdentity> identities;
  std::vector<ComponentLayout> components;
  // __metadata__ of a single file; an index's "metadata" (then its shards'
  // __metadata__ keys it lacks); model_index.json's scalar entries. Values
  // that are not strings in the file are their JSON text.
  std::vector<std::pair<std::string, std::string>> metadata;

  std::uint64_t total_bytes() const noexcept;
  const ComponentLayout* component(std::string_view name) const noexcept;
  // Checks the invariants above (tests, debug asserts): every tensor inside
  // its buffer and covered by exactly the run bytes its file offset says, no
  // two tensors or runs sharing a buffer byte, sizes aligned, file indices in
  // range. internal with what is broken.
  Result<void> validate() const;
};

std::string_view to_string(ModelLayout::Kind kind) noexcept;

// The layout of the model at `path` (see above). `variant` picks diffusers
// weight files such as *.fp16.safetensors ("" = plain first, then fp16).
Result<ModelLayout> read_model_layout(const std::filesystem::path& path, std::string_view variant = {});

}  // namespace memd
