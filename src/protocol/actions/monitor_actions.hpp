// protocol/actions/monitor_actions.hpp — the monitoring domain's actions:
// memory_pressure (and, as they land, events, analytics, recommendations).
//
// Thread safety: the table is built once (action_table.cpp).
#pragma once

#include <vector>

#include "protocol/action.hpp"

namespace memd {

void append_monitor_actions(std::vector<Action>& table);

}  // namespace memd
