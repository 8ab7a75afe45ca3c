// protocol/error_mapping.hpp — the one mapping from memd::Error to the wire.
//
// stdio carries {"code","message"[,"snapshotId"]} inside its response line;
// REST carries {"error": {...the same}} with memd::http_status(code) as the
// status.
// Codes come from the closed list in memd/error.hpp and nowhere else.
//
// Thread safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>

#include "memd/error.hpp"

namespace memd {

// {"code": "not_found", "message": "..."}, plus "snapshotId" when the error
// names an out-of-memory snapshot.
nlohmann::json error_object(const Error& error);
// {"error": {"code": ..., "message": ...}} — a REST error body.
nlohmann::json error_body(const Error& error);
// The HTTP status of an error (memd::http_status).
int error_status(const Error& error) noexcept;

}  // namespace memd
