// Sessions through both doors of the real binary: over REST a lapsed lease
// (the daemon's own reaper, 1 s sweeps) releases what was allocated in it,
// closing releases, heartbeats keep a lease, another owner's session is 403,
// a malformed id 400, an unknown one 404; over stdio a line's "session"
// works the same, and the host's exit ends its sessions.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "server/child_process.hpp"
#include "server/daemon.hpp"
#include "server/doors_support.hpp"

namespace memd::testing {
namespace {

using Headers = httplib::Headers;
using namespace std::chrono_literals;

std::string code_of(const httplib::Result& r) {
  if (!r) return "transport";
  auto j = json::parse(r->body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
}

class SessionsRest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(daemon_.url().empty());
    client_ = std::make_unique<httplib::Client>(daemon_.url());
  }
  std::string open(const Headers& who, int ttl) {
    auto r = client_->Post("/api/sessions", who, json{{"ttlSeconds", ttl}}.dump(), "application/json");
    EXPECT_EQ(r->status, 201) << r->body;
    const auto body = json::parse(r->body);
    EXPECT_EQ(body["ttlSeconds"], ttl);
    return body["sessionId"];
  }
  std::string allocate(const Headers& who, int status = 201) {
    auto r = client_->Post("/api/memory/allocations", who, R"({"sizeBytes": 4096, "deviceId": "host:0"})",
                           "application/json");
    EXPECT_EQ(r->status, status) << r->body;
    return status == 201 ? json::parse(r->body)["allocationId"].get<std::string>() : r->body;
  }
  std::uint64_t held_by(const std::string& owner) {
    auto usage = json::parse(client_->Get("/api/memory/usage")->body);
    return usage["byOwner"].contains(owner) ? usage["byOwner"][owner]["allocations"].get<std::uint64_t>() : 0;
  }
  static Headers in(Headers who, const std::string& session) {
    who.emplace("X-Memd-Session", session);
    return who;
  }

  Daemon daemon_;
  std::unique_ptr<httplib::Client> client_;
  const Headers alice_{{"X-Memd-Owner", "alice"}};
  const Headers mallory_{{"X-Memd-Owner", "mallory"}};
};

TEST_F(SessionsRest, ALapsedSessionsAllocationsAreReleased) {
  const std::string session = open(alice_, 1);
  const std::string a = allocate(in(alice_, session)), b = allocate(in(alice_, session));
  const std::string outside = allocate(alice_);
  EXPECT_EQ(held_by("alice"), 3u);
  // No heartbeat: within the lease plus a sweep or two, the two are gone.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (held_by("alice") != 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
  EXPECT_EQ(held_by("alice"), 1u) << "a lapsed session's allocations were not released within 10 s";
  EXPECT_EQ(client_->Get("/api/memory/allocations/" + a, alice_)->status, 404);
  EXPECT_EQ(client_->Get("/api/memory/allocations/" + outside, alice_)->status, 200);
  auto late = client_->Post("/api/memory/allocations", in(alice_, session), R"({"sizeBytes": 1})", "application/json");
  EXPECT_EQ(late->status, 404);
  EXPECT_NE(late->body.find("lapsed"), std::string::npos) << late->body;
  EXPECT_EQ(json::parse(client_->Get("/api/sessions", alice_)->body)["sessions"].size(), 0u);
}

TEST_F(SessionsRest, HeartbeatsKeepALeaseAndCloseReleases) {
  const std::string session = open(alice_, 2);
  const std::string a = allocate(in(alice_, session));
  for (int i = 0; i < 6; ++i) {  // 3 s of a 2 s lease, renewed every 0.5 s
    std::this_thread::sleep_for(500ms);
    auto beat = client_->Put("/api/sessions/" + session, alice_, "", "application/json");
    ASSERT_EQ(beat->status, 200) << beat->body;
  }
  EXPECT_EQ(client_->Get("/api/memory/allocations/" + a, alice_)->status, 200);
  auto listed = json::parse(client_->Get("/api/sessions", alice_)->body)["sessions"];
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["allocations"], 1);
  auto closed = client_->Delete("/api/sessions/" + session, alice_);
  ASSERT_EQ(closed->status, 200) << closed->body;
  const auto report = json::parse(closed->body);
  EXPECT_EQ(report["releasedAllocations"], 1);
  EXPECT_EQ(report["releasedBytes"], 4096);
  EXPECT_EQ(report["allocationIds"][0], a);
  EXPECT_EQ(held_by("alice"), 0u);
  auto again = client_->Delete("/api/sessions/" + session, alice_);
  EXPECT_EQ(again->status, 404);
  EXPECT_NE(again->body.find("was closed"), std::string::npos) << again->body;
}

TEST_F(SessionsRest, ForeignUnknownAndMalformedSessions) {
  const std::string session = open(alice_, 60);
  auto stolen = client_->Post("/api/memory/allocations", in(mallory_, session), R"({"sizeBytes": 1})",
                              "application/json");
  EXPECT_EQ(stolen->status, 403);
  EXPECT_EQ(code_of(stolen), "permission_denied");
  EXPECT_EQ(client_->Put("/api/sessions/" + session, mallory_, "", "application/json")->status, 403);
  EXPECT_EQ(client_->Delete("/api/sessions/" + session, mallory_)->status, 403);
  EXPECT_EQ(json::parse(client_->Get("/api/sessions", mallory_)->body)["sessions"].size(), 0u);

  auto garbage = client_->Get("/api/memory/status", in(alice_, "not-a-session"));
  EXPECT_EQ(garbage->status, 400);
  EXPECT_NE(garbage->body.find("X-Memd-Session"), std::string::npos) << garbage->body;
  EXPECT_EQ(code_of(client_->Delete("/api/sessions/not-a-session", alice_)), "invalid_argument");
  auto unknown = client_->Get("/api/memory/status", in(alice_, "a1b2c3d4-e5f6-4890-abcd-ef1234567890"));
  EXPECT_EQ(unknown->status, 404);
  EXPECT_NE(unknown->body.find("never opened"), std::string::npos) << unknown->body;
  for (const char* ttl : {"0", "86401", "\"60\"", "-1", "1.5", "null"}) {
    auto r = client_->Post("/api/sessions", alice_, std::string(R"({"ttlSeconds": )") + ttl + "}", "application/json");
    EXPECT_EQ(r->status, 400) << ttl << ": " << r->body;
  }
  // The admin may end anyone's session.
  auto closed = client_->Delete("/api/sessions/" + session, {{"X-Memd-Owner", "ops"}, {"X-Memd-Admin", "true"}});
  EXPECT_EQ(closed->status, 200) << closed->body;
}

