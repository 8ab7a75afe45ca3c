// protocol/action_helpers.hpp — what every action handler file uses.
//
// Thread safety: macros and a pure function.
#pragma once

#include <utility>

#include <nlohmann/json.hpp>

#include "protocol/action.hpp"

namespace memd {

#define MEMD_CONCAT_INNER(a, b) a##b
#define MEMD_CONCAT(a, b) MEMD_CONCAT_INNER(a, b)
// Unwraps a Result into lhs or returns its error from the enclosing function.
#define MEMD_ASSIGN_OR_RETURN(lhs, expr)                                       \
  auto MEMD_CONCAT(memd_result_, __LINE__) = (expr);                           \
  if (!MEMD_CONCAT(memd_result_, __LINE__))                                    \
    return fail(std::move(MEMD_CONCAT(memd_result_, __LINE__)).error());       \
  lhs = std::move(*MEMD_CONCAT(memd_result_, __LINE__))

inline Outcome ok(nlohmann::json result) { return Outcome{std::move(result), std::nullopt}; }

}  // namespace memd
