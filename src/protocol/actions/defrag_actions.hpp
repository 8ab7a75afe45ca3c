// protocol/actions/defrag_actions.hpp — memory_defragment (issue 14, item 7):
// its parameters, handler, JSON and docs example.
//
// Thread safety: the table is built once; handlers are thread-safe.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "protocol/action.hpp"
#include "transfer/defrag_json.hpp"
#include "transfer/defrag_report.hpp"

namespace memd {

void append_defrag_actions(std::vector<Action>& table);


}  // namespace memd
