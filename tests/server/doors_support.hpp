// tests/server/doors_support.hpp — helpers shared by the two-door tests:
// normalising responses (GUIDs, times, durations, addresses, the host's own RAM) so a
// golden file can pin them, and sending an action through REST the way the
// action table routes it.
//
// Thread safety: test-only, single-threaded.
#pragma once

#include <httplib.h>

#include <map>
#include <regex>
#include <string>

#include <nlohmann/json.hpp>

#include "protocol/action_table.hpp"
#include "protocol/base64.hpp"

namespace memd::testing {

using nlohmann::json;

// Replaces GUIDs by <id-N> (N by first appearance) and volatile values by
// markers; remembers the mapping so request templates can use <id-N>.
class Normalizer {
 public:
  json normalize(const json& v) {
    if (v.is_string()) return replace_ids(v.get<std::string>());
    if (v.is_array()) {
      json out = json::array();
      for (const auto& item : v) out.push_back(normalize(item));
      return out;
    }
    if (!v.is_object()) return v;
    const bool host_ram = v.value("deviceId", "") == "cpu";
    json out = json::object();
    for (const auto& [key, value] : v.items()) {
      if (key == "createdAt" || key == "lastUsedAt" || key == "sampledAt" || key == "time") out[key] = "<time>";
      else if (key == "address") out[key] = "<address>";
      else if (key == "uptimeSeconds") out[key] = "<uptime>";
      else if (key == "mappingNs") out[key] = "<duration>";
      else if (host_ram && (key == "totalBytes" || key == "freeBytes" || key == "usedBytes" || key == "health" ||
                            key == "percent" || key == "level" || key == "capacityBytes" ||
                            key == "deviceTotalBytes" || key == "otherProcessesBytes" || key == "limitBytes"))
        out[key] = "<host-ram>";
      else out[key] = normalize(value);
    }
    return out;
  }

  // "<id-1>" → the real GUID it stands for.
  std::string substitute(std::string text) const {
    for (const auto& [real, marker] : markers_) {
      for (auto pos = text.find(marker); pos != std::string::npos; pos = text.find(marker, pos))
        text.replace(pos, marker.size(), real);
    }
    return text;
  }

 private:
  std::string replace_ids(const std::string& s) {
    static const std::regex guid("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}");
    std::string out;
    auto begin = std::sregex_iterator(s.begin(), s.end(), guid);
    std::size_t last = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      out += s.substr(last, static_cast<std::size_t>(it->position()) - last);
      auto [entry, inserted] = markers_.try_emplace(it->str(), "");
      if (inserted) entry->second = "<id-" + std::to_string(markers_.size()) + ">";
      out += entry->second;
      last = static_cast<std::size_t>(it->position() + it->length());
    }
    return out + s.substr(last);
  }

  std::map<std::string, std::string> markers_;
};

inline std::string query_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// Sends {"id","action","params"} through REST as the action table routes it
// and answers in stdio's response shape, so the two doors compare directly.
// `admin` sends X-Memd-Admin: true (a stdio host is the admin of its engine).
inline json rest_call(httplib::Client& client, const json& request, const std::string& owner,
                      bool admin = false) {
  const json id = request.value("id", json(nullptr));
  const std::string name = request.at("action");
  json params = request.value("params", json::object());
  const Action* action = find_action(name);
  if (action == nullptr) return {{"id", id}, {"ok", false}, {"error", {{"code", "not_found"}}}};
  // The route whose placeholders the params fill best; limits set via PUT.
  const Route* route = nullptr;
  std::size_t best = 0;
  for (const auto& r : action->routes) {
    const auto names = path_parameters(r.path);
    bool fits = std::all_of(names.begin(), names.end(), [&](const std::string& n) { return params.contains(n); });
    if (name == "memory_limits" && r.read_only != params.empty()) fits = false;
    if (fits && (route == nullptr || names.size() > best)) {
      route = &r;
      best = names.size();
    }
  }
  std::string path(route->path);
  for (const auto& n : path_parameters(route->path)) {
    path.replace(path.find("{" + n + "}"), n.size() + 2, query_text(params[n]));
    params.erase(n);
  }
  std::string body;
  if (route->body == RouteBody::BinaryUpload) {
    auto bytes = base64_decode(params.value("data", ""));
    body.assign(reinterpret_cast<const char*>(bytes->data()), bytes->size());
    params.erase("data");
  }
  const bool json_body = route->body == RouteBody::Json &&
                         (route->method == HttpMethod::Post || route->method == HttpMethod::Put);
  if (json_body) {
    body = params.dump();
  } else {
    std::string q;
    for (const auto& [k, v] : params.items())
      q += (q.empty() ? "?" : "&") + k + "=" + httplib::detail::encode_query_param(query_text(v));
    path += q;
  }
  httplib::Headers headers{{"X-Memd-Owner", owner}};
  if (admin) headers.emplace("X-Memd-Admin", "true");
  httplib::Result res = [&] {
    switch (route->method) {
      case HttpMethod::Get: return client.Get(path, headers);
      case HttpMethod::Delete: return client.Delete(path, headers);
      case HttpMethod::Post: return client.Post(path, headers, body, "application/json");
      case HttpMethod::Put:
        return client.Put(path, headers, body,
                          route->body == RouteBody::BinaryUpload ? "application/octet-stream" : "application/json");
    }
    return client.Get(path, headers);
  }();
  if (!res) return {{"id", id}, {"ok", false}, {"error", {{"code", "transport"}}}};
  if (res->status >= 300) {
    auto e = json::parse(res->body);
    return {{"id", id}, {"ok", false}, {"error", e["error"]}};
  }
  EXPECT_EQ(res->status, route->success_status) << path;
  if (route->body == RouteBody::BinaryDownload) {
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(res->body.data()), res->body.size());
    json result = {{"allocationId", request["params"]["allocationId"]},
                   {"offset", request["params"].value("offset", 0)},
                   {"length", res->body.size()},
                   {"data", base64_encode(bytes)}};
    return {{"id", id}, {"ok", true}, {"result", result}};
  }
  return {{"id", id}, {"ok", true}, {"result", json::parse(res->body)}};
}

}  // namespace memd::testing
