// Owners over real HTTP, through the `memd serve` binary: mallory cannot see,
// read, write, free or list alice's allocation, nor set limits or clear
// across owners (403 permission_denied), and the admin can — without tokens
// (X-Memd-Owner labels, X-Memd-Admin) and with --tokens (the bearer token
// names the owner; spoofing X-Memd-Owner is refused). Hostile owner names
// are refused as the header and as the `owner` parameter.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "server/daemon.hpp"
#include "server/doors_support.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

using Headers = httplib::Headers;

std::string code_of(const httplib::Result& r) {
  if (!r) return "transport";
  auto j = json::parse(r->body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
}

Headers with(Headers h, const std::string& key, const std::string& value) {
  h.emplace(key, value);
  return h;
}

// Alice allocates and writes; mallory is refused everything on it; alice's
// bytes are intact; the admin can do everything. The same script, whatever
// makes alice alice.
void mallory_is_refused_and_the_admin_is_not(httplib::Client& c, const Headers& alice, const Headers& mallory,
                                             const Headers& admin) {
  auto made = c.Post("/api/memory/allocations", alice, R"({"sizeBytes": 4096, "deviceId": "host:0"})",
                     "application/json");
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  EXPECT_EQ(json::parse(made->body)["owner"], "alice");
  const std::string id = json::parse(made->body)["allocationId"];
  const std::string at = "/api/memory/allocations/" + id;
  ASSERT_EQ(c.Put(at + "/data", alice, "alice's bytes", "application/octet-stream")->status, 200);

  const std::pair<std::string, httplib::Result> refused[] = {
      {"details", c.Get(at, mallory)},
      {"read", c.Get(at + "/data?length=5", mallory)},
      {"write", c.Put(at + "/data", mallory, "mallory", "application/octet-stream")},
      {"free", c.Delete(at, mallory)},
      {"list alice's", c.Get("/api/memory/allocations?owner=alice", mallory)},
      {"clear alice's", c.Post("/api/memory/clear", mallory, R"({"owner": "alice"})", "application/json")},
      {"clear a device", c.Post("/api/memory/clear", mallory, R"({"deviceId": "host:0"})", "application/json")},
      {"limit herself", c.Put("/api/memory/limits", mallory, R"({"owner": "mallory", "bytes": "1GiB"})",
                              "application/json")},
  };
  for (const auto& [what, r] : refused) {
    ASSERT_TRUE(r) << what;
    EXPECT_EQ(r->status, 403) << what << ": " << r->body;
    EXPECT_EQ(code_of(r), "permission_denied") << what;
  }
  auto mine = json::parse(c.Get("/api/memory/allocations", mallory)->body);
  EXPECT_EQ(mine["total"], 0) << "mallory's listing shows someone else's allocation";
  auto back = c.Get(at + "/data?length=13", alice);
  ASSERT_EQ(back->status, 200);
  EXPECT_EQ(back->body, "alice's bytes") << "a refused write changed alice's bytes";

  EXPECT_EQ(c.Get(at, admin)->status, 200);
  auto read = c.Get(at + "/data?length=13", admin);
  ASSERT_EQ(read->status, 200);
  EXPECT_EQ(read->body, "alice's bytes");
  EXPECT_EQ(c.Put(at + "/data", admin, "admin's", "application/octet-stream")->status, 200);
  EXPECT_EQ(json::parse(c.Get("/api/memory/allocations?owner=alice", admin)->body)["total"], 1);
  EXPECT_EQ(c.Put("/api/memory/limits", admin, R"({"owner": "mallory", "bytes": "1MiB"})", "application/json")->status,
            200);
  auto freed = c.Delete(at, admin);
  ASSERT_EQ(freed->status, 200) << freed->body;
  EXPECT_EQ(json::parse(freed->body)["owner"], "alice");
  EXPECT_EQ(c.Get(at, alice)->status, 404);
}

TEST(OwnershipRest, WithoutTokensMalloryIsRefusedAndTheAdminIsNot) {
  Daemon daemon;
  ASSERT_FALSE(daemon.url().empty());
  httplib::Client c(daemon.url());
  const Headers alice{{"X-Memd-Owner", "alice"}}, mallory{{"X-Memd-Owner", "mallory"}};
  const Headers admin{{"X-Memd-Owner", "ops"}, {"X-Memd-Admin", "true"}};
  mallory_is_refused_and_the_admin_is_not(c, alice, mallory, admin);
  // Without tokens a label is all there is: it guards against mistakes, and
  // anyone may claim any label (or the admin). --tokens is the real thing.
  auto made = c.Post("/api/memory/allocations", alice, R"({"sizeBytes": 1})", "application/json");
  const std::string id = json::parse(made->body)["allocationId"];
  EXPECT_EQ(c.Delete("/api/memory/allocations/" + id, with(mallory, "X-Memd-Admin", "true"))->status, 200);
}

class OwnershipRestWithTokens : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/memd-own-XXXXXX";
    ASSERT_NE(::mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    tokens_ = dir_ + "/tokens";
    std::ofstream(tokens_) << "# test tokens\nalice-token alice\nmallory-token mallory\nroot-token ops admin\n";
    ASSERT_EQ(::chmod(tokens_.c_str(), 0600), 0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, tokens_;
};

TEST_F(OwnershipRestWithTokens, MalloryIsRefusedAndTheAdminIsNot) {
  Daemon daemon({"--tokens", tokens_});
  ASSERT_FALSE(daemon.url().empty());
  httplib::Client c(daemon.url());
  const Headers alice{{"Authorization", "Bearer alice-token"}};
  const Headers mallory{{"Authorization", "Bearer mallory-token"}};
  const Headers admin{{"Authorization", "Bearer root-token"}};
  mallory_is_refused_and_the_admin_is_not(c, alice, mallory, admin);

  // The token names the owner: mallory claiming alice's label, or the admin,
  // is refused rather than ignored; no token at all is 401.
  auto made = c.Post("/api/memory/allocations", alice, R"({"sizeBytes": 1})", "application/json");
  ASSERT_EQ(made->status, 201);
  const std::string at = "/api/memory/allocations/" + json::parse(made->body)["allocationId"].get<std::string>();
  for (const auto& spoof : {with(mallory, "X-Memd-Owner", "alice"), with(mallory, "X-Memd-Admin", "true")}) {
    auto r = c.Delete(at, spoof);
    EXPECT_EQ(r->status, 403) << r->body;
    EXPECT_EQ(code_of(r), "permission_denied");
  }
  auto anonymous = c.Delete(at);
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_EQ(anonymous->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(c.Delete(at, {{"Authorization", "Bearer alice-token2"}})->status, 401);
  EXPECT_EQ(c.Get("/healthz")->status, 200) << "/healthz needs no token";
  EXPECT_EQ(c.Get(at, alice)->status, 200) << "alice's allocation survived every attempt";
  EXPECT_EQ(c.Delete(at, with(alice, "X-Memd-Owner", "alice"))->status, 200) << "an agreeing label is fine";
}

TEST_F(OwnershipRestWithTokens, TheSingleTokenStaysTheAdmins) {
  Daemon daemon({"--tokens", tokens_, "--token", "single-admin"});
  ASSERT_FALSE(daemon.url().empty());
  httplib::Client c(daemon.url());
  auto made = c.Post("/api/memory/allocations", {{"Authorization", "Bearer alice-token"}}, R"({"sizeBytes": 1})",
                     "application/json");
  const std::string at = "/api/memory/allocations/" + json::parse(made->body)["allocationId"].get<std::string>();
  auto freed = c.Delete(at, {{"Authorization", "Bearer single-admin"}, {"X-Memd-Owner", "ops"}});
  EXPECT_EQ(freed->status, 200) << freed->body;
}

// Sends raw bytes (a header no client library would write) and returns
// everything the server answers until it closes.
std::string raw_exchange(const std::string& url, const std::string& request) {
  Socket socket(std::stoi(url.substr(url.rfind(':') + 1)));
  if (!socket.ok() || !socket.send(request)) return "";
  return socket.until_closed(milliseconds(5000));
}

TEST(OwnershipRest, HostileOwnerNamesAreRefusedAsHeaderAndParameter) {
  Daemon daemon;
  ASSERT_FALSE(daemon.url().empty());
  const std::string nul("ali\0ce", 6);
  for (const std::string& bad : {nul, std::string("alice\xe2\x80\xae"), std::string("ali\xff"),
                                 std::string(129, 'o'), std::string("")}) {
    const auto response = raw_exchange(daemon.url(), "GET /api/memory/allocations HTTP/1.1\r\nHost: memd\r\n"
                                                     "X-Memd-Owner: " + bad + "\r\nConnection: close\r\n\r\n");
    EXPECT_TRUE(response.starts_with("HTTP/1.1 400")) << response.substr(0, 200);
    EXPECT_NE(response.find("invalid_argument"), std::string::npos) << response.substr(0, 300);
  }
  httplib::Client c(daemon.url());
  for (const char* bad : {"%00", "ali%00ce", "alice%E2%80%AE", "ali%FF", "", "%0Aforged"}) {
    auto r = c.Get(std::string("/api/memory/allocations?owner=") + bad, {{"X-Memd-Admin", "true"}});
    EXPECT_EQ(r->status, 400) << bad << ": " << r->body;
    EXPECT_EQ(code_of(r), "invalid_argument") << bad;
  }
  auto long_param = c.Post("/api/memory/clear", {{"X-Memd-Admin", "true"}},
                           json{{"owner", std::string(129, 'o')}}.dump(), "application/json");
  EXPECT_EQ(long_param->status, 400);
  auto ok = c.Get("/api/memory/allocations?owner=" + std::string(128, 'o'), {{"X-Memd-Admin", "true"}});
  EXPECT_EQ(ok->status, 200) << ok->body;
  // The daemon still serves, and nobody was created by any of it.
  EXPECT_TRUE(json::parse(c.Get("/api/memory/usage")->body)["byOwner"].empty());
}

}  // namespace
}  // namespace memd::testing
