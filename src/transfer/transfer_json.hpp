// transfer/transfer_json.hpp — a transfer's and a batch's report as the wire
// shows them (camelCase JSON). Here rather than in src/protocol because the
// event bus carries the same object in transfer_completed / transfer_failed
// events, published from below the protocol layer: one encoding for both.
//
// Thread safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include "transfer/transfer_report.hpp"

namespace memd {

nlohmann::json to_json(const TransferReport& report);
nlohmann::json to_json(const BatchReport& report);

}  // namespace memd
