// libFuzzer target: arbitrary bytes as one request line of the Unix socket
// door (server/socket/socket_request.hpp), and a hello's params.
//
// Whatever the line: parsing never throws; a request has an action name of
// a-z, 0-9 and _ and object params; a refusal carries a code from the closed
// list; the answer the door would write (the refusal with the echoed id, or a
// hello's resolution) is one line of valid JSON.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "protocol/error_mapping.hpp"
#include "protocol/json_parse.hpp"
#include "server/socket/socket_hello.hpp"
#include "server/socket/socket_request.hpp"

namespace {

void check_line(const std::string& text) {
  if (text.find('\n') != std::string::npos) std::abort();
  auto parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const memd::CallerResolver resolver("", {{"fuzz-token", "fuzz", false, 1}});
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  nlohmann::json id = nullptr;
  auto request = memd::parse_socket_request(line, &id);
  if (!request) {
    if (!memd::parse_error_code(memd::to_string(request.error().code))) std::abort();
    check_line(memd::to_wire_text({{"id", id}, {"ok", false}, {"error", memd::error_object(request.error())}}));
    return 0;
  }
  if (request->action.empty() || request->action.size() > memd::kMaxActionName) std::abort();
  for (char c : request->action)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) std::abort();
  if (!request->params.is_object()) std::abort();
  if (request->id != id) std::abort();
  // Every line is tried as a hello's params too.
  if (auto hello = memd::parse_socket_hello(request->params)) {
    auto caller = memd::resolve_socket_hello(resolver, *hello);
    nlohmann::json answer = caller ? nlohmann::json{{"owner", caller->owner}, {"admin", caller->admin}}
                                   : memd::error_object(caller.error());
    check_line(memd::to_wire_text({{"id", request->id}, {"ok", static_cast<bool>(caller)}, {"result", answer}}));
  }
  return 0;
}
