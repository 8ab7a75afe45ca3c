// Issue 14's must-show test: analytics and recommendations on a scripted
// scenario whose right answers are known in advance; then each
// recommendation's action is carried out through the action table, and what
// it frees must be within 10 % of what it predicted.
//
// The service samples only when told (monitor interval 0) and analytics runs
// on a scripted clock, one second per step, so every number of the series is
// exact. Allocations are whole 256-byte units (their pool blocks equal their
// sizes).
#include <gtest/gtest.h>

#include <memory>

#include "memd/iso8601.hpp"
#include "memd/size.hpp"
#include "protocol/action_table.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using TP = std::chrono::system_clock::time_point;

class AnalyticsScenario : public ::testing::Test {
 protected:
  void SetUp() override {
    *clock_ = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    ServiceOptions options;
    options.backends.host_device_sizes = {1 * kGiB};
    options.backends.enable_cuda = false;
    options.session_sweep_interval = 0ms;
    options.monitor.interval = 0ms;
    options.analytics.clock = [c = clock_] { return *c; };
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
    t0_ = *clock_;
  }

  Result<AllocationRecord> allocate(const std::string& owner, std::uint64_t bytes) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = DeviceId::host(0);
    return service_->allocate(Caller::as(owner), r);
  }
  // One second passes, then the monitor samples.
  void tick() {
    *clock_ += 1s;
    service_->monitor().sample_now();
  }
  Result<Outcome> call(std::string_view action, const json& params) {
    const Action* a = find_action(action);
    if (a == nullptr) return fail(ErrorCode::not_found, "no action {}", action);
    CallContext ctx;
    ctx.caller = Caller::host("ops");
    return dispatch(*service_, *a, params, ctx);
  }
  std::uint64_t requested() const {
    std::uint64_t total = 0;
    for (const auto& [owner, use] : service_->manager().usage_by_owner()) total += use.bytes;
    return total;
  }
  std::uint64_t reserved() const {
    std::uint64_t total = 0;
    for (const auto& [key, stats] : service_->manager().pool_stats()) total += stats.reserved_bytes;
    return total;
  }

  std::shared_ptr<TP> clock_ = std::make_shared<TP>();
  TP t0_;
  std::unique_ptr<MemoryService> service_;
};

void expect_field(const json& f, double min, double mean, double max, double p95, const char* name) {
  SCOPED_TRACE(name);
  EXPECT_DOUBLE_EQ(f["min"].get<double>(), min);
  EXPECT_DOUBLE_EQ(f["mean"].get<double>(), mean);
  EXPECT_DOUBLE_EQ(f["max"].get<double>(), max);
  EXPECT_DOUBLE_EQ(f["p95"].get<double>(), p95);
}

