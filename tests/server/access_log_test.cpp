// The access summary: silent without traffic, counts by status class and
// bytes, percentiles within a bucket of the truth, and each summary covers
// only what came after the previous one.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "server/http/access_log.hpp"

namespace memd {
namespace {

using std::chrono::microseconds;

TEST(AccessLog, BucketsCoverEveryLatencyWithinAQuarter) {
  std::size_t last = 0;
  for (std::uint64_t us = 0; us < 5'000'000; us = us < 64 ? us + 1 : us + us / 7) {
    const std::size_t b = AccessLog::bucket(us);
    ASSERT_LT(b, AccessLog::kBuckets);
    EXPECT_GE(b, last) << us;  // monotonic
    last = b;
    const std::uint64_t upper = AccessLog::bucket_upper(b);
    EXPECT_GE(upper, us);
    EXPECT_LE(upper, us + us / 4 + 1) << us;
  }
  EXPECT_LT(AccessLog::bucket(~std::uint64_t{0}), AccessLog::kBuckets);
}

TEST(AccessLog, SummaryCountsClassesBytesAndPercentilesThenStartsOver) {
  AccessLog log;
  EXPECT_FALSE(log.take_summary()) << "no traffic, no line";
  // 98 fast requests, one slow, one very slow: p50 fast, p99 the slow one.
  for (int i = 0; i < 98; ++i) log.record({"GET", "/healthz", 200, 0, 100, microseconds(100)});
  log.record({"PUT", "/x", 416, 10, 50, microseconds(20'000)});
  log.record({"GET", "/y", 500, 0, 50, microseconds(3'000'000)});
  const auto line = log.take_summary();
  ASSERT_TRUE(line);
  EXPECT_NE(line->find("100 requests"), std::string::npos) << *line;
  EXPECT_NE(line->find("2xx 98, 4xx 1, 5xx 1"), std::string::npos) << *line;
  EXPECT_NE(line->find("10 B in"), std::string::npos) << *line;
  EXPECT_NE(line->find("p50 ≤ 111 µs"), std::string::npos) << *line;  // 100 µs's bucket ends at 111
  EXPECT_NE(line->find("p99 ≤ 20.5 ms"), std::string::npos) << *line;  // 20 ms's at 20.479
  EXPECT_EQ(line->find("unanswered"), std::string::npos) << *line;
  EXPECT_FALSE(log.take_summary()) << "a summary covers one interval";

  log.record({"PUT", "/z", 0, 5, 0, microseconds(7)});  // the client left before the answer
  const auto second = log.take_summary();
  ASSERT_TRUE(second);
  EXPECT_NE(second->find("1 request "), std::string::npos) << *second;
  EXPECT_NE(second->find("unanswered 1"), std::string::npos) << *second;
}

TEST(AccessLog, RecordsFromManyThreads) {
  // spdlog builds its default logger on first use, inside the shared library
  // TSan does not instrument; build it here so the threads do not race to.
  spdlog::default_logger();
  AccessLog log;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) log.record({"GET", "/", 200, 1, 2, microseconds(i)});
    });
  for (auto& t : threads) t.join();
  const auto line = log.take_summary();
  ASSERT_TRUE(line);
  EXPECT_NE(line->find("4000 requests"), std::string::npos) << *line;
}

}  // namespace
}  // namespace memd
