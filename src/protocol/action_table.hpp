// protocol/action_table.hpp — the one table of operations both doors serve.
//
// dispatch() is the only way a transport runs an operation: it checks that
// params is an object, validates every declared parameter's type and
// presence, runs the handler, and turns any exception (json, bad_alloc) into
// an error value so nothing escapes to the transport.
//
// Thread safety: the table is immutable after first use (a function-local
// static); dispatch is thread-safe.
#pragma once

#include <span>
#include <string_view>

#include <nlohmann/json.hpp>

#include "protocol/action.hpp"

namespace memd {

std::span<const Action> action_table();
// nullptr for an unknown name.
const Action* find_action(std::string_view name);

Result<Outcome> dispatch(MemoryService& service, const Action& action,
                         const nlohmann::json& params, const CallContext& context);

// Checks params against the action's ParamSpecs (types and required keys).
Result<void> validate_params(const Action& action, const nlohmann::json& params,
                             const CallContext& context);

// Placeholder names of a route template, in order: {"allocationId"}.
std::vector<std::string> path_parameters(std::string_view path_template);

}  // namespace memd
