// protocol/api_doc.hpp — docs/api.md, generated from the action table.
//
// `memd api-doc` prints this text and docs/api.md is its output; a test
// compares the two, so the documentation cannot drift from what is served.
//
// Thread safety: pure functions.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "protocol/action.hpp"

namespace memd {

std::string api_markdown();
// The action table as data, for generated clients (`memd api-doc --json`;
// clients/python/memd/_actions.py is generated from it and a test compares
// the two): {"errors": [{"code", "httpStatus"}], "actions": [{"name",
// "summary", "routes": [{"method", "path", "status", "body", "readOnly"}],
// "params": [{"name", "kind", "required", "stdioOnly", "nullable",
// "alternative", "description"}]}]}. body is json, binaryUpload,
// binaryDownload or eventStream.
nlohmann::json api_json();
// "GET /api/memory/allocations/a1b2…/data?offset=0&length=5": a route with
// the action's example params filled in (path placeholders and query).
std::string example_http_target(const Action& action, const Route& route);

}  // namespace memd
