// protocol/openapi.hpp — the OpenAPI 3.0 document of the REST API.
//
// Generated from the action table (served at GET /api/openapi.json), so the
// published contract is the one the server routes: a route cannot exist
// without its entry here, nor the other way round.
//
// Thread safety: pure function.
#pragma once

#include <nlohmann/json.hpp>

namespace memd {

nlohmann::json openapi_document();

}  // namespace memd
