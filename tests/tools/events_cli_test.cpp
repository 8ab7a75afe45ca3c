// memd events and memd watch against a running daemon: a line per event
// (human and --json), --count, resumption, refused filters, and watch's
// screen (devices with their pressure, the last events) printed once.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <future>
#include <sstream>
#include <vector>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "cli_run.hpp"
#include "server/child_process.hpp"

namespace memd::testing {
namespace {

class EventsCli : public ::testing::Test {
 protected:
  void SetUp() override {
    auto banner = daemon_.read_line();
    ASSERT_TRUE(banner && banner->find("http://") != std::string::npos);
    url_ = banner->substr(banner->find("http://"));
  }
  void TearDown() override {
    daemon_.signal(SIGTERM);
    EXPECT_EQ(daemon_.wait(), 0);
  }
  // A refused allocation: one allocation_failed event.
  void fail_allocation() {
    httplib::Client client(url_);
    auto res = client.Post("/api/memory/allocations", R"({"sizeBytes": "1GiB"})", "application/json");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 507);
  }
  ChildProcess daemon_{{MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "--monitor-interval", "0", "serve",
                        "--listen", "127.0.0.1:0"}};
  std::string url_;
};

TEST_F(EventsCli, PrintsEventsAsLinesAndExitsAfterCount) {
  fail_allocation();
  fail_allocation();
  // Resume from the start of the ring: both are there.
  auto json = memd("events --url " + url_ + " --last-event-id 0 --count 2 --json");
  ASSERT_EQ(json.code, 0) << json.out;
  std::istringstream lines(json.out);
  std::string line;
  std::vector<nlohmann::json> events;
  while (std::getline(lines, line)) events.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(events.size(), 2u) << json.out;
  EXPECT_EQ(events[0]["event"], "allocation_failed");
  EXPECT_EQ(events[1]["sequence"].get<int>(), events[0]["sequence"].get<int>() + 1);

  auto human = memd("events --url " + url_ + " --last-event-id 0 --count 1 --kinds allocation_failed");
  ASSERT_EQ(human.code, 0) << human.out;
  EXPECT_NE(human.out.find("allocation_failed"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find(" #"), std::string::npos) << human.out;

  // Live: started first, then the event happens.
  auto live = std::async(std::launch::async, [&] { return memd("events --url " + url_ + " --count 1 --json"); });
  for (int i = 0; i < 3 && live.wait_for(std::chrono::milliseconds(300)) != std::future_status::ready; ++i)
    fail_allocation();
  auto got = live.get();
  EXPECT_EQ(got.code, 0) << got.out;
  EXPECT_NE(got.out.find("allocation_failed"), std::string::npos) << got.out;
}

TEST_F(EventsCli, RefusedFiltersExitOneWithTheDaemonsMessage) {
  auto bad = memd("events --url " + url_ + " --kinds nope --count 1");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("invalid_argument"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("'nope' is not an event kind"), std::string::npos) << bad.out;
  auto device = memd("events --url " + url_ + " --device gpu:1 --count 1");
  EXPECT_EQ(device.code, 1);
  EXPECT_NE(device.out.find("deviceId"), std::string::npos) << device.out;
  auto nowhere = memd("events --url http://127.0.0.1:1 --count 1");
  EXPECT_EQ(nowhere.code, 1);
}

TEST_F(EventsCli, WatchOncePrintsDevicesPressureAndTheLastEvents) {
  fail_allocation();
  auto watch = memd("watch --url " + url_ + " --once");
  ASSERT_EQ(watch.code, 0) << watch.out;
  for (const char* needle : {"DEVICE", "PRESSURE", "host:0", "Low", "last events:", "allocation_failed"})
    EXPECT_NE(watch.out.find(needle), std::string::npos) << needle << "\n" << watch.out;
  EXPECT_EQ(watch.out.find("\x1b["), std::string::npos) << "no terminal escapes when stdout is a pipe";
  EXPECT_EQ(memd("watch --url " + url_ + " --interval 0").code, 1);
}

}  // namespace
}  // namespace memd::testing