TEST_F(AnalyticsScenario, AnalyticsAndRecommendationsAreRightAndTheirActionsFreeWhatTheyPredict) {
  // ---- the script: the service's first sample (0 bytes) is at t0 ----------
  auto a1 = allocate("alice", 64 * kMiB);  // t0+1: 64 MiB
  ASSERT_TRUE(a1) << a1.error().message;
  tick();
  auto b1 = allocate("bob", 32 * kMiB);  // t0+2: 96 MiB
  ASSERT_TRUE(b1);
  tick();
  auto a2 = allocate("alice", 128 * kMiB);  // t0+3: 224 MiB
  ASSERT_TRUE(a2);
  tick();
  ASSERT_TRUE(service_->deallocate(Caller::as("bob"), b1->id));  // t0+4: 192 MiB
  tick();
  // carol: an owner limit of 16 MiB; 8 MiB fits, 24 MiB more does not
  // (16 MiB short); alice's 2 GiB does not fit the 1 GiB device at all.
  LimitUpdate limit;
  limit.owner = "carol";
  limit.bytes = 16 * kMiB;
  ASSERT_TRUE(service_->update_limits(Caller::host("ops"), limit));
  auto c1 = allocate("carol", 8 * kMiB);  // t0+5: 200 MiB
  ASSERT_TRUE(c1);
  EXPECT_EQ(allocate("carol", 24 * kMiB).error().code, ErrorCode::quota_exceeded);
  EXPECT_EQ(allocate("alice", 2 * kGiB).error().code, ErrorCode::out_of_memory);
  const TP failed_at = *clock_;
  tick();

  // ---- analytics over the last 6 s: exact ---------------------------------
  auto out = call("memory_analytics", {{"deviceId", "host:0"}, {"windowSeconds", 6}, {"detail", "points"}});
  ASSERT_TRUE(out) << out.error().message;
  const json& r = out->result;
  ASSERT_EQ(r["devices"].size(), 1u);
  const json& d = r["devices"][0];
  EXPECT_EQ(d["deviceId"], "host:0");
  EXPECT_EQ(d["resolution"], "1s");
  EXPECT_EQ(d["samples"], 6);
  EXPECT_EQ(d["points"].size(), 6u);
  const double M = static_cast<double>(kMiB);
  // allocated: 0, 64, 96, 224, 192, 200 MiB → mean 776/6 MiB; p95 is rank 6 of 6.
  expect_field(d["fields"]["allocatedBytes"], 0, 776 * M / 6, 224 * M, 224 * M, "allocatedBytes");
  // Allocations per second: 1, 1, 1, 0, 1 (carol's 8 MiB; refusals are not
  // allocations); the first sample has no rate.
  expect_field(d["fields"]["allocationsPerSecond"], 0, 0.8, 1, 1, "allocationsPerSecond");
  expect_field(d["fields"]["freesPerSecond"], 0, 0.2, 1, 1, "freesPerSecond");
  EXPECT_EQ(d["fields"]["allocationsPerSecond"]["min"], 0);
  // The used bytes are the driver's (host:0 counts committed pages): at least
  // what memd reserved, every sample.
  EXPECT_GE(d["fields"]["usedBytes"]["min"].get<double>(), 0);
  EXPECT_GE(d["fields"]["usedBytes"]["max"].get<double>(), d["fields"]["reservedBytes"]["max"].get<double>());
  EXPECT_EQ(d["failures"]["outOfMemory"], 1);
  EXPECT_EQ(d["failures"]["quotaExceeded"], 1);
  EXPECT_EQ(d["failures"]["lastAt"], iso8601(failed_at));
  EXPECT_EQ(r["failures"], d["failures"]);
  // Owners: alice 192 MiB in 2, carol 8 MiB in 1; bob holds nothing.
  EXPECT_EQ(r["topOwners"], json::parse(R"([{"owner": "alice", "requestedBytes": 201326592, "allocations": 2},
                                           {"owner": "carol", "requestedBytes": 8388608, "allocations": 1}])"));
  out = call("memory_analytics", {{"topOwners", 1}, {"windowSeconds", 6}});
  ASSERT_TRUE(out);
  EXPECT_EQ(out->result["topOwners"].size(), 1u);
  EXPECT_EQ(out->result["devices"].size(), service_->devices().size());
  EXPECT_EQ(out->result["transfers"]["samples"], 6);
  expect_field(out->result["transfers"]["fields"]["transferBytesPerSecond"], 0, 0, 0, 0, "transfers");
  ASSERT_TRUE(service_->analytics_state().validate());

  // ---- recommendations, 20 minutes later ----------------------------------
  *clock_ += 20min;
  const bool can_defragment = find_action("memory_defragment") != nullptr;
  out = call("memory_optimization", {{"deviceId", "host:0"}});
  ASSERT_TRUE(out) << out.error().message;
  // memory_defragment is being built alongside: while it is absent nothing
  // recommends it; once present its recommendations are carried out below
  // too, and the rest of the list must be as scripted.
  json recs = json::array(), defrags = json::array();
  for (const auto& rec : out->result["recommendations"]) (rec["kind"] == "defragment" ? defrags : recs).push_back(rec);
  if (!can_defragment) {
    EXPECT_TRUE(defrags.empty());
    std::printf("note: memory_defragment is not in the action table; its recommendation is not exercised\n");
  }
  std::vector<std::string> kinds;
  for (const auto& rec : recs) kinds.push_back(rec["kind"]);
  for (const auto& rec : recs) std::printf("recommendation: %s\n", rec.dump().c_str());
  // bob's 32 MiB between alice's blocks was mapped in 4 MiB units (peak busy
  // / 64 is below the 4 MiB floor); carol's 8 MiB went to its start (good
  // fit on mapped pages), so 24 MiB of whole units are free, and nothing
  // else is.
  std::vector<std::string> expected = {"free_idle", "free_idle", "release_cached", "free_idle", "raise_limit"};
  EXPECT_EQ(kinds, expected);
  ASSERT_EQ(recs.size(), expected.size());
  EXPECT_EQ(recs[0]["action"], json({{"action", "memory_deallocate"}, {"params", {{"allocationId", a2->id.to_string()}}}}));
  EXPECT_EQ(recs[0]["bytesFreed"], 128 * kMiB);
  EXPECT_EQ(recs[1]["action"]["params"]["allocationId"], a1->id.to_string());
  EXPECT_EQ(recs[1]["bytesFreed"], 64 * kMiB);
  EXPECT_EQ(recs[2]["action"], json({{"action", "memory_optimize"}, {"params", json::object()}}));
  EXPECT_EQ(recs[2]["bytesFreed"], 24 * kMiB);
  EXPECT_EQ(recs[3]["action"]["params"]["allocationId"], c1->id.to_string());
  EXPECT_EQ(recs[3]["bytesFreed"], 8 * kMiB);
  EXPECT_EQ(recs[4]["action"], json({{"action", "memory_limits"}, {"params", {{"owner", "carol"}, {"bytes", 32 * kMiB}}}}));
  EXPECT_EQ(recs[4]["bytesFreed"], 0);
  EXPECT_EQ(recs[4]["bytesNeeded"], 16 * kMiB);
  if (defrags.empty()) {
    EXPECT_EQ(out->result["bytesFreed"], (128 + 64 + 24 + 8) * kMiB);
  }
  // With a longer idle threshold nothing is idle yet.
  auto patient = call("memory_optimization", {{"deviceId", "host:0"}, {"idleSeconds", 3600}});
  ASSERT_TRUE(patient);
  for (const auto& rec : patient->result["recommendations"]) EXPECT_NE(rec["kind"], "free_idle");

  // ---- carry each out: within 10 % of the prediction ----------------------
  // The trim first: freeing the others first would hand it more to release
  // than it was asked about (its prediction is for the state it saw).
  auto within = [](std::uint64_t actual, std::uint64_t predicted, const std::string& what) {
    SCOPED_TRACE(what);
    EXPECT_GE(static_cast<double>(actual), 0.9 * static_cast<double>(predicted));
    EXPECT_LE(static_cast<double>(actual), 1.1 * static_cast<double>(predicted));
  };
  std::vector<json> order = {recs[2], recs[0], recs[1], recs[3], recs[4]};
  for (const auto& rec : defrags) order.insert(order.begin(), rec);
  for (const auto& rec : order) {
    const std::string action = rec["action"]["action"];
    const std::uint64_t before_reserved = reserved(), before_requested = requested();
    auto done = call(action, rec["action"]["params"]);
    ASSERT_TRUE(done) << action << ": " << done.error().message;
    if (rec["kind"] == "release_cached") {
      within(before_reserved - reserved(), rec["bytesFreed"], action);
      within(done->result["releasedBytes"], rec["bytesFreed"], action);
    } else if (rec["kind"] == "defragment") {
      // Its bytes are an estimate of what compaction and a trim give back.
      if (rec["bytesFreed"].get<std::uint64_t>() > 0) {
        ASSERT_TRUE(call("memory_optimize", json::object()));
        within(before_reserved - reserved(), rec["bytesFreed"], action);
      }
    } else if (rec["kind"] == "free_idle") {
      within(before_requested - requested(), rec["bytesFreed"], action);
    } else if (rec["kind"] == "raise_limit") {
      // Frees nothing; what it promises is that the refused request now fits.
      EXPECT_EQ(service_->limits().per_owner.at("carol"), 32 * kMiB);
      EXPECT_TRUE(allocate("carol", 24 * kMiB));
    }
  }
  // Now everything of alice's and carol's first is gone: the trim predicted
  // afresh must again be what a trim gives back.
  out = call("memory_optimization", json::object());
  ASSERT_TRUE(out) << out.error().message;
  ASSERT_FALSE(out->result["recommendations"].empty());
  const json top = out->result["recommendations"][0];
  ASSERT_EQ(top["kind"], "release_cached");
  EXPECT_EQ(top["deviceId"], nullptr);
  auto trimmed = call("memory_optimize", json::object());
  ASSERT_TRUE(trimmed);
  within(trimmed->result["releasedBytes"], top["bytesFreed"], "second trim");
  EXPECT_TRUE(service_->validate());
  EXPECT_TRUE(service_->analytics_state().validate());
}

