// `memd history` against a running daemon: after an out_of_memory, the
// snapshot id from the error prints a report that says why (the request,
// the largest free block against it, the top holders, the last history
// entries, the block map); without an id, the recent history table. Bad ids
// and limits fail with the daemon's code, exit 1. The renderers are also
// fed hostile JSON (missing keys, wrong types) and must not throw.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "history_view.hpp"
#include "cli_run.hpp"
#include "server/daemon.hpp"

namespace memd::testing {
namespace {

using json = nlohmann::json;

TEST(HistoryCli, SnapshotReportSaysWhyItFailed) {
  Daemon daemon;
  ASSERT_FALSE(daemon.url().empty());
  httplib::Client c(daemon.url());
  for (auto [owner, size, name] : {std::tuple{"alice", "24MiB", "weights"}, std::tuple{"bob", "20MiB", "kv-cache"}}) {
    auto r = c.Post("/api/memory/allocations", {{"X-Memd-Owner", owner}},
                    json{{"sizeBytes", size}, {"deviceId", "host:0"}, {"name", name}}.dump(), "application/json");
    ASSERT_EQ(r->status, 201) << r->body;
  }
  // Through the CLI itself: the error names the snapshot.
  auto failed = memd("allocate 24MiB --url " + daemon.url() + " --as carol --device host:0 --name big");
  EXPECT_EQ(failed.code, 1);
  const auto at = failed.out.find("memd history ");
  ASSERT_NE(at, std::string::npos) << failed.out;
  const std::string id = failed.out.substr(at + 13, 36);

  auto report = memd("history " + id + " --url " + daemon.url() + " --admin");
  ASSERT_EQ(report.code, 0) << report.out;
  for (const char* want : {"request:  24.0 MiB VRAM on host:0 for carol (\"big\")", "largest free block",
                           "top holders", "alice", "bob", "weights", "kv-cache", "last 3 of 3 history entries",
                           "block map:", "LARGEST HOLE"})
    EXPECT_NE(report.out.find(want), std::string::npos) << want << "\n" << report.out;

  // carol, whose request it was, sees the others as (other).
  auto carols = memd("history " + id + " --url " + daemon.url() + " --as carol");
  ASSERT_EQ(carols.code, 0) << carols.out;
  EXPECT_EQ(carols.out.find("weights"), std::string::npos) << carols.out;
  EXPECT_NE(carols.out.find("(other"), std::string::npos) << carols.out;

  auto json_out = memd("history " + id + " --url " + daemon.url() + " --admin --json");
  ASSERT_EQ(json_out.code, 0) << json_out.out;
  EXPECT_EQ(json::parse(json_out.out)["snapshotId"], id);

  auto table = memd("history --url " + daemon.url() + " --admin --device host:0 --limit 2");
  ASSERT_EQ(table.code, 0) << table.out;
  EXPECT_NE(table.out.find("SEQ"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("kv-cache"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("failed"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("2 entries"), std::string::npos) << table.out;

  auto bad = memd("history not-an-id --url " + daemon.url());
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("invalid_argument"), std::string::npos) << bad.out;
  auto zero = memd("history --url " + daemon.url() + " --limit 0");
  EXPECT_EQ(zero.code, 1);
  EXPECT_NE(zero.out.find("invalid_argument"), std::string::npos) << zero.out;
  auto gone = memd("history 12345678-1234-4234-8234-1234567890ab --url " + daemon.url() + " --admin");
  EXPECT_EQ(gone.code, 1);
  EXPECT_NE(gone.out.find("not_found"), std::string::npos) << gone.out;
}

TEST(HistoryView, HostileAnswersRenderWithoutThrowing) {
  for (const char* text : {"{}", R"({"entries": []})", R"({"entries": [{}]})", R"({"entries": [{"sequence": "x",
      "from": {}, "to": 3, "hidden": true}]})", R"({"request": 5, "holders": [{}], "allocations": [{}, {}],
      "history": [{}], "segments": [{"address": -1}], "pools": {"VRAM": {}}, "blocksOmitted": 3})"}) {
    const json j = json::parse(text);
    EXPECT_NO_THROW((void)cli::render_history(j)) << text;
    EXPECT_NO_THROW((void)cli::render_snapshot(j, 20)) << text;
  }
  EXPECT_EQ(cli::render_history(json::parse(R"({"entries": []})")), "no history yet\n");
}

}  // namespace
}  // namespace memd::testing
