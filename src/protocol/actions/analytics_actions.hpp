// protocol/actions/analytics_actions.hpp — memory_analytics (memory over a
// window, failures, top owners) and memory_optimization (ranked
// recommendations, each with the request that carries it out).
//
// Thread safety: the table is built once (action_table.cpp).
#pragma once

#include <vector>

#include "protocol/action.hpp"

namespace memd {

void append_analytics_actions(std::vector<Action>& table);

}  // namespace memd
