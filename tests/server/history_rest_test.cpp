// Allocation history over real HTTP, through the `memd serve` binary: three
// owners fill the 64 MiB host device, a fourth request fails 507
// out_of_memory with a snapshotId in its error body, and GET
// /api/memory/history/{snapshotId} shows exactly the allocations that filled
// the device (ids, owners, names, sizes, in order) with the block map
// accounting for each. Who may read it, and hostile parameters answered with
// their codes while the daemon keeps serving.
#include <gtest/gtest.h>

#include <set>

#include "server/daemon.hpp"
#include "server/doors_support.hpp"

namespace memd::testing {
namespace {

using Headers = httplib::Headers;

Headers as(const std::string& owner) { return {{"X-Memd-Owner", owner}}; }
const Headers kAdmin{{"X-Memd-Owner", "ops"}, {"X-Memd-Admin", "true"}};

json body_of(const httplib::Result& r) { return r ? json::parse(r->body, nullptr, false) : json(); }

std::string code_of(const httplib::Result& r) {
  auto j = body_of(r);
  return j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
}

class HistoryRest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(daemon_.url().empty());
    client_ = std::make_unique<httplib::Client>(daemon_.url());
  }

  json allocate(const std::string& owner, const std::string& size, const std::string& name, int expect = 201) {
    auto r = client_->Post("/api/memory/allocations", as(owner),
                           json{{"sizeBytes", size}, {"deviceId", "host:0"}, {"name", name}}.dump(),
                           "application/json");
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, expect) << r->body;
    return json::parse(r->body);
  }

  Daemon daemon_;
  std::unique_ptr<httplib::Client> client_;
};

TEST_F(HistoryRest, OutOfMemoryNamesASnapshotWhoseHistoryShowsWhatFilledTheDevice) {
  const std::vector<json> filled = {allocate("alice", "16MiB", "weights"), allocate("bob", "12MiB", "kv-cache"),
                                    allocate("carol", "16MiB", "activations"), allocate("alice", "8MiB", "scratch")};
  const json refused = allocate("bob", "16MiB", "more kv", 507);
  ASSERT_EQ(refused["error"]["code"], "out_of_memory") << refused.dump();
  ASSERT_TRUE(refused["error"].contains("snapshotId")) << refused.dump();
  const std::string id = refused["error"]["snapshotId"];
  EXPECT_NE(refused["error"]["message"].get<std::string>().find("memd history " + id), std::string::npos);

  auto got = client_->Get("/api/memory/history/" + id, kAdmin);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->status, 200) << got->body;
  const json s = json::parse(got->body);
  EXPECT_EQ(s["snapshotId"], id);
  EXPECT_EQ(s["request"]["owner"], "bob");
  EXPECT_EQ(s["request"]["sizeBytes"], 16u << 20);
  EXPECT_EQ(s["request"]["refusedBy"], "pool");

  // The device's history: the four allocations, in order, then the failure.
  const json& history = s["history"];
  ASSERT_EQ(history.size(), filled.size() + 1) << history.dump();
  for (std::size_t i = 0; i < filled.size(); ++i) {
    EXPECT_EQ(history[i]["kind"], "allocate") << i;
    EXPECT_EQ(history[i]["allocationId"], filled[i]["allocationId"]) << i;
    EXPECT_EQ(history[i]["owner"], filled[i]["owner"]) << i;
    EXPECT_EQ(history[i]["name"], filled[i]["name"]) << i;
    EXPECT_EQ(history[i]["sizeBytes"], filled[i]["sizeBytes"]) << i;
    EXPECT_EQ(history[i]["liveAllocations"], i + 1) << i;
  }
  EXPECT_EQ(history.back()["kind"], "failed");
  EXPECT_EQ(history.back()["snapshotId"], id);
  EXPECT_EQ(history.back()["code"], "out_of_memory");

  // The block map: one allocated block per allocation, at its address.
  std::set<std::string> seen;
  std::uint64_t live = 0;
  for (const auto& seg : s["segments"]) {
    live += seg["liveBytes"].get<std::uint64_t>();
    for (const auto& b : seg["blocks"]) {
      if (b["state"] == "free") continue;
      ASSERT_TRUE(b["allocation"].is_object()) << b.dump();
      seen.insert(b["allocation"]["allocationId"].get<std::string>());
      auto it = std::find_if(filled.begin(), filled.end(),
                             [&](const json& f) { return f["allocationId"] == b["allocation"]["allocationId"]; });
      ASSERT_NE(it, filled.end());
      EXPECT_EQ(b["address"], (*it)["address"]);
      EXPECT_GE(b["sizeBytes"].get<std::uint64_t>(), (*it)["sizeBytes"].get<std::uint64_t>());
    }
  }
  EXPECT_EQ(seen.size(), filled.size());
  EXPECT_GE(live, 52u << 20);
  EXPECT_EQ(s["holders"][0]["owner"], "alice");
  EXPECT_EQ(s["holders"][0]["bytes"], 24u << 20);

  // bob, whose request failed, sees the others by size only; mallory nothing.
  auto bobs = client_->Get("/api/memory/history/" + id, as("bob"));
  ASSERT_EQ(bobs->status, 200) << bobs->body;
  const json b = json::parse(bobs->body);
  EXPECT_TRUE(b["history"][0]["hidden"].get<bool>());
  EXPECT_TRUE(b["history"][0]["owner"].is_null());
  EXPECT_TRUE(b["history"][0]["allocationId"].is_null());
  EXPECT_EQ(b["history"][0]["sizeBytes"], 16u << 20);
  EXPECT_EQ(b["history"][1]["owner"], "bob");
  auto mallory = client_->Get("/api/memory/history/" + id, as("mallory"));
  EXPECT_EQ(mallory->status, 403);
  EXPECT_EQ(code_of(mallory), "permission_denied");

  // The recent history, through the same door.
  auto recent = client_->Get("/api/memory/history?deviceId=host:0&limit=2", kAdmin);
  ASSERT_EQ(recent->status, 200) << recent->body;
  const json r = json::parse(recent->body);
  ASSERT_EQ(r["entries"].size(), 2u);
  EXPECT_EQ(r["entries"][0]["allocationId"], filled[3]["allocationId"]);
  EXPECT_EQ(r["entries"][1]["snapshotId"], id);
  EXPECT_EQ(r["ringCapacity"], 4096);
  auto alices = json::parse(client_->Get("/api/memory/history", as("alice"))->body);
  EXPECT_EQ(alices["entries"].size(), 2u) << "alice sees her own entries only";
}

