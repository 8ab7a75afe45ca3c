// protocol/actions/model_export_actions.hpp — memory_model_export and
// memory_model_export_release (issue 15, item 8): a loaded model's weights
// for other processes, component by component, with each component's tensor
// table so a worker can build tensors over what it maps without a copy.
//
// Thread safety: the table is built once; handlers are thread-safe.
#pragma once

#include <vector>

#include "protocol/action.hpp"

namespace memd {

void append_model_export_actions(std::vector<Action>& table);

}  // namespace memd
