// protocol/actions/export_actions.hpp — the sharing domain's actions:
// memory_export and memory_export_release (the import itself is the socket
// door's: server/socket), with their JSON.
//
// Thread safety: the table is built once (action_table.cpp).
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/action.hpp"
#include "service/export_table.hpp"

namespace memd {

void append_export_actions(std::vector<Action>& table);

nlohmann::json to_json(const ExportRecord& record);

}  // namespace memd
