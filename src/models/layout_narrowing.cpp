// A layout narrowed to F16 / BF16; see layout_narrowing.hpp.
#include "models/layout_narrowing.hpp"

#include <algorithm>

#include "models/dtype_convert.hpp"

namespace memd {
namespace {

std::uint64_t align_up(std::uint64_t v) { return (v + kTensorAlignment - 1) / kTensorAlignment * kTensorAlignment; }

ComponentLayout narrow_component(const ComponentLayout& c, Dtype to) {
  ComponentLayout out;
  out.name = c.name;
  std::uint64_t cursor = 0;
  for (const auto& t : c.tensors) {
    TensorPlacement n = t;
    const bool narrow = t.dtype == Dtype::F32;
    if (narrow) {
      n.dtype = to;
      n.bytes = t.bytes / 2;
      n.converted_from = Dtype::F32;
    }
    n.offset = align_up(cursor);
    cursor = n.offset + n.bytes;
    out.tensors.push_back(n);
    if (t.bytes == 0) continue;  // holds no byte: no run
    CopyRun r{t.file, t.file_offset, n.offset, t.bytes, narrow ? std::optional<Dtype>(to) : std::nullopt};
    if (!out.runs.empty()) {
      CopyRun& last = out.runs.back();
      if (last.file == r.file && last.narrow_to == r.narrow_to && last.file_offset + last.bytes == r.file_offset &&
          last.buffer_offset + last.buffer_bytes() == r.buffer_offset) {
        last.bytes += r.bytes;
        continue;
      }
    }
    out.runs.push_back(r);
  }
  out.bytes = align_up(cursor);
  return out;
}

}  // namespace

Result<ModelLayout> narrow_layout(const ModelLayout& layout, Dtype to) {
  if (!convertible(Dtype::F32, to))
    return fail(ErrorCode::invalid_argument, "a load narrows F32 to F16 or BF16, not {}", to_string(to));
  ModelLayout out = layout;
  for (auto& c : out.components)
    if (std::any_of(c.tensors.begin(), c.tensors.end(), [](const auto& t) { return t.dtype == Dtype::F32; }))
      c = narrow_component(c, to);
  return out;
}

}  // namespace memd
