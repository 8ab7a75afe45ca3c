// protocol/actions/history_actions.hpp — the allocation history's actions:
// memory_history (recent allocator events), memory_history_snapshot (what
// a device looked like when a request ran out of memory) and memory_blocks
// (the same block map, live), and their JSON.
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
// memory_blocks: a device can hold millions of blocks; one answer lists at
// most this many (each is ~250 bytes of JSON with its allocation).
inline constexpr std::uint64_t kMaxBlocksLimit = 100000;
inline constexpr std::uint64_t kDefaultBlocksLimit = 10000;

void append_history_actions(std::vector<Action>& table);

nlohmann::json to_json(const HistoryEntry& entry);
nlohmann::json to_json(const OomSnapshot& snapshot);

}  // namespace memd