// Bad input for the two actions: a clear error with its code, and the
// service keeps answering.
TEST_F(AnalyticsScenario, HostileParamsAreRefusedAndTheServiceKeepsServing) {
  struct Case {
    const char* action;
    json params;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {"memory_analytics", {{"windowSeconds", 0}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"windowSeconds", -5}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"windowSeconds", 86401}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"windowSeconds", "999999999999999999999"}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"windowSeconds", "five minutes"}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"windowSeconds", 1.5}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"windowSeconds", nullptr}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"resolution", "1h"}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"resolution", "1S"}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"resolution", 1}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"resolution", ""}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"resolution", "1s"}, {"windowSeconds", 7200}}, ErrorCode::out_of_range},
      {"memory_analytics", {{"deviceId", "host:9"}}, ErrorCode::not_found},
      {"memory_analytics", {{"deviceId", "gpu0"}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"topOwners", 1001}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"topOwners", -1}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"detail", true}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"detail", "Points"}}, ErrorCode::invalid_argument},
      {"memory_analytics", {{"detail", 1}}, ErrorCode::invalid_argument},
      {"memory_optimization", {{"deviceId", "cuda:3"}}, ErrorCode::not_found},
      {"memory_optimization", {{"deviceId", 0}}, ErrorCode::invalid_argument},
      {"memory_optimization", {{"idleSeconds", 0}}, ErrorCode::invalid_argument},
      {"memory_optimization", {{"idleSeconds", 2592001}}, ErrorCode::invalid_argument},
      {"memory_optimization", {{"idleSeconds", "soon"}}, ErrorCode::invalid_argument},
  };
  for (const auto& c : cases) {
    auto out = call(c.action, c.params);
    ASSERT_FALSE(out) << c.action << " " << c.params.dump() << " was accepted";
    EXPECT_EQ(out.error().code, c.code) << c.action << " " << c.params.dump() << ": " << out.error().message;
    EXPECT_FALSE(out.error().message.empty());
  }
  // Not an object at all.
  EXPECT_EQ(call("memory_analytics", json::array()).error().code, ErrorCode::invalid_argument);
  // Still serving, with every bound at its edge accepted.
  EXPECT_TRUE(call("memory_analytics", {{"windowSeconds", 86400}, {"resolution", "1m"}, {"topOwners", 1000}}));
  EXPECT_TRUE(call("memory_analytics", {{"windowSeconds", "3600"}, {"resolution", "1s"}, {"detail", "points"}}));
  EXPECT_TRUE(call("memory_analytics", {{"windowSeconds", 1}, {"resolution", "auto"}, {"topOwners", 0}}));
  EXPECT_TRUE(call("memory_optimization", {{"idleSeconds", 2592000}}));
  EXPECT_TRUE(allocate("alice", kMiB));
  // The service refuses in-process callers the same way.
  AnalyticsQuery q;
  q.window_seconds = 0;
  EXPECT_EQ(service_->analytics(q).error().code, ErrorCode::invalid_argument);
  q.window_seconds = 60;
  q.top_owners = 5000;
  EXPECT_EQ(service_->analytics(q).error().code, ErrorCode::invalid_argument);
  RecommendationOptions o;
  o.device = DeviceId::host(7);
  EXPECT_EQ(service_->optimization(o).error().code, ErrorCode::not_found);
}

}  // namespace
}  // namespace memd
