// protocol/actions/model_actions.hpp — memory_model_load, memory_model_status,
// memory_model_unload, memory_model_estimate, memory_model_pin,
// memory_model_optimize (issue 15, items 2 and 5): parameters, handlers,
// docs examples.
//
// Thread safety: the table is built once; handlers are thread-safe.
#pragma once

#include <vector>

#include "protocol/action.hpp"

namespace memd {

void append_model_actions(std::vector<Action>& table);

}  // namespace memd
