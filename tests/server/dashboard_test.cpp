// The web dashboard's files (server/http/dashboard.hpp): the embedded set,
// the name rule that keeps every request inside it, ETag matching, and the
// routes over raw HTTP — GET / and GET /dashboard/NAME with their types and
// caching headers, 304 on a matching If-None-Match, HEAD, 404 for an unknown
// file with the server's error JSON, traversal (plain, percent-encoded,
// backslashes, NUL) refused, other methods 405, and the files public while
// the API behind them still wants the token. Then memory_blocks over the
// same door: the live map changes with an allocation and a free, and
// hostile parameters get their codes.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "server/http/dashboard.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

using json = nlohmann::json;

std::string status_line(const std::string& response) { return response.substr(0, response.find("\r\n")); }

// The value of a header (case-insensitive name), "" when absent.
std::string header(const std::string& response, std::string_view name) {
  const std::string head = response.substr(0, response.find("\r\n\r\n") + 2);
  std::string lower_head = head;
  for (auto& c : lower_head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string key = "\r\n" + std::string(name) + ":";
  for (auto& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const auto at = lower_head.find(key);
  if (at == std::string::npos) return "";
  auto value = head.substr(at + key.size(), head.find("\r\n", at + key.size()) - at - key.size());
  while (!value.empty() && value.front() == ' ') value.erase(0, 1);
  return value;
}

std::string request(Server& server, const std::string& text) {
  Socket s(server.port());
  EXPECT_TRUE(s.ok());
  EXPECT_TRUE(s.send(text));
  auto r = text.starts_with("HEAD ") ? s.header_only() : s.response();
  EXPECT_TRUE(r) << text;
  return r.value_or("");
}

std::string get(Server& server, const std::string& target, const std::string& extra = "") {
  return request(server, "GET " + target + " HTTP/1.1\r\nHost: memd\r\n" + extra + "Connection: close\r\n\r\n");
}

TEST(DashboardFiles, TheEmbeddedSetHasThePageItsScriptAndItsStyle) {
  std::set<std::string_view> names;
  for (const auto& f : embedded_dashboard_files()) {
    names.insert(f.name);
    EXPECT_FALSE(f.body.empty()) << f.name;
    EXPECT_EQ(f.etag.size(), 18u) << "a quoted 16-digit tag: " << f.etag;
    EXPECT_EQ(f.etag.front(), '"');
    EXPECT_EQ(f.etag.back(), '"');
  }
  for (const char* n : {"index.html", "dashboard.js", "dashboard.css"}) EXPECT_TRUE(names.contains(n)) << n;
  auto index = find_dashboard_file("");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->file->name, "index.html");
  EXPECT_EQ(index->content_type, "text/html; charset=utf-8");
  EXPECT_NE(index->file->body.find("<canvas id=\"blockmap\""), std::string_view::npos);
  // Nothing from elsewhere: the page names no other origin.
  for (const auto& f : embedded_dashboard_files()) {
    EXPECT_EQ(f.body.find("http://"), std::string_view::npos) << f.name;
    EXPECT_EQ(f.body.find("https://"), std::string_view::npos) << f.name;
  }
}

TEST(DashboardFiles, NamesOutsideThePlainRuleAreRefusedUnknownOnesNotFound) {
  for (std::string_view bad : {"..", ".", "../index.html", "..%2findex.html", "a/b", "a\\b", ".hidden", "%2e%2e",
                               "index.html\n", "index .html", "índe.html"})
    EXPECT_EQ(find_dashboard_file(bad).error().code, ErrorCode::invalid_argument) << bad;
  EXPECT_EQ(find_dashboard_file(std::string_view("index\0.html", 11)).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(find_dashboard_file(std::string(129, 'a')).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(find_dashboard_file("nope.js").error().code, ErrorCode::not_found);
  EXPECT_EQ(find_dashboard_file("INDEX.HTML").error().code, ErrorCode::not_found) << "names are exact";
  EXPECT_EQ(find_dashboard_file("dashboard.js")->content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(find_dashboard_file("dashboard.css")->content_type, "text/css; charset=utf-8");
  EXPECT_EQ(dashboard_content_type("x.bin"), "application/octet-stream");
  EXPECT_EQ(dashboard_content_type("html"), "application/octet-stream") << "an extension, not a name";
}

TEST(DashboardFiles, EtagMatching) {
  EXPECT_TRUE(etag_matches("\"abc\"", "\"abc\""));
  EXPECT_TRUE(etag_matches("W/\"abc\"", "\"abc\""));
  EXPECT_TRUE(etag_matches(" \"x\" , \"abc\"", "\"abc\""));
  EXPECT_TRUE(etag_matches("*", "\"abc\""));
  EXPECT_FALSE(etag_matches("\"abd\"", "\"abc\""));
  EXPECT_FALSE(etag_matches("abc", "\"abc\""));
  EXPECT_FALSE(etag_matches("", "\"abc\""));
  EXPECT_FALSE(etag_matches(",,,", "\"abc\""));
  EXPECT_TRUE(is_dashboard_path("/"));
  EXPECT_TRUE(is_dashboard_path("/dashboard/x"));
  EXPECT_FALSE(is_dashboard_path("/dashboard"));
  EXPECT_FALSE(is_dashboard_path("/dashboard/"));
  EXPECT_FALSE(is_dashboard_path("/dashboard/../api/memory/status"));
  EXPECT_FALSE(is_dashboard_path("/dashboard/a/b"));
  EXPECT_TRUE(is_dashboard_path("/dashboard/..%2fapi")) << "one segment: refused later by the name rule";
  EXPECT_FALSE(is_dashboard_path("/api/memory/status"));
}

TEST(DashboardRoutes, ServesThePageAndItsFilesWithTypesAndCaching) {
  Server server;
  ASSERT_GT(server.port(), 0);
  const std::string page = get(server, "/");
  ASSERT_EQ(status_line(page), "HTTP/1.1 200 OK") << page.substr(0, 300);
  EXPECT_EQ(header(page, "Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(header(page, "Cache-Control"), "no-cache");
  EXPECT_EQ(header(page, "X-Content-Type-Options"), "nosniff");
  EXPECT_NE(header(page, "Content-Security-Policy").find("default-src 'none'"), std::string::npos);
  const std::string etag = header(page, "ETag");
  EXPECT_EQ(etag, find_dashboard_file("index.html")->file->etag);
  EXPECT_EQ(body_of(page), find_dashboard_file("index.html")->file->body);

  const std::string js = get(server, "/dashboard/dashboard.js");
  ASSERT_EQ(status_line(js), "HTTP/1.1 200 OK");
  EXPECT_EQ(header(js, "Content-Type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(body_of(js), find_dashboard_file("dashboard.js")->file->body);
  EXPECT_EQ(header(get(server, "/dashboard/dashboard.css"), "Content-Type"), "text/css; charset=utf-8");
  EXPECT_EQ(status_line(get(server, "/dashboard/index.html")), "HTTP/1.1 200 OK");

  // Revalidation: the same tag is 304 with no body; another is the file.
  const std::string again = get(server, "/", "If-None-Match: " + etag + "\r\n");
  EXPECT_EQ(status_line(again), "HTTP/1.1 304 Not Modified");
  EXPECT_EQ(body_of(again), "");
  EXPECT_EQ(header(again, "ETag"), etag);
  EXPECT_EQ(status_line(get(server, "/", "If-None-Match: \"0000000000000000\"\r\n")), "HTTP/1.1 200 OK");

  const std::string head = request(server, "HEAD / HTTP/1.1\r\nHost: memd\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(status_line(head), "HTTP/1.1 200 OK");
  EXPECT_EQ(header(head, "Content-Length"), std::to_string(find_dashboard_file("index.html")->file->body.size()));
}

TEST(DashboardRoutes, UnknownFilesAndTraversalAreRefusedWithTheErrorJson) {
  Server server;
  ASSERT_GT(server.port(), 0);
  const std::pair<std::string, std::string> cases[] = {
      {"/dashboard/nope.js", "404"},
      {"/dashboard/%2e%2e", "400"},
      {"/dashboard/..%2f..%2fetc%2fpasswd", "400"},
      {"/dashboard/..%2F..%2Fapi%2Fmemory%2Fstatus", "400"},
      {"/dashboard/%2E%2E%5Cindex.html", "400"},
      {"/dashboard/..%5c..%5cwindows", "400"},
      {"/dashboard/index.html%00.js", "400"},
      {"/dashboard/.env", "400"},
      {"/dashboard/%252e%252e", "400"},  // decoded once: "%2e%2e", a '%' the rule refuses
      {"/dashboard/../../etc/passwd", "404"},  // no route has that many segments
      {"/dashboard/../index.html", "404"},
      {"/dashboard/", "404"},
      {"/dashboard", "404"},
      {"/index.html", "404"},
  };
  for (const auto& [target, status] : cases) {
    const std::string r = get(server, target);
    EXPECT_EQ(status_line(r).substr(9, 3), status) << target << "\n" << r.substr(0, 400);
    EXPECT_EQ(header(r, "Content-Type"), "application/json") << target;
    const json body = json::parse(body_of(r), nullptr, false);
    ASSERT_TRUE(body.is_object() && body.contains("error")) << target << ": " << body_of(r);
    EXPECT_EQ(body["error"]["code"], status == "404" ? "not_found" : "invalid_argument") << target;
    EXPECT_EQ(body_of(r).find("root:"), std::string::npos) << target;
  }
  const std::string post = request(server, "POST / HTTP/1.1\r\nHost: memd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(status_line(post), "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(header(post, "Allow"), "GET, HEAD");
  // Still serving.
  EXPECT_EQ(status_line(get(server, "/")), "HTTP/1.1 200 OK");
}

TEST(DashboardRoutes, TheFilesArePublicTheApiBehindThemIsNot) {
  HttpOptions options;
  options.token = "s3cret";
  Server server(options);
  ASSERT_GT(server.port(), 0);
  EXPECT_EQ(status_line(get(server, "/")), "HTTP/1.1 200 OK");
  EXPECT_EQ(status_line(get(server, "/dashboard/dashboard.js")), "HTTP/1.1 200 OK");
  EXPECT_EQ(status_line(get(server, "/dashboard/nope.js")), "HTTP/1.1 404 Not Found");
  EXPECT_EQ(status_line(get(server, "/api/memory/blocks/host:0")), "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(status_line(get(server, "/api/memory/status")), "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(status_line(get(server, "/api/memory/blocks/host:0", "Authorization: Bearer s3cret\r\n")),
            "HTTP/1.1 200 OK");
  // A path that only starts like a file's is not public.
  EXPECT_EQ(status_line(get(server, "/dashboard/../api/memory/status")), "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(status_line(get(server, "/dashboard/..%2f..%2fapi%2fmemory%2fstatus")), "HTTP/1.1 400 Bad Request");
  // A token is not needed for the files, and a wrong one does not break them.
  EXPECT_EQ(status_line(get(server, "/", "Authorization: Bearer wrong\r\n")), "HTTP/1.1 200 OK");
}

// The live block map over REST: an allocation appears as an allocated block
// at its address, and is gone once freed.
TEST(DashboardRoutes, BlocksFollowAllocationsAndRefuseHostileParameters) {
  Server server;
  ASSERT_GT(server.port(), 0);
  auto blocks = [&](const std::string& query = "") {
    const std::string r = get(server, "/api/memory/blocks/host:0" + query);
    EXPECT_EQ(status_line(r), "HTTP/1.1 200 OK") << r.substr(0, 400);
    return json::parse(body_of(r), nullptr, false);
  };
  auto allocated_at = [](const json& map, const json& address) {
    int n = 0;
    for (const auto& seg : map["segments"])
      for (const auto& b : seg["blocks"])
        if (b["state"] == "allocated" && b["address"] == address) ++n;
    return n;
  };
  const std::string body = R"({"sizeBytes": "3MiB", "deviceId": "host:0", "name": "dash"})";
  const std::string made = request(server, "POST /api/memory/allocations HTTP/1.1\r\nHost: memd\r\n"
                                           "Content-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                                               std::to_string(body.size()) + "\r\n\r\n" + body);
  ASSERT_EQ(status_line(made), "HTTP/1.1 201 Created") << made;
  const json a = json::parse(body_of(made));
  const json with = blocks();
  EXPECT_EQ(allocated_at(with, a["address"]), 1) << with.dump().substr(0, 600);
  EXPECT_GE(with["liveBytes"].get<std::uint64_t>(), 3u * kMiB);
  EXPECT_EQ(with["deviceId"], "host:0");

  const std::string freed = request(server, "DELETE /api/memory/allocations/" + a["allocationId"].get<std::string>() +
                                                " HTTP/1.1\r\nHost: memd\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(status_line(freed), "HTTP/1.1 200 OK") << freed;
  const json without = blocks();
  EXPECT_EQ(allocated_at(without, a["address"]), 0);
  EXPECT_LT(without["liveBytes"].get<std::uint64_t>(), with["liveBytes"].get<std::uint64_t>());

  const std::pair<std::string, std::string> cases[] = {
      {"/api/memory/blocks/host:9", "404"},
      {"/api/memory/blocks/cuda:0", "404"},
      {"/api/memory/blocks/gpu:0", "400"},
      {"/api/memory/blocks/host%3A0%2F..%2F1", "400"},
      {"/api/memory/blocks/%00", "400"},
      {"/api/memory/blocks/host:0?maxBlocks=-1", "400"},
      {"/api/memory/blocks/host:0?maxBlocks=100001", "400"},
      {"/api/memory/blocks/host:0?maxBlocks=ten", "400"},
      {"/api/memory/blocks/host:0?maxBlocks=99999999999999999999999", "400"},
      {"/api/memory/blocks/host:0?maxBlocks=1e3", "400"},
      {"/api/memory/blocks/", "404"},
      {"/api/memory/blocks", "404"},
  };
  for (const auto& [target, status] : cases) {
    const std::string r = get(server, target);
    EXPECT_EQ(status_line(r).substr(9, 3), status) << target << "\n" << r.substr(0, 400);
    const json err = json::parse(body_of(r), nullptr, false);
    EXPECT_TRUE(err.is_object() && err.contains("error")) << target;
  }
  const std::string post = request(server, "POST /api/memory/blocks/host:0 HTTP/1.1\r\nHost: memd\r\n"
                                           "Content-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(status_line(post).substr(9, 3), "405");
  EXPECT_EQ(blocks("?maxBlocks=0")["blocksReturned"], 0);
}

}  // namespace
}  // namespace memd::testing