TEST(SessionsStdio, ALineNamesItsSessionAndTheHostsExitEndsIt) {
  ChildProcess memd({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "stdio", "--owner", "host-a"});
  ASSERT_TRUE(memd.started());
  auto call = [&](const std::string& line) {
    auto reply = memd.call(line);
    EXPECT_TRUE(reply) << line;
    return reply ? json::parse(*reply) : json();
  };
  auto opened = call(R"({"id": 1, "action": "memory_session_open", "params": {"ttlSeconds": 60}})");
  ASSERT_TRUE(opened["ok"]) << opened.dump();
  EXPECT_EQ(opened["result"]["owner"], "host-a");
  const std::string session = opened["result"]["sessionId"];
  auto made = call(R"({"id": 2, "action": "memory_allocate", "params": {"sizeBytes": 4096, "deviceId": "host:0"}, "session": ")" +
                   session + "\"}");
  ASSERT_TRUE(made["ok"]) << made.dump();
  auto listed = call(R"({"id": 3, "action": "memory_sessions"})");
  EXPECT_EQ(listed["result"]["sessions"][0]["allocations"], 1);
  auto bad = call(R"({"id": 4, "action": "memory_usage", "session": "nope"})");
  EXPECT_FALSE(bad["ok"]);
  EXPECT_EQ(bad["error"]["code"], "invalid_argument");
  auto closed = call(R"({"id": 5, "action": "memory_session_close", "params": {"sessionId": ")" + session + "\"}}");
  ASSERT_TRUE(closed["ok"]) << closed.dump();
  EXPECT_EQ(closed["result"]["releasedAllocations"], 1);
  auto late = call(R"({"id": 6, "action": "memory_allocate", "params": {"sizeBytes": 1}, "session": ")" + session + "\"}");
  EXPECT_EQ(late["error"]["code"], "not_found");
  memd.close_stdin();
  EXPECT_EQ(memd.wait(), 0);
}

}  // namespace
}  // namespace memd::testing

namespace memd::testing {
namespace {

// POST /api/stdio (the bridge's route) under hostile input: whatever the
// line, the answer is a stdio response line, never a dropped connection,
// and the caller's owner rules hold inside it.
TEST(StdioOverHttp, HostileLinesAreAnsweredInBandAndOwnersHold) {
  Daemon daemon;
  httplib::Client client(daemon.url());
  const httplib::Headers alice{{"X-Memd-Owner", "alice"}}, mallory{{"X-Memd-Owner", "mallory"}};
  auto line = [&](const httplib::Headers& who, const std::string& body) {
    auto r = client.Post("/api/stdio", who, body, "application/json");
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, 200) << body << " → " << r->body;
    return json::parse(r->body);
  };
  for (const std::string bad : {"not json", "[1,2]", "{}", R"({"id":7,"action":42})",
                                R"({"id":7,"action":"no_such_action"})", R"({"id":{"a":1},"action":"memory_status","params":3})",
                                R"({"id":7,"action":"memory_status","session":"not-a-guid"})"}) {
    const json got = line(alice, bad);
    EXPECT_EQ(got.value("ok", true), false) << bad;
    EXPECT_TRUE(got.contains("error")) << bad;
  }
  EXPECT_EQ(line(alice, R"({"id":{"a":1},"action":"memory_status","params":3})")["id"], json({{"a", 1}}));

  const json made = line(alice, R"({"id":1,"action":"memory_allocate","params":{"sizeBytes":4096,"deviceId":"host:0"}})");
  ASSERT_TRUE(made["ok"].get<bool>()) << made;
  const std::string id = made["result"]["allocationId"];
  const json stolen =
      line(mallory, R"({"id":2,"action":"memory_deallocate","params":{"allocationId":")" + id + "\"}}");
  EXPECT_EQ(stolen["error"]["code"], "permission_denied") << stolen;
  // Not the stdio host: a bridged caller is no admin unless it asks (loopback, no tokens).
  const json limit = line(alice, R"({"id":3,"action":"memory_limits","params":{"owner":"alice","bytes":"1MiB"}})");
  EXPECT_EQ(limit["error"]["code"], "permission_denied") << limit;
  // A JSON route: another content type is refused before the body is read.
  auto typed = client.Post("/api/stdio", alice, R"({"id":1,"action":"memory_status"})", "text/plain");
  ASSERT_TRUE(typed);
  EXPECT_EQ(typed->status, 415);
  auto wrong_method = client.Get("/api/stdio", alice);
  ASSERT_TRUE(wrong_method);
  EXPECT_EQ(wrong_method->status, 405);
  EXPECT_EQ(wrong_method->get_header_value("Allow"), "POST");
  EXPECT_TRUE(line(alice, R"({"id":4,"action":"memory_deallocate","params":{"allocationId":")" + id + "\"}}")["ok"]);
}

}  // namespace
}  // namespace memd::testing
