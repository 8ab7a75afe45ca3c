// Error → wire object and HTTP status.
#include "protocol/error_mapping.hpp"

namespace memd {

nlohmann::json error_object(const Error& error) {
  nlohmann::json object = {{"code", std::string(to_string(error.code))}, {"message", error.message}};
  if (error.snapshot_id) object["snapshotId"] = *error.snapshot_id;
  return object;
}

nlohmann::json error_body(const Error& error) { return {{"error", error_object(error)}}; }

int error_status(const Error& error) noexcept { return http_status(error.code); }

}  // namespace memd
