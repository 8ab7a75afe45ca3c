// tools/memd/history_view.hpp — `memd history`'s human output.
//
// Pure functions from the wire's JSON (memory_history, memory_history_snapshot)
// to text, so tests check what a person reads without a daemon. A snapshot is
// printed to answer "why did it fail?": the request, what was free against
// it, who held the device, the last entries of its history and a compact
// block map (per segment: size, live, free, largest hole).
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

namespace memd::cli {

// memory_history's answer as a table, oldest first.
std::string render_history(const nlohmann::json& answer);
// memory_history_snapshot's answer; `last_entries` of its history are shown.
std::string render_snapshot(const nlohmann::json& snapshot, std::size_t last_entries);

}  // namespace memd::cli
