// OpenAPI 3.0 generation from the action table.
#include "protocol/openapi.hpp"

#include "models/model_name.hpp"

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <vector>

#include "memd/memory_types.hpp"
#include "memd/version.hpp"
#include "monitor/event.hpp"
#include "protocol/action_table.hpp"
#include "protocol/params.hpp"

namespace memd {
namespace {

// Names (exact case) or the seed's integers; the integers' decimal text is a
// string spelling too, because a query string carries every value as text.
template <typename E>
nlohmann::json enum_schema(std::span<const E> values, bool allocatable = false) {
  nlohmann::json names = nlohmann::json::array();
  nlohmann::json texts = nlohmann::json::array();
  nlohmann::json ints = nlohmann::json::array();
  for (E v : values) {
    if (allocatable && static_cast<int>(v) == 0) continue;
    names.push_back(std::string(to_string(v)));
    texts.push_back(std::to_string(static_cast<int>(v)));
    ints.push_back(static_cast<int>(v));
  }
  for (auto& t : texts) names.push_back(std::move(t));
  return {{"anyOf", {{{"type", "string"}, {"enum", std::move(names)}},
                     {{"type", "integer"}, {"enum", std::move(ints)}}}}};
}

nlohmann::json size_schema(std::uint64_t minimum, std::string_view pattern) {
  return {{"anyOf", {{{"type", "integer"}, {"minimum", minimum}, {"maximum", kMaxWireBytes}},
                     {{"type", "string"}, {"pattern", std::string(pattern)}, {"example", "512MiB"}}}}};
}

nlohmann::json text_schema(std::size_t min_chars, std::size_t max_chars) {
  nlohmann::json s = {{"type", "string"}, {"maxLength", max_chars}};
  if (min_chars > 0) s["minLength"] = min_chars;
  return s;
}

// The owner rule (memd/owner_name.hpp) as JSON Schema can say it: the
// pattern carries the character rule; JSON Schema counts characters, so
// maxLength (128 characters) is only implied by the byte bound, and the
// extension x-memd-maxBytes states the bound memd applies.
nlohmann::json owner_schema() {
  return {{"type", "string"},
          {"minLength", 1},
          {"maxLength", kMaxOwnerBytes},
          {"x-memd-maxBytes", kMaxOwnerBytes},
          {"pattern", owner_pattern()}};
}

constexpr std::string_view kOwnerRule =
    " An owner is 1..128 bytes of UTF-8 (bytes, not characters: maxLength is only the character bound "
    "the byte bound implies; x-memd-maxBytes is the exact one) with no control or format character "
    "(Unicode Cc, Cf; the pattern).";

std::string describe(const ParamSpec& spec) {
  std::string d(spec.description);
  if (spec.kind == ParamKind::Owner) d += kOwnerRule;
  return d;
}

nlohmann::json guid_schema() {
  return {{"type", "string"}, {"format", "uuid"}, {"pattern", std::string(kGuidPattern)}};
}

nlohmann::json schema_for(const ParamSpec& spec);

// An ObjectList: each item an object of the item specs.
nlohmann::json object_list_schema(const ParamSpec& spec) {
  nlohmann::json props = nlohmann::json::object();
  nlohmann::json required = nlohmann::json::array();
  for (std::size_t i = 0; i < spec.item_count; ++i) {
    const auto& item = spec.items[i];
    auto s = schema_for(item);
    s["description"] = describe(item);
    props[std::string(item.name)] = std::move(s);
    if (item.required) required.push_back(std::string(item.name));
  }
  nlohmann::json object = {{"type", "object"}, {"properties", std::move(props)}};
  if (!required.empty()) object["required"] = std::move(required);
  return {{"type", "array"},
          {"minItems", 1},
          {"maxItems", spec.maximum != 0 ? spec.maximum : kMaxWireBytes},
          {"items", std::move(object)}};
}

nlohmann::json kind_schema(const ParamSpec& spec) {
  switch (spec.kind) {
    case ParamKind::TransferId: return guid_schema();
    case ParamKind::ExportId: return guid_schema();
    case ParamKind::OomSnapshotId: return guid_schema();
    case ParamKind::OwnerList:
      return {{"type", "array"},
              {"minItems", 1},
              {"maxItems", spec.maximum != 0 ? spec.maximum : kMaxWireBytes},
              {"items", owner_schema()}};
    case ParamKind::ObjectList: return object_list_schema(spec);
    case ParamKind::ModelPath: return text_schema(1, kMaxModelPathChars);
    case ParamKind::ModelName: return {{"type", "string"}, {"pattern", std::string(kModelNamePattern)}};
    case ParamKind::EventKinds: {
      std::string names;
      for (EventKind k : all_event_kinds()) names += (names.empty() ? "" : "|") + std::string(to_string(k));
      return {{"type", "string"}, {"pattern", "^(" + names + ")(,(" + names + "))*$"}};
    }
    case ParamKind::String: {
      if (spec.choice_count == 0) return {{"type", "string"}};
      nlohmann::json names = nlohmann::json::array();
      for (std::size_t i = 0; i < spec.choice_count; ++i) names.push_back(std::string(spec.choices[i]));
      return {{"type", "string"}, {"enum", std::move(names)}};
    }
    case ParamKind::Size: return size_schema(0, kSizeStringPattern);
    case ParamKind::AllocationSize: return size_schema(1, kAllocationSizeStringPattern);
    case ParamKind::Count:
      return {{"type", "integer"}, {"minimum", spec.minimum},
              {"maximum", spec.maximum != 0 ? spec.maximum : kMaxWireBytes}};
    case ParamKind::JsonInteger:
      return {{"type", "integer"}, {"minimum", spec.minimum},
              {"maximum", spec.maximum != 0 ? spec.maximum : kMaxWireBytes}};
    case ParamKind::Boolean: return {{"type", "boolean"}};
    case ParamKind::StringList:
      return {{"type", "array"}, {"maxItems", kMaxTags}, {"items", text_schema(1, kMaxTagChars)}};
    case ParamKind::DeviceId: return {{"type", "string"}, {"pattern", std::string(kDeviceIdPattern)}};
    case ParamKind::AllocationId: return guid_schema();
    case ParamKind::SessionId: return guid_schema();
    case ParamKind::MemoryType: return enum_schema(all_memory_types());
    case ParamKind::AllocatableMemoryType: return enum_schema(all_memory_types(), true);
    case ParamKind::AllocationType: return enum_schema(all_allocation_types());
    case ParamKind::AllocationStatus: return enum_schema(all_allocation_statuses());
    case ParamKind::Priority: return enum_schema(all_priorities());
    case ParamKind::Base64: return {{"type", "string"}, {"format", "byte"}};
    case ParamKind::Owner: return owner_schema();
    case ParamKind::Name: return text_schema(0, kMaxNameChars);
    case ParamKind::Tag: return text_schema(1, kMaxTagChars);
  }
  return {{"type", "string"}};
}

// OpenAPI 3.0 has no null type: `nullable` goes on each typed schema.
nlohmann::json schema_for(const ParamSpec& spec) {
  auto s = kind_schema(spec);
  if (spec.nullable) {
    if (s.contains("anyOf"))
      for (auto& branch : s["anyOf"]) branch["nullable"] = true;
    else
      s["nullable"] = true;
  }
  return s;
}

// The alternatives rule of a body (ParamSpec::alternative): one branch per
// alternative, with its required keys and no key of another.
std::optional<nlohmann::json> alternatives_rule(const Action& action) {
  std::vector<std::string_view> names;
  for (const auto& p : action.params)
    if (!p.alternative.empty() && std::find(names.begin(), names.end(), p.alternative) == names.end())
      names.push_back(p.alternative);
  if (names.empty()) return std::nullopt;
  nlohmann::json branches = nlohmann::json::array();
  for (const auto& name : names) {
    nlohmann::json required = nlohmann::json::array();
    nlohmann::json others = nlohmann::json::array();
    for (const auto& p : action.params) {
      if (p.alternative.empty()) continue;
      if (p.alternative == name && p.required) required.push_back(std::string(p.name));
      if (p.alternative != name) others.push_back({{"required", {std::string(p.name)}}});
    }
    nlohmann::json branch = {{"required", std::move(required)}};
    if (!others.empty()) branch["not"] = {{"anyOf", std::move(others)}};
    branches.push_back(std::move(branch));
  }
  return branches;
}

// The one-scope rule of a body (memory_limits): exactly one scope key with the
// scoped keys, or none of them.
std::optional<nlohmann::json> scope_rule(const Action& action) {
  std::vector<std::string> scopes, scoped;
  for (const auto& p : action.params) {
    if (p.scope) scopes.emplace_back(p.name);
    if (p.scoped) scoped.emplace_back(p.name);
  }
  if (scopes.empty()) return std::nullopt;
  nlohmann::json branches = nlohmann::json::array();
  nlohmann::json any = nlohmann::json::array();
  for (const auto& s : scopes) {
    nlohmann::json required = {s};
    for (const auto& v : scoped) required.push_back(v);
    branches.push_back({{"required", std::move(required)}});
    any.push_back({{"required", {s}}});
  }
  for (const auto& v : scoped) any.push_back({{"required", {v}}});
  branches.push_back({{"not", {{"anyOf", std::move(any)}}}});
  return branches;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

nlohmann::json operation(const Action& action, const Route& route, std::size_t index) {
  const auto in_path = path_parameters(route.path);
  const bool query_params = route.method == HttpMethod::Get || route.method == HttpMethod::Delete ||
                            route.body != RouteBody::Json;
  nlohmann::json op = {
      {"operationId", index == 0 ? std::string(action.name)
                                 : std::string(action.name) + "_" + std::to_string(index)},
      {"summary", std::string(action.summary)},
      {"tags", {route.path.starts_with("/api/sessions") ? "sessions" : "memory"}},
  };
  nlohmann::json parameters = nlohmann::json::array();
  if (route.path.starts_with("/api/")) {
    parameters.push_back(
        {{"name", "X-Memd-Owner"},
         {"in", "header"},
         {"required", false},
         {"description", "Who is calling, without --tokens (default \"anonymous\"): a label that guards "
                         "against mistakes, not security. With a --tokens bearer the token names the owner, "
                         "and a different X-Memd-Owner is refused (permission_denied)." +
                             std::string(kOwnerRule)},
         {"schema", owner_schema()}});
    parameters.push_back(
        {{"name", "X-Memd-Admin"},
         {"in", "header"},
         {"required", false},
         {"description", "true asks to act as the admin on a daemon without tokens (any other owner's "
                         "allocations, limits, clears across owners). With tokens the token decides; true "
                         "with a non-admin token is refused (permission_denied)."},
         {"schema", {{"type", "string"}, {"enum", {"true", "false"}}}}});
    parameters.push_back(
        {{"name", "X-Memd-Session"},
         {"in", "header"},
         {"required", false},
         {"description", "A session of the caller's owner (memory_session_open): allocations made with it are "
                         "freed when it closes or lapses. Another owner's: permission_denied; closed or "
                         "lapsed: not_found."},
         {"schema", guid_schema()}});
  }
  nlohmann::json body_props = nlohmann::json::object();
  nlohmann::json body_required = nlohmann::json::array();
  for (const auto& p : action.params) {
    const std::string name(p.name);
    const bool path_param = std::find(in_path.begin(), in_path.end(), name) != in_path.end();
    if (p.stdio_only) continue;
    if (path_param) {
      parameters.push_back({{"name", name}, {"in", "path"}, {"required", true},
                            {"description", describe(p)}, {"schema", schema_for(p)}});
    } else if (route.read_only) {
      continue;  // a read-only GET takes no parameters
    } else if (query_params) {
      parameters.push_back({{"name", name}, {"in", "query"}, {"required", p.required},
                            {"description", describe(p)}, {"schema", schema_for(p)}});
    } else {
      auto s = schema_for(p);
      s["description"] = describe(p);
      body_props[name] = std::move(s);
      if (p.required && p.alternative.empty()) body_required.push_back(name);
    }
  }
  if (!parameters.empty()) op["parameters"] = std::move(parameters);
  if (route.body == RouteBody::BinaryUpload) {
    op["requestBody"] = {{"required", true},
                         {"content", {{"application/octet-stream",
                                       {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}};
  } else if (!query_params && !body_props.empty()) {
    nlohmann::json schema = {{"type", "object"}, {"properties", std::move(body_props)}};
    if (!body_required.empty()) schema["required"] = std::move(body_required);
    bool body_needed = !body_required.empty();
    if (auto rule = scope_rule(action)) {
      schema["oneOf"] = std::move(*rule);
    } else if (auto alternatives = alternatives_rule(action)) {
      schema["oneOf"] = std::move(*alternatives);
      body_needed = true;  // every alternative names a key
    }
    op["requestBody"] = {
        {"required", body_needed},
        {"content", {{"application/json",
                      {{"schema", std::move(schema)},
                       {"example", nlohmann::json::parse(action.example_params)}}}}}};
  }
  nlohmann::json success;
  if (route.body == RouteBody::EventStream) {
    success = {{"description",
                "Server-sent events until the client closes: each event's id is its sequence (what "
                "Last-Event-ID resumes from), its name the kind, its data the event object; comments keep "
                "the stream alive; a `lost` event says how many events the client missed."},
               {"content", {{"text/event-stream", {{"schema", {{"type", "string"}}}}}}}};
    op["parameters"].push_back(
        {{"name", "Last-Event-ID"},
         {"in", "header"},
         {"required", false},
         {"description", "Resume after this sequence (as lastEventId; the header wins)."},
         {"schema", {{"type", "string"}, {"pattern", "^[0-9]{1,18}$"}}}});
  } else if (route.body == RouteBody::BinaryDownload) {
    success = {{"description", "The bytes"},
               {"content", {{"application/octet-stream",
                             {{"schema", {{"type", "string"}, {"format", "binary"}}}}}}}};
  } else {
    success = {{"description", "Success"},
               {"content", {{"application/json",
                             {{"schema", {{"type", "object"}}},
                              {"example", nlohmann::json::parse(action.example_result)}}}}}};
  }
  op["responses"] = {
      {std::to_string(route.success_status), std::move(success)},
      {"default", {{"description", "An error from memd's closed list of codes"},
                   {"content", {{"application/json",
                                 {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}}},
  };
  if (route.path == "/healthz") op["security"] = nlohmann::json::array();
  return op;
}

}  // namespace

nlohmann::json openapi_document() {
  nlohmann::json paths = nlohmann::json::object();
  for (const auto& action : action_table()) {
    for (std::size_t i = 0; i < action.routes.size(); ++i) {
      const auto& r = action.routes[i];
      paths[std::string(r.path)][lower(to_string(r.method))] = operation(action, r, i);
    }
  }
  paths["/api/openapi.json"]["get"] = {
      {"operationId", "openapi"},
      {"summary", "This document."},
      {"responses", {{"200", {{"description", "The OpenAPI document"}}}}},
  };
  nlohmann::json codes = nlohmann::json::array();
  for (auto c : kAllErrorCodes) codes.push_back(std::string(to_string(c)));
  return {
      {"openapi", "3.0.3"},
      {"info", {{"title", "memd"},
                {"version", std::string(version())},
                {"description", "GPU memory manager for ML inference: the Memory domain's REST API."}}},
      {"paths", std::move(paths)},
      {"components",
       {{"schemas",
         {{"Error",
           {{"type", "object"},
            {"required", {"error"}},
            {"properties",
             {{"error", {{"type", "object"},
                         {"required", {"code", "message"}},
                         {"properties", {{"code", {{"type", "string"}, {"enum", std::move(codes)}}},
                                         {"message", {{"type", "string"}}}}}}}}}}}}},
        {"securitySchemes",
         {{"bearer", {{"type", "http"},
                      {"scheme", "bearer"},
                      {"description", "Required when memd serves with --token or --tokens (always off "
                                      "loopback); on loopback without them no token is needed. A --tokens "
                                      "token names its owner (and whether it is the admin); the --token "
                                      "token is the admin's."}}}}}}},
      // Optional: the empty requirement is the loopback daemon without --token.
      {"security", {{{"bearer", nlohmann::json::array()}}, nlohmann::json::object()}},
  };
}

}  // namespace memd
