// models/model_name.cpp — see model_name.hpp.
#include "models/model_name.hpp"

namespace memd {

Result<void> check_model_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return fail(ErrorCode::invalid_argument, "a model name is 1 to 128 characters");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == ':';
    if (!ok) return fail(ErrorCode::invalid_argument, "model name: letters, digits, '.', '_', '-' and ':' only");
  }
  return {};
}

}  // namespace memd
