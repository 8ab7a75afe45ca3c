// A socket request line → id, action, params.
#include "server/socket/socket_request.hpp"

#include "protocol/json_parse.hpp"
#include "server/socket/socket_options.hpp"

namespace memd {
namespace {

bool action_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxActionName) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

}  // namespace

Result<SocketRequest> parse_socket_request(std::string_view line, nlohmann::json* id) {
  if (line.size() > kMaxSocketLine)
    return fail(ErrorCode::payload_too_large, "request line of {} bytes; at most {}", line.size(), kMaxSocketLine);
  auto json = parse_request_json(line);
  if (!json) return fail(json.error());
  if (!json->is_object()) return fail(ErrorCode::invalid_argument, "a request must be a JSON object");

  SocketRequest request;
  if (auto it = json->find("id"); it != json->end()) request.id = std::move(*it);
  if (id != nullptr) *id = request.id;

  auto action = json->find("action");
  if (action == json->end() || action->is_null()) return fail(ErrorCode::invalid_argument, "missing 'action'");
  if (!action->is_string()) return fail(ErrorCode::invalid_argument, "'action' must be a string");
  if (!action_name(action->get_ref<const std::string&>()))
    return fail(ErrorCode::invalid_argument,
                "'action' must be an action name: 1..{} bytes of lower-case letters, digits and _",
                kMaxActionName);
  request.action = std::move(action->get_ref<std::string&>());

  if (auto p = json->find("params"); p != json->end() && !p->is_null()) {
    if (!p->is_object()) return fail(ErrorCode::invalid_argument, "'params' must be a JSON object");
    request.params = std::move(*p);
  }
  return request;
}

}  // namespace memd
