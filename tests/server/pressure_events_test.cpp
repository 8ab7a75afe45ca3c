// The must-show test of issue 14's event doors: a device driven from Low to
// Critical and back, with oscillations inside the hysteresis band, and the
// exact sequence of pressure_changed events received on every door — SSE
// (GET /api/memory/events), the stdio bridge (memd stdio --connect,
// memory_subscribe) and the in-process stdio door (memd stdio) — identical,
// with no flapping at the thresholds.
//
// The device gets a 50 MiB limit (memory_limits), so capacity is exact and
// percent = 2 × MiB in use; every size is whole MiB (allocated bytes are
// block-rounded to 256 B, so whole MiB count exactly; the test checks
// inUseBytes against its own arithmetic at each step). Thresholds 60/80/92,
// hysteresis 3: a level is entered at its threshold and left below
// threshold − 3. The monitor samples only at start (--monitor-interval 0)
// and the policy is off, so nothing trims or refuses on its own: each level
// change is the request that crossed the line.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <httplib.h>

#include "server/daemon.hpp"
#include "server/event_test_support.hpp"

namespace memd::testing {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr std::uint64_t kMebi = 1024 * 1024;
constexpr std::uint64_t kLimit = 50 * kMebi;

struct Step {
  const char* what;  // "+A 29" allocates A of 29 MiB; "-A" frees A
  double percent;    // expected after the step
};

// Low → Moderate → High (then 82 → 78 → 82 → 78 around 80: no event) →
// Critical (then 94 → 90 → 94 → 90 around 92: no event) → High → Moderate
// (then 58, inside 60's band: no event) → Low.
const std::vector<Step> kSteps = {
    {"+A 29", 58}, {"+B 3", 64}, {"+C 7", 78}, {"+D 2", 82},  {"-D", 78},  {"+D 2", 82}, {"-D", 78},
    {"+E 6", 90},  {"+F 2", 94}, {"-F", 90},   {"+F 2", 94},  {"-F", 90},  {"-E", 78},   {"-C", 64},
    {"-B", 58},    {"-A", 0},
};
const std::vector<std::pair<std::string, std::string>> kExpected = {
    {"Low", "Moderate"}, {"Moderate", "High"}, {"High", "Critical"},
    {"Critical", "High"}, {"High", "Moderate"}, {"Moderate", "Low"},
};

// One way to send a request line and get its response (either door).
using Call = std::function<json(const json& request)>;

// Runs the scenario through `call`; checks each step's numbers.
void drive(const Call& call) {
  int id = 0;
  auto request = [&](const char* action, json params) {
    json r = call({{"id", ++id}, {"action", action}, {"params", std::move(params)}});
    EXPECT_TRUE(r.value("ok", false)) << action << " " << r.dump();
    return r.value("result", json::object());
  };
  request("memory_limits", {{"deviceId", "host:0"}, {"bytes", kLimit}});
  auto p = request("memory_pressure", {{"deviceId", "host:0"}});
  ASSERT_EQ(p["devices"][0]["capacityBytes"], kLimit) << p.dump();
  ASSERT_EQ(p["devices"][0]["level"], "Low") << p.dump();
  std::map<std::string, std::pair<std::string, std::uint64_t>> live;  // name → (id, bytes)
  std::uint64_t in_use = 0;
  for (const auto& step : kSteps) {
    const std::string what = step.what;
    const std::string name = what.substr(1, 1);
    if (what[0] == '+') {
      const std::uint64_t bytes = std::stoull(what.substr(3)) * kMebi;
      auto a = request("memory_allocate", {{"sizeBytes", bytes}, {"deviceId", "host:0"}});
      live[name] = {a.value("allocationId", ""), bytes};
      in_use += bytes;
    } else {
      request("memory_deallocate", {{"allocationId", live[name].first}});
      in_use -= live[name].second;
      live.erase(name);
    }
    auto now = request("memory_pressure", {{"deviceId", "host:0"}});
    EXPECT_EQ(now["devices"][0]["inUseBytes"], in_use) << step.what;
    EXPECT_DOUBLE_EQ(now["devices"][0]["percent"].get<double>(), step.percent) << step.what;
  }
}

std::vector<std::pair<std::string, std::string>> transitions(const std::vector<json>& events) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : events) {
    EXPECT_EQ(e.value("event", ""), "pressure_changed") << e.dump();
    EXPECT_EQ(e.value("deviceId", ""), "host:0") << e.dump();
    out.emplace_back(e["data"].value("previousLevel", "?"), e["data"].value("level", "?"));
  }
  return out;
}

