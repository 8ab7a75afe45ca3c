// The action table is consistent, documented, and published as OpenAPI.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "protocol/action_table.hpp"
#include "protocol/api_doc.hpp"
#include "protocol/openapi.hpp"

namespace memd {
namespace {

std::string read_api_md() {
  std::ifstream in(std::filesystem::path(MEMD_SOURCE_DIR) / "docs" / "api.md");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ActionTable, NamesAndRoutesAreUnique) {
  std::set<std::string> names, routes;
  for (const auto& a : action_table()) {
    EXPECT_TRUE(names.insert(std::string(a.name)).second) << a.name;
    // Only memory_unsubscribe is stdio-only: over REST a subscription is its
    // connection, and closing it unsubscribes.
    EXPECT_EQ(a.routes.empty(), a.name == "memory_unsubscribe") << a.name;
    for (const auto& r : a.routes)
      EXPECT_TRUE(routes.insert(std::string(to_string(r.method)) + " " + std::string(r.path)).second)
          << r.path;
  }
  EXPECT_EQ(find_action("memory_allocate")->name, "memory_allocate");
  EXPECT_EQ(find_action("memory_defragment")->name, "memory_defragment");
}

TEST(ActionTable, ExamplesAreValidAndPathParametersDeclared) {
  for (const auto& a : action_table()) {
    auto params = nlohmann::json::parse(a.example_params);
    auto result = nlohmann::json::parse(a.example_result);
    EXPECT_TRUE(params.is_object() && result.is_object()) << a.name;
    EXPECT_TRUE(validate_params(a, params, {})) << a.name;
    for (const auto& r : a.routes)
      for (const auto& p : path_parameters(r.path))
        EXPECT_TRUE(std::any_of(a.params.begin(), a.params.end(),
                                [&](const ParamSpec& s) { return s.name == p; }))
            << a.name << " " << p;
  }
}

TEST(ActionTable, ValidationChecksDeclaredTypes) {
  const auto& a = *find_action("memory_allocate");
  EXPECT_EQ(validate_params(a, nlohmann::json::array(), {}).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(validate_params(a, {{"sizeBytes", "x"}}, {}).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(validate_params(a, nlohmann::json::object(), {}).error().message,
            "missing required parameter 'sizeBytes'");
  EXPECT_TRUE(validate_params(a, {{"sizeBytes", 1}, {"unknownKey", {1, 2}}}, {}));
  const auto& w = *find_action("memory_write");
  CallContext rest;
  std::byte b{};
  rest.payload = std::span<const std::byte>(&b, 1);
  EXPECT_TRUE(validate_params(w, {{"allocationId", "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}}, rest));
  EXPECT_FALSE(validate_params(w, {{"allocationId", "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}}, {}));
}

TEST(ApiDoc, DocsMatchTheActionTable) {
  const std::string expected = api_markdown();
  const std::string actual = read_api_md();
  EXPECT_EQ(actual, expected)
      << "docs/api.md is out of date: regenerate it with `memd api-doc > docs/api.md`";
  // And, independently of the generator: every action and route is there, and
  // nothing documented as an action or route is missing from the table.
  std::set<std::string> documented_actions, documented_routes;
  std::regex action_heading(R"(^### (\w+)$)"), route_line(R"(^- REST: `(\w+) ([^`]+)`)");
  std::istringstream lines(actual);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, action_heading)) documented_actions.insert(m[1]);
    if (std::regex_search(line, m, route_line)) documented_routes.insert(m[1].str() + " " + m[2].str());
  }
  std::set<std::string> actions, routes;
  for (const auto& a : action_table()) {
    actions.insert(std::string(a.name));
    for (const auto& r : a.routes) routes.insert(std::string(to_string(r.method)) + " " + std::string(r.path));
  }
  EXPECT_EQ(documented_actions, actions);
  EXPECT_EQ(documented_routes, routes);
}

TEST(OpenApi, EveryRouteIsInTheDocument) {
  const auto doc = openapi_document();
  EXPECT_EQ(doc["openapi"], "3.0.3");
  for (const auto& a : action_table())
    for (const auto& r : a.routes) {
      std::string method(to_string(r.method));
      std::transform(method.begin(), method.end(), method.begin(), ::tolower);
      ASSERT_TRUE(doc["paths"].contains(std::string(r.path))) << r.path;
      EXPECT_TRUE(doc["paths"][std::string(r.path)].contains(method)) << r.path;
    }
  EXPECT_TRUE(doc["paths"]["/api/memory/allocations"]["post"]["responses"].contains("201"));
}

}  // namespace
}  // namespace memd
