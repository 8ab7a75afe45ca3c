// models/layout_narrowing.hpp — a model's layout as it lands when the load
// asks for a narrower dtype (issue 15, item 2: `dtype` F16 or BF16).
//
// Every F32 tensor of the model lands as the dtype asked (half its bytes,
// converted by the loader with models/dtype_convert.hpp's rounding); tensors
// of any other dtype land as they are (an I64 position table or an F16 norm
// keeps its bytes). A component with no F32 tensor keeps its layout
// unchanged, so it still shares with the same component loaded without
// conversion. A component with one is re-laid: its tensors in their buffer
// order, each at the next kTensorAlignment offset, one copy run per tensor
// (runs merged where file and buffer are both contiguous and the conversion
// is the same), so status, estimates, sharing and the export's tensor table
// all see the narrowed geometry.
//
// Thread safety: a pure function on values.
#pragma once

#include "memd/error.hpp"
#include "models/model_layout.hpp"

namespace memd {

// invalid_argument when `to` is not F16 or BF16.
Result<ModelLayout> narrow_layout(const ModelLayout& layout, Dtype to);

}  // namespace memd
