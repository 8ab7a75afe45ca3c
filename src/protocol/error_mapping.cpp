// Error → wire object and HTTP status.
#include "protocol/error_mapping.hpp"

namespace memd {

nlohmann::json error_object(const Error& error) {
  return {{"code", std::string(to_string(error.code))}, {"message", error.message}};
}

nlohmann::json error_body(const Error& error) { return {{"error", error_object(error)}}; }

int error_status(const Error& error) noexcept { return http_status(error.code); }

}  // namespace memd
