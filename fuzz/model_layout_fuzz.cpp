// libFuzzer target: the model readers on disk (issue 17, item 1) — a
// diffusers model_index.json, a shard index (*.safetensors.index.json) and
// the safetensors files they name, all from the input, read by
// read_model_layout as `memory_model_load` would.
//
// The input is up to six files separated by "\n#memd#\n"; the first byte
// picks what is read (the pipeline folder, its model_index.json, the shard
// index, or one safetensors file), the rest is
//   model_index.json
//   unet/diffusion_pytorch_model.safetensors.index.json
//   unet/a.safetensors
//   unet/b.safetensors
//   vae/diffusion_pytorch_model.safetensors
//   text_encoder/model.safetensors
// (an empty part: that file does not exist). The files live in a folder of
// this process's own under the temporary directory, rewritten every run.
//
// Invariants: nothing crashes or reads outside the folder; a refusal is
// invalid_argument or not_found with a message; an accepted layout passes
// ModelLayout::validate(), names only files inside the folder, and every
// component's buffer is aligned.
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#include "models/model_layout.hpp"

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSeparator = "\n#memd#\n";
constexpr std::array<std::string_view, 6> kFiles = {
    "model_index.json",
    "unet/diffusion_pytorch_model.safetensors.index.json",
    "unet/a.safetensors",
    "unet/b.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
};

const fs::path& folder() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("memd-layout-fuzz-" + std::to_string(::getpid()));
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(fs::temp_directory_path() / ("memd-layout-fuzz-" + std::to_string(::getpid())), ec);
    });
    return d;
  }();
  return dir;
}

void write_file(const fs::path& path, std::string_view bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

bool inside(const fs::path& root, const fs::path& p) {
  const auto rel = p.lexically_normal().lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const fs::path& root = folder();
  std::error_code ec;
  fs::remove_all(root, ec);
  fs::create_directories(root);

  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (std::size_t i = 0; i < kFiles.size() && !rest.empty(); ++i) {
    const std::size_t cut = rest.find(kSeparator);
    const std::string_view part = rest.substr(0, cut);
    if (!part.empty()) write_file(root / kFiles[i], part);
    rest = cut == std::string_view::npos ? std::string_view{} : rest.substr(cut + kSeparator.size());
  }

  fs::path target;
  switch (data[0] % 4) {
    case 0: target = root; break;
    case 1: target = root / kFiles[0]; break;
    case 2: target = root / kFiles[1]; break;
    default: target = root / kFiles[2]; break;
  }
  const std::string_view variant = (data[0] & 0x80) ? "fp16" : "";

  auto layout = memd::read_model_layout(target, variant);
  if (!layout) {
    const auto code = layout.error().code;
    if ((code != memd::ErrorCode::invalid_argument && code != memd::ErrorCode::not_found) ||
        layout.error().message.empty())
      std::abort();
    return 0;
  }
  if (!layout->validate()) std::abort();
  if (layout->files.size() != layout->identities.size() || layout->components.empty()) std::abort();
  for (const auto& f : layout->files)
    if (!inside(root, f)) std::abort();
  for (const auto& c : layout->components)
    if (c.name.empty() || c.bytes % memd::kTensorAlignment != 0 || c.runs.empty() != c.tensors.empty()) std::abort();
  return 0;
}
