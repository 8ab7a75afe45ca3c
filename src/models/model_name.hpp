// models/model_name.hpp — the one rule for model names: 1 to 128 of ASCII
// letters, digits, '.', '_', '-' and ':' (they appear in URLs, allocation
// names and events unescaped).
#pragma once

#include <string_view>

#include "memd/error.hpp"

namespace memd {

// The same rule as an ECMA-262 pattern, published in OpenAPI.
inline constexpr std::string_view kModelNamePattern = "^[A-Za-z0-9._:-]{1,128}$";

Result<void> check_model_name(std::string_view name);

}  // namespace memd
