// protocol/actions/transfer_actions.hpp — the transfer domain's actions:
// memory_transfer (one, or a batch), memory_move, memory_transfer_status,
// memory_transfer_cancel and memory_copy, with their JSON encoding.
//
// Thread safety: the table is built once (action_table.cpp).
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/action.hpp"
#include "transfer/transfer_json.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {

void append_transfer_actions(std::vector<Action>& table);


}  // namespace memd
