// The progress line `memd transfer` and `memd move` draw while they wait,
// and the helpers that read a report: pure, no daemon.
#include <gtest/gtest.h>

#include <limits>

#include <nlohmann/json.hpp>

#include "memd/size.hpp"
#include "transfer_wait.hpp"

namespace memd::cli {
namespace {

bool has(const std::string& line, const std::string& part) { return line.find(part) != std::string::npos; }

TEST(TransferProgress, PercentBarAndSizes) {
  const auto line = format_progress({.bytes_done = kMiB, .total_bytes = 4 * kMiB, .rate_bytes_per_second = 0});
  EXPECT_EQ(line.rfind("[#####---------------]  25%", 0), 0u) << line;
  EXPECT_TRUE(has(line, "1.0 MiB / 4.0 MiB")) << line;
}

// 100% means every byte is done: 999 of 1000 reads 99%, never rounds up.
TEST(TransferProgress, PercentRoundsDown) {
  EXPECT_TRUE(has(format_progress({.bytes_done = 999, .total_bytes = 1000}), " 99%"));
  EXPECT_TRUE(has(format_progress({.bytes_done = 0, .total_bytes = 1000}), "[--------------------]   0%"));
  const auto all = format_progress({.bytes_done = 1000, .total_bytes = 1000});
  EXPECT_TRUE(has(all, "[####################] 100%")) << all;
  // Huge totals do not overflow the arithmetic.
  const std::uint64_t big = std::uint64_t{1} << 62;
  EXPECT_TRUE(has(format_progress({.bytes_done = big / 2, .total_bytes = big}), " 50%"));
}

TEST(TransferProgress, RateAndEta) {
  // 3 MiB left at 512 KiB/s: 6 s.
  const auto line = format_progress({.bytes_done = kMiB, .total_bytes = 4 * kMiB, .rate_bytes_per_second = 512.0 * kKiB});
  EXPECT_TRUE(has(line, "512 KiB/s")) << line;
  EXPECT_TRUE(has(line, "ETA 0:06")) << line;
  // Seconds round up: 1.2 s left is 0:02, never 0:00 before the end.
  EXPECT_TRUE(has(format_progress({.bytes_done = 0, .total_bytes = 12, .rate_bytes_per_second = 10}), "ETA 0:02"));
  // Minutes and hours.
  EXPECT_TRUE(has(format_progress({.bytes_done = 0, .total_bytes = 125 * kKiB, .rate_bytes_per_second = 1024}),
                  "ETA 2:05"));
  EXPECT_TRUE(has(format_progress({.bytes_done = 0, .total_bytes = 7200 * kKiB, .rate_bytes_per_second = 1024}),
                  "ETA 2:00:00"));
  // Past 99 hours an estimate means nothing.
  EXPECT_TRUE(has(format_progress({.bytes_done = 0, .total_bytes = kGiB, .rate_bytes_per_second = 1}), "ETA --"));
}

TEST(TransferProgress, NoRateYet) {
  for (double rate : {0.0, -5.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    const auto line = format_progress({.bytes_done = 0, .total_bytes = kMiB, .rate_bytes_per_second = rate});
    EXPECT_TRUE(has(line, "0 B / 1.0 MiB  --  ETA --")) << rate << ": " << line;
  }
}

// A zero total divides by nothing: 0% before the end, 100% after.
TEST(TransferProgress, ZeroTotal) {
  const auto running = format_progress({.bytes_done = 0, .total_bytes = 0});
  EXPECT_TRUE(has(running, "[--------------------]   0%  0 B / 0 B")) << running;
  const auto done = format_progress({.bytes_done = 0, .total_bytes = 0, .finished = true});
  EXPECT_TRUE(has(done, "[####################] 100%  0 B / 0 B")) << done;
  EXPECT_TRUE(done.ends_with("done")) << done;
}

// A finished line has no ETA: "done" when every byte moved, "stopped" when
// it ended short (failed or cancelled); bytes past the total stay at 100%.
TEST(TransferProgress, Finished) {
  const auto done =
      format_progress({.bytes_done = 4 * kMiB, .total_bytes = 4 * kMiB, .rate_bytes_per_second = 2.0 * kGiB, .finished = true});
  EXPECT_EQ(done, "[####################] 100%  4.0 MiB / 4.0 MiB  2.0 GiB/s  done");
  const auto stopped = format_progress({.bytes_done = 2 * kMiB, .total_bytes = 4 * kMiB, .finished = true});
  EXPECT_EQ(stopped, "[##########----------]  50%  2.0 MiB / 4.0 MiB  --  stopped");
  EXPECT_TRUE(has(format_progress({.bytes_done = 5, .total_bytes = 4}), "[####################] 100%"));
}

TEST(TransferProgress, ReportHelpers) {
  const auto single = nlohmann::json{{"transferId", "t-1"}, {"batchId", nullptr}, {"status", "InProgress"}};
  const auto batch = nlohmann::json{{"batchId", "b-1"}, {"transferIds", {"t-1"}}, {"status", "Failed"}};
  EXPECT_FALSE(is_batch_report(single));
  EXPECT_TRUE(is_batch_report(batch));
  EXPECT_EQ(report_id(single), "t-1");
  EXPECT_EQ(report_id(batch), "b-1");
  EXPECT_EQ(report_id(nlohmann::json::array()), "");
  EXPECT_EQ(report_id(nlohmann::json{{"transferId", 7}}), "");
  for (const char* s : {"Completed", "Failed", "Cancelled"}) EXPECT_TRUE(is_finished_status(s)) << s;
  for (const char* s : {"Pending", "InProgress", "", "completed"}) EXPECT_FALSE(is_finished_status(s)) << s;
}

}  // namespace
}  // namespace memd::cli
