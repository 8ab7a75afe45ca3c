// HTTP calls to memd serve, with errors turned into printable messages.
#include "api_client.hpp"

#include <httplib.h>

#include "protocol/json_parse.hpp"

namespace memd::cli {

std::string url_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == ':') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Result<nlohmann::json> ApiClient::send(const std::string& method, const std::string& target,
                                       const nlohmann::json* body) {
  try {
    httplib::Client client(options_.url);
    if (!client.is_valid())
      return fail(ErrorCode::invalid_argument, "invalid daemon URL '{}'", options_.url);
    client.set_connection_timeout(3, 0);
    client.set_read_timeout(60, 0);
    httplib::Headers headers;
    if (!options_.token.empty()) headers.emplace("Authorization", "Bearer " + options_.token);
    if (!options_.owner.empty()) headers.emplace("X-Memd-Owner", options_.owner);
    if (options_.admin) headers.emplace("X-Memd-Admin", "true");
    if (!options_.session.empty()) headers.emplace("X-Memd-Session", options_.session);
    const std::string payload = body ? to_wire_text(*body) : std::string();
    httplib::Result res = [&] {
      if (method == "GET") return client.Get(target, headers);
      if (method == "DELETE") return client.Delete(target, headers);
      if (method == "POST") return client.Post(target, headers, payload, "application/json");
      return client.Put(target, headers, payload, "application/json");
    }();
    if (!res)
      return fail(ErrorCode::unavailable, "cannot reach memd at {}: {} (is `memd serve` running?)",
                  options_.url, httplib::to_string(res.error()));
    auto json = parse_request_json(res->body);
    if (res->status >= 200 && res->status < 300) {
      if (!json) return fail(ErrorCode::internal, "memd answered something that is not JSON");
      return std::move(*json);
    }
    if (json && json->is_object() && json->contains("error") && (*json)["error"].is_object()) {
      const auto& e = (*json)["error"];
      const auto code = parse_error_code(e.value("code", "internal")).value_or(ErrorCode::internal);
      Error error{code, e.value("message", "unknown error")};
      if (auto id = e.find("snapshotId"); id != e.end() && id->is_string()) error.snapshot_id = id->get<std::string>();
      return fail(std::move(error));
    }
    return fail(ErrorCode::internal, "memd answered HTTP {}", res->status);
  } catch (const std::exception& e) {
    return fail(ErrorCode::internal, "request failed: {}", e.what());
  }
}

Result<nlohmann::json> ApiClient::get(const std::string& target) { return send("GET", target, nullptr); }
Result<nlohmann::json> ApiClient::del(const std::string& target) { return send("DELETE", target, nullptr); }
Result<nlohmann::json> ApiClient::post(const std::string& target, const nlohmann::json& body) {
  return send("POST", target, &body);
}
Result<nlohmann::json> ApiClient::put(const std::string& target, const nlohmann::json& body) {
  return send("PUT", target, &body);
}

}  // namespace memd::cli