TEST_F(HistoryRest, HostileParametersAreRefusedAndTheDaemonKeepsServing) {
  allocate("alice", "1MiB", "one");
  const std::pair<std::string, std::pair<int, std::string>> cases[] = {
      {"/api/memory/history/not-a-snapshot", {400, "invalid_argument"}},
      {"/api/memory/history/12345678-1234-1234-1234-1234567890a", {400, "invalid_argument"}},
      {"/api/memory/history/%00%ff", {400, "invalid_argument"}},
      {"/api/memory/history/12345678-1234-4234-8234-1234567890ab", {404, "not_found"}},
      {"/api/memory/history?limit=0", {400, "invalid_argument"}},
      {"/api/memory/history?limit=4097", {400, "invalid_argument"}},
      {"/api/memory/history?limit=99999999999999999999999", {400, "invalid_argument"}},
      {"/api/memory/history?limit=-1", {400, "invalid_argument"}},
      {"/api/memory/history?limit=ten", {400, "invalid_argument"}},
      {"/api/memory/history?deviceId=gpu:0", {400, "invalid_argument"}},
      {"/api/memory/history?deviceId=host:9", {404, "not_found"}},
      {"/api/memory/history?owner=%07bell", {400, "invalid_argument"}},
      {"/api/memory/history?owner=bob", {403, "permission_denied"}},
  };
  for (const auto& [target, want] : cases) {
    auto r = client_->Get(target, as("alice"));
    ASSERT_TRUE(r) << target;
    EXPECT_EQ(r->status, want.first) << target << ": " << r->body;
    EXPECT_EQ(code_of(r), want.second) << target;
  }
  auto r = client_->Get("/api/memory/history?limit=4096", as("alice"));
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["entries"].size(), 1u);
}

}  // namespace
}  // namespace memd::testing