// A REST call in the stdio shape, through POST /api/stdio (the daemon answers
// it with the stdio door's own code), as the admin (memory_limits).
Call rest_caller(httplib::Client& client) {
  return [&client](const json& request) {
    auto res = client.Post("/api/stdio", httplib::Headers{{"X-Memd-Admin", "true"}, {"X-Memd-Owner", "driver"}},
                           request.dump(), "application/json");
    if (!res || res->status != 200) return json{{"ok", false}};
    return json::parse(res->body);
  };
}

TEST(PressureEvents, TheSameExactSequenceOnSseTheBridgeAndInProcessStdio) {
  // ---- the daemon: SSE and the bridge watch, REST drives ----
  Daemon daemon({"--monitor-interval", "0", "--pressure-policy", "off"});
  ASSERT_FALSE(daemon.url().empty());
  const int port = std::stoi(daemon.url().substr(daemon.url().rfind(':') + 1));
  SseConnection sse(port, "/api/memory/events?kinds=pressure_changed");
  auto header = sse.header();
  ASSERT_TRUE(header && header->starts_with("HTTP/1.1 200")) << header.value_or("no answer");

  StdioSession bridge({MEMD_BINARY, "stdio", "--connect", daemon.url(), "--owner", "bridge"});
  auto subscribed = bridge.call({{"id", "s"}, {"action", "memory_subscribe"}, {"params", {{"kinds", "pressure_changed"}}}});
  ASSERT_TRUE(subscribed);
  ASSERT_TRUE(subscribed->value("ok", false)) << subscribed->dump();
  EXPECT_EQ((*subscribed)["result"]["subscribed"], true);
  EXPECT_EQ((*subscribed)["result"]["kinds"], json::array({"pressure_changed"}));
  // The bridge's relay subscribes on its own thread; it resumes from the
  // answer's lastSequence, so nothing published meanwhile is missed.

  httplib::Client client(daemon.url());
  drive(rest_caller(client));

  const auto& over_sse = sse.messages(kExpected.size(), 10s);
  std::vector<json> sse_events;
  for (const auto& m : over_sse) {
    EXPECT_EQ(m.event, "pressure_changed");
    sse_events.push_back(json::parse(m.data));
  }
  EXPECT_EQ(transitions(sse_events), kExpected);
  auto bridged = bridge.events(kExpected.size(), 10s);
  EXPECT_EQ(transitions(bridged), kExpected);
  // Nothing more: no flapping event arrives late.
  EXPECT_EQ(sse.messages(kExpected.size() + 1, 300ms).size(), kExpected.size());
  EXPECT_EQ(bridge.events(kExpected.size() + 1, 300ms).size(), kExpected.size());
  // The same sequence numbers on both REST-side doors.
  for (std::size_t i = 0; i < std::min(bridged.size(), sse_events.size()); ++i)
    EXPECT_EQ(bridged[i]["sequence"], sse_events[i]["sequence"]);

  // ---- in-process stdio: its own engine, driven and watched on stdio ----
  StdioSession stdio({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "--monitor-interval", "0",
                      "--pressure-policy", "off", "stdio", "--owner", "host"});
  auto local = stdio.call({{"id", "s"}, {"action", "memory_subscribe"}, {"params", {{"kinds", "pressure_changed"}}}});
  ASSERT_TRUE(local && local->value("ok", false)) << (local ? local->dump() : "no answer");
  drive([&](const json& request) { return stdio.call(request).value_or(json{{"ok", false}}); });
  auto in_process = stdio.events(kExpected.size(), 10s);
  EXPECT_EQ(transitions(in_process), kExpected);
  EXPECT_EQ(stdio.events(kExpected.size() + 1, 300ms).size(), kExpected.size());
  EXPECT_TRUE(stdio.unexpected().empty());
  // The in-process lines have the bus's shape.
  for (const auto& e : in_process) {
    EXPECT_TRUE(e.contains("sequence") && e.contains("time") && e.contains("data")) << e.dump();
  }
  stdio.process().close_stdin();
  EXPECT_EQ(stdio.process().wait(), 0);
  bridge.process().close_stdin();
  EXPECT_EQ(bridge.process().wait(), 0);
}

}  // namespace
}  // namespace memd::testing
