// transfer/defrag_json.hpp — a defragmentation's report as the wire shows it.
// Here rather than in src/protocol because defragment_finished events carry
// the same object memory_defragment answers with: one encoding for both.
//
// Thread safety: pure function.
#pragma once

#include <nlohmann/json.hpp>

#include "transfer/defrag_report.hpp"

namespace memd {

nlohmann::json to_json(const DefragReport& report);

}  // namespace memd
