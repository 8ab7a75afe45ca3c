// The same operations through both doors give the same results, pinned by a
// golden transcript (tests/server/golden/doors.jsonl: "> request" lines, each
// followed by "< normalised response"). MEMD_UPDATE_GOLDEN=1 rewrites the
// responses from the stdio run; REST must still match them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <chrono>
#include <fstream>
#include <thread>

#include "server/child_process.hpp"
#include "server/doors_support.hpp"

namespace memd::testing {
namespace {

constexpr const char* kGolden = MEMD_GOLDEN_DIR "/doors.jsonl";

struct Step {
  std::string request;   // template with <id-N>
  std::string expected;  // normalised response ("" when not recorded yet)
};

std::vector<Step> load_golden() {
  std::ifstream in(kGolden);
  std::vector<Step> steps;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("> ")) steps.push_back({line.substr(2), ""});
    else if (line.starts_with("< ") && !steps.empty()) steps.back().expected = line.substr(2);
  }
  return steps;
}

TEST(Doors, StdioAndRestGiveTheGoldenResults) {
  auto steps = load_golden();
  ASSERT_GT(steps.size(), 10u);
  const bool update = std::getenv("MEMD_UPDATE_GOLDEN") != nullptr;

  // stdio door.
  {
    ChildProcess memd({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "--monitor-interval", "0", "stdio", "--owner", "golden"});
    ASSERT_TRUE(memd.started());
    Normalizer norm;
    for (auto& step : steps) {
      auto line = memd.call(norm.substitute(step.request));
      ASSERT_TRUE(line) << step.request;
      const auto got = norm.normalize(json::parse(*line)).dump();
      if (update) step.expected = got;
      else EXPECT_EQ(got, step.expected) << "stdio: " << step.request;
    }
    memd.close_stdin();
    EXPECT_EQ(memd.wait(), 0);
  }
  if (update) {
    std::ofstream out(kGolden);
    for (const auto& s : steps) out << "> " << s.request << "\n< " << s.expected << "\n";
  }

  // REST door, same steps, same owner, as the admin.
  ChildProcess memd({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "--monitor-interval", "0", "serve", "--listen",
                     "127.0.0.1:0"});
  auto banner = memd.read_line();
  ASSERT_TRUE(banner);
  const std::string url = banner->substr(banner->find("http://"));
  httplib::Client client(url);
  Normalizer norm;
  for (const auto& step : steps) {
    auto request = json::parse(norm.substitute(step.request));
    // The stdio host is the admin of the engine it spawned; REST asks for it.
    const auto got = norm.normalize(rest_call(client, request, "golden", /*admin=*/true)).dump();
    EXPECT_EQ(got, step.expected) << "REST: " << step.request;
  }
  memd.signal(SIGTERM);
  EXPECT_EQ(memd.wait(), 0);
}

// Live allocations of `owner` on the daemon at `url`, asked as the admin.
std::size_t live_allocations(const std::string& url, const std::string& owner) {
  httplib::Client client(url);
  auto res = client.Get("/api/memory/allocations?owner=" + owner, {{"X-Memd-Admin", "true"}});
  if (!res || res->status != 200) return ~std::size_t{0};
  return json::parse(res->body).at("total").get<std::size_t>();
}

// The third door: `memd stdio --connect` to a running daemon answers the
// golden transcript as the in-process door does, and closing its stdin
// releases what it allocated (the transcript leaves allocations live).
TEST(Doors, StdioBridgeGivesTheGoldenResults) {
  auto steps = load_golden();
  ASSERT_GT(steps.size(), 10u);
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "--monitor-interval", "0", "serve", "--listen", "127.0.0.1:0"});
  auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const std::string url = banner->substr(banner->find("http://"));
  {
    // Admin: the transcript sets limits, which only the admin may.
    ChildProcess bridge({MEMD_BINARY, "stdio", "--connect", url, "--owner", "golden", "--admin"});
    ASSERT_TRUE(bridge.started());
    Normalizer norm;
    for (const auto& step : steps) {
      auto line = bridge.call(norm.substitute(step.request));
      ASSERT_TRUE(line) << step.request;
      EXPECT_EQ(norm.normalize(json::parse(*line)).dump(), step.expected) << "bridge: " << step.request;
    }
    EXPECT_GT(live_allocations(url, "golden"), 0u) << "the transcript should end with allocations live";
    bridge.close_stdin();
    EXPECT_EQ(bridge.wait(), 0);
  }
  EXPECT_EQ(live_allocations(url, "golden"), 0u) << "closing the bridge's stdin released nothing";
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.wait(), 0);
}

// A bridge that dies without closing its session leaks nothing: the lease
// lapses and the daemon releases the host's allocations.
TEST(Doors, KilledBridgeIsReleasedWhenItsLeaseLapses) {
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "serve", "--listen", "127.0.0.1:0"});
  auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const std::string url = banner->substr(banner->find("http://"));
  ChildProcess bridge({MEMD_BINARY, "stdio", "--connect", url, "--owner", "crashy", "--ttl", "1"});
  auto made = bridge.call(R"({"id":1,"action":"memory_allocate","params":{"sizeBytes":"1MiB","deviceId":"host:0"}})");
  ASSERT_TRUE(made);
  ASSERT_TRUE(json::parse(*made).at("ok").get<bool>()) << *made;
  EXPECT_EQ(live_allocations(url, "crashy"), 1u);
  bridge.signal(SIGKILL);
  bridge.wait();
  // The lease is 1 s; the reaper runs at expiry. Bounded wait, no sleep-and-hope.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (live_allocations(url, "crashy") != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(live_allocations(url, "crashy"), 0u) << "a lapsed bridge's allocation was not released";
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.wait(), 0);
}

}  // namespace
}  // namespace memd::testing
