// protocol/api_doc.hpp — docs/api.md, generated from the action table.
//
// `memd api-doc` prints this text and docs/api.md is its output; a test
// compares the two, so the documentation cannot drift from what is served.
//
// Thread safety: pure functions.
#pragma once

#include <string>

#include "protocol/action.hpp"

namespace memd {

std::string api_markdown();
// "GET /api/memory/allocations/a1b2…/data?offset=0&length=5": a route with
// the action's example params filled in (path placeholders and query).
std::string example_http_target(const Action& action, const Route& route);

}  // namespace memd
