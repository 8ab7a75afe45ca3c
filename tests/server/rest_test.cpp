// `memd serve` over real HTTP: every route, the data plane, limits, hostile
// input, body limits and the bearer token — and allocations made before the
// abuse are intact after it.
#include <gtest/gtest.h>

#include "server/child_process.hpp"
#include "server/daemon.hpp"
#include "server/doors_support.hpp"

namespace memd::testing {
namespace {

json body_of(const httplib::Result& r) { return json::parse(r->body); }

// Allocations are their owner's: the tests act as the owner that made them,
// and set limits as the admin.
const httplib::Headers kTester{{"X-Memd-Owner", "tester"}};
const httplib::Headers kAdmin{{"X-Memd-Owner", "ops"}, {"X-Memd-Admin", "true"}};

std::string error_code(const httplib::Result& r) {
  if (!r) return "transport";
  auto j = json::parse(r->body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
}

class RestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(daemon_.url().empty());
    client_ = std::make_unique<httplib::Client>(daemon_.url());
  }
  std::string allocate(const std::string& size, const std::string& owner = "tester") {
    auto r = client_->Post("/api/memory/allocations", {{"X-Memd-Owner", owner}},
                           json{{"sizeBytes", size}, {"deviceId", "host:0"}}.dump(), "application/json");
    EXPECT_EQ(r->status, 201) << r->body;
    return body_of(r)["allocationId"];
  }
  Daemon daemon_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(RestTest, EveryReadRouteAnswers) {
  for (const char* path : {"/healthz", "/api/memory/status", "/api/memory/status/host:0", "/api/memory/usage",
                           "/api/memory/allocations", "/api/memory/limits", "/api/memory/devices",
                           "/api/openapi.json"}) {
    auto r = client_->Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 200) << path << " " << r->body;
    EXPECT_TRUE(json::parse(r->body).is_object()) << path;
  }
  auto openapi = body_of(client_->Get("/api/openapi.json"));
  for (const auto& a : action_table())
    for (const auto& route : a.routes) EXPECT_TRUE(openapi["paths"].contains(std::string(route.path)));
  EXPECT_EQ(client_->Post("/api/memory/optimize", "", "application/json")->status, 200);
  EXPECT_EQ(client_->Post("/api/memory/clear", "{}", "application/json")->status, 200);
}

TEST_F(RestTest, AllocateWriteReadFreeAndLimits) {
  const std::string id = allocate("1MiB");
  const std::string payload = "binary\0data\xff", with_nul(payload.data(), 12);
  auto put = client_->Put("/api/memory/allocations/" + id + "/data?offset=100", kTester, with_nul,
                          "application/octet-stream");
  ASSERT_EQ(put->status, 200) << put->body;
  EXPECT_EQ(body_of(put)["bytesWritten"], 12);
  auto get = client_->Get("/api/memory/allocations/" + id + "/data?offset=100&length=12", kTester);
  ASSERT_EQ(get->status, 200);
  EXPECT_EQ(get->get_header_value("Content-Type"), "application/octet-stream");
  EXPECT_EQ(get->body, with_nul);
  EXPECT_EQ(body_of(client_->Get("/api/memory/allocations/" + id, kTester))["sizeBytes"], 1048576);
  auto listed = body_of(client_->Get("/api/memory/allocations?owner=tester&limit=5", kTester));
  EXPECT_EQ(listed["total"], 1);

  auto limit = client_->Put("/api/memory/limits", kAdmin, json{{"owner", "tester"}, {"bytes", "1MiB"}}.dump(),
                            "application/json");
  ASSERT_EQ(limit->status, 200) << limit->body;
  auto over = client_->Post("/api/memory/allocations", {{"X-Memd-Owner", "tester"}},
                            json{{"sizeBytes", 4096}, {"deviceId", "host:0"}}.dump(), "application/json");
  EXPECT_EQ(over->status, 507);
  EXPECT_EQ(error_code(over), "quota_exceeded");
  EXPECT_NE(body_of(over)["error"]["message"].get<std::string>().find("1048576"), std::string::npos);
  // GET never changes limits, whatever its query says.
  EXPECT_EQ(body_of(client_->Get("/api/memory/limits?owner=tester"))["perOwner"]["tester"], 1048576);

  auto del = client_->Delete("/api/memory/allocations/" + id, kTester);
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(body_of(del)["status"], "Freed");
  auto again = client_->Delete("/api/memory/allocations/" + id, kTester);
  EXPECT_EQ(again->status, 404);
  EXPECT_EQ(error_code(again), "not_found");
  EXPECT_EQ(client_->Get("/healthz")->status, 200);  // still serving
}

TEST_F(RestTest, HostileInputGetsItsCodeAndLeavesAllocationsIntact) {
  const std::string id = allocate("64KiB");
  ASSERT_EQ(client_->Put("/api/memory/allocations/" + id + "/data", kTester, "precious", "application/octet-stream")->status,
            200);

  auto post = [&](const std::string& body) {
    return client_->Post("/api/memory/allocations", body, "application/json");
  };
  EXPECT_EQ(error_code(post("{")), "invalid_argument");
  EXPECT_EQ(error_code(post("[1,2]")), "invalid_argument");
  EXPECT_EQ(error_code(post(R"({"sizeBytes": true})")), "invalid_argument");
  EXPECT_EQ(error_code(post(R"({"sizeBytes": -1})")), "invalid_argument");
  EXPECT_EQ(error_code(post(R"({"sizeBytes": 9223372036854775808})")), "invalid_argument");
  EXPECT_EQ(error_code(post(R"({"sizeBytes": 1.5})")), "invalid_argument");
  EXPECT_EQ(error_code(post(R"({"sizeBytes": 1, "memoryType": "HBM"})")), "invalid_argument");
  EXPECT_EQ(post("{")->status, 400);
  EXPECT_EQ(error_code(post(std::string(4000, '['))), "invalid_argument");  // deep, under the body limit
  auto big = post(std::string(100000, '['));                                // over --max-body 4KiB
  EXPECT_EQ(big->status, 413);
  EXPECT_EQ(error_code(big), "payload_too_large");
  auto big_upload = client_->Put("/api/memory/allocations/" + id + "/data", std::string(100 * 1024, 'x'),
                                 "application/octet-stream");
  EXPECT_EQ(error_code(big_upload), "payload_too_large");
  EXPECT_EQ(error_code(client_->Get("/api/memory/allocations/not-a-guid")), "invalid_argument");
  EXPECT_EQ(error_code(client_->Get("/api/memory/allocations/a1b2c3d4-e5f6-4890-abcd-ef1234567890")), "not_found");
  EXPECT_EQ(error_code(client_->Get("/api/memory/status/gpu7")), "invalid_argument");
  EXPECT_EQ(error_code(client_->Get("/api/memory/status/cuda:7")), "not_found");
  auto unknown = client_->Get("/api/memory/nothing");
  EXPECT_EQ(unknown->status, 404);
  EXPECT_EQ(error_code(unknown), "not_found");
  // Well-formed, but outside the allocation: out_of_range (416), not a shape error.
  auto outside = client_->Get("/api/memory/allocations/" + id + "/data?offset=65530&length=10", kTester);
  EXPECT_EQ(error_code(outside), "out_of_range");
  EXPECT_EQ(outside->status, 416);
  EXPECT_EQ(error_code(client_->Put("/api/memory/allocations/" + id + "/data?offset=65535", kTester, "ab",
                                    "application/octet-stream")),
            "out_of_range");
  EXPECT_EQ(error_code(client_->Get("/api/memory/allocations?limit=abc")), "invalid_argument");

  auto back = client_->Get("/api/memory/allocations/" + id + "/data?length=8", kTester);
  ASSERT_EQ(back->status, 200);
  EXPECT_EQ(back->body, "precious");
  EXPECT_EQ(body_of(client_->Get("/api/memory/usage"))["total"]["allocations"], 1);
}

TEST(RestAuth, TokenProtectsAllButHealthz) {
  Daemon daemon({"--token", "s3cret"});
  ASSERT_FALSE(daemon.url().empty());
  httplib::Client client(daemon.url());
  EXPECT_EQ(client.Get("/healthz")->status, 200);
  auto missing = client.Get("/api/memory/status");
  EXPECT_EQ(missing->status, 401);
  EXPECT_EQ(error_code(missing), "unauthenticated");
  EXPECT_EQ(client.Get("/api/memory/status", {{"Authorization", "Bearer wrong"}})->status, 401);
  EXPECT_EQ(client.Post("/api/memory/allocations", R"({"sizeBytes":1})", "application/json")->status, 401);
  client.set_bearer_token_auth("s3cret");
  EXPECT_EQ(client.Get("/api/memory/status")->status, 200);
}

TEST(RestAuth, NonLoopbackWithoutTokenRefusesToStart) {
  ChildProcess memd({MEMD_BINARY, "--no-cuda", "serve", "--listen", "0.0.0.0:0"});
  EXPECT_FALSE(memd.read_line(std::chrono::seconds(5)));
  EXPECT_NE(memd.wait(), 0);
}

}  // namespace
}  // namespace memd::testing
