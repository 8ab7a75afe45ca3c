// protocol/actions/history_actions.hpp — the allocation history's actions:
// memory_history (recent allocator events) and memory_history_snapshot (what
// a device looked like when a request ran out of memory), and their JSON.
//
// Thread safety: the table is built once (action_table.cpp); the encoders
// are pure functions.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "monitor/allocation_history.hpp"
#include "monitor/oom_snapshots.hpp"
#include "protocol/action.hpp"

namespace memd {

inline constexpr std::uint64_t kMaxHistoryLimit = 4096;
inline constexpr std::uint64_t kDefaultHistoryLimit = 100;

void append_history_actions(std::vector<Action>& table);

nlohmann::json to_json(const HistoryEntry& entry);
nlohmann::json to_json(const OomSnapshot& snapshot);

}  // namespace memd
