// TimeSeries: exact aggregates at both resolutions, windows, p95, rings
// wrapping, clocks stepping back, and validate().
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <limits>

#include "monitor/time_series.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;
using TP = TimeSeries::TimePoint;

// A whole minute, so 1 min points line up with the script.
const TP kT0 = TP(std::chrono::seconds(1'800'000'000 / 60 * 60));
constexpr double kNone = std::numeric_limits<double>::quiet_NaN();

void add(TimeSeries& s, TP at, double a, double b = kNone) { s.add(at, std::array<double, 2>{a, b}); }

TEST(TimeSeries, OnePointASecondGivesExactStatistics) {
  TimeSeries s(2);
  // Values 1..100 at one a second: min 1, max 100, mean 50.5, p95 95.
  for (int i = 1; i <= 100; ++i) add(s, kT0 + std::chrono::seconds(i - 1), i, i % 2 == 0 ? i : kNone);
  auto w = s.query(100, std::nullopt, true);
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->resolution, SeriesResolution::Second);
  EXPECT_EQ(w->samples, 100u);
  EXPECT_EQ(w->from, kT0);
  EXPECT_EQ(w->to, kT0 + 100s);
  EXPECT_EQ(w->fields[0].count, 100u);
  EXPECT_EQ(w->fields[0].min, 1);
  EXPECT_EQ(w->fields[0].max, 100);
  EXPECT_DOUBLE_EQ(w->fields[0].mean, 50.5);
  EXPECT_EQ(w->fields[0].p95, 95);
  // The second field only on even seconds: 2..100, mean 51, p95 = 48th of 50 = 96.
  EXPECT_EQ(w->fields[1].count, 50u);
  EXPECT_EQ(w->fields[1].min, 2);
  EXPECT_DOUBLE_EQ(w->fields[1].mean, 51);
  EXPECT_EQ(w->fields[1].p95, 96);
  EXPECT_EQ(w->points.size(), 100u);
  EXPECT_EQ(w->points.front().start, kT0);
  EXPECT_EQ(w->points.back().fields[0].max, 100);
  // A 10 s window: the last ten, 91..100.
  w = s.query(10, SeriesResolution::Second, false);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->samples, 10u);
  EXPECT_EQ(w->fields[0].min, 91);
  EXPECT_DOUBLE_EQ(w->fields[0].mean, 95.5);
  EXPECT_EQ(w->fields[0].p95, 100);  // rank ceil(9.5) = 10
  EXPECT_TRUE(w->points.empty());
  EXPECT_TRUE(s.validate());
}

TEST(TimeSeries, MinutePointsAggregateTheSecondsExactly) {
  TimeSeries s(2);
  // Three minutes, two samples a second (the second one 500 ms later, same
  // point); minute m holds values m*1000 + second.
  for (int m = 0; m < 3; ++m)
    for (int sec = 0; sec < 60; ++sec)
      for (int half = 0; half < 2; ++half)
        add(s, kT0 + std::chrono::minutes(m) + std::chrono::seconds(sec) + std::chrono::milliseconds(500 * half),
            m * 1000 + sec + half);
  auto w = s.query(180, SeriesResolution::Minute, true);
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->samples, 360u);
  ASSERT_EQ(w->points.size(), 3u);
  EXPECT_EQ(w->points[1].samples, 120u);
  EXPECT_EQ(w->points[1].fields[0].min, 1000);
  EXPECT_EQ(w->points[1].fields[0].max, 1060);
  EXPECT_DOUBLE_EQ(w->points[1].fields[0].mean(), 1030);
  EXPECT_EQ(w->fields[0].min, 0);
  EXPECT_EQ(w->fields[0].max, 2060);
  EXPECT_DOUBLE_EQ(w->fields[0].mean, 1030);
  // p95 over the three points' means (30, 1030, 2030): nearest rank 3.
  EXPECT_DOUBLE_EQ(w->fields[0].p95, 2030);
  // The same window at 1 s: the same mean, min and max.
  auto f = s.query(180, SeriesResolution::Second, false);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->samples, 360u);
  EXPECT_DOUBLE_EQ(f->fields[0].mean, w->fields[0].mean);
  EXPECT_EQ(f->fields[0].max, w->fields[0].max);
  // No second field anywhere: counted as absent.
  EXPECT_EQ(w->fields[1].count, 0u);
  EXPECT_TRUE(s.validate()) << s.validate().error().message;
}

TEST(TimeSeries, AutoResolutionAndBounds) {
  TimeSeries s(2);
  auto empty = s.query(300, std::nullopt, true);
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->samples, 0u);
  EXPECT_TRUE(empty->points.empty());
  add(s, kT0, 1);
  EXPECT_EQ(s.query(3600, std::nullopt, false)->resolution, SeriesResolution::Second);
  EXPECT_EQ(s.query(3601, std::nullopt, false)->resolution, SeriesResolution::Minute);
  EXPECT_EQ(s.query(86400, std::nullopt, false)->resolution, SeriesResolution::Minute);
  EXPECT_EQ(s.query(0, std::nullopt, false).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(s.query(86401, std::nullopt, false).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(s.query(3601, SeriesResolution::Second, false).error().code, ErrorCode::out_of_range);
  // A 90 s window at 1 min: two whole minutes.
  auto w = s.query(90, SeriesResolution::Minute, false);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->to - w->from, 120s);
  EXPECT_EQ(parse_series_resolution("1s"), SeriesResolution::Second);
  EXPECT_EQ(parse_series_resolution("1m"), SeriesResolution::Minute);
  EXPECT_FALSE(parse_series_resolution("1h"));
  EXPECT_FALSE(parse_series_resolution(""));
  // A sample of the wrong width is dropped whole.
  s.add(kT0 + 1s, std::array<double, 3>{1, 2, 3});
  EXPECT_EQ(s.samples(), 1u);
}

TEST(TimeSeries, RingsWrapAndForgetWhatIsOlderThanTheyHold) {
  TimeSeries s(2);
  // 25 hours at one sample a minute, then an hour and a half at one a second.
  for (int m = 0; m < 25 * 60; ++m) add(s, kT0 + std::chrono::minutes(m), m);
  const TP later = kT0 + std::chrono::minutes(25 * 60);
  for (int k = 0; k < 5400; ++k) add(s, later + std::chrono::seconds(k), 1e6 + k);
  ASSERT_TRUE(s.validate()) << s.validate().error().message;
  // The last hour at 1 s: exactly the last 3600 samples.
  auto hour = s.query(3600, SeriesResolution::Second, false);
  ASSERT_TRUE(hour);
  EXPECT_EQ(hour->samples, 3600u);
  EXPECT_EQ(hour->fields[0].min, 1e6 + 1800);
  EXPECT_EQ(hour->fields[0].max, 1e6 + 5399);
  // The day at 1 min: 1440 points back from the newest minute; the oldest
  // minute samples (25 hours ago) are gone.
  auto day = s.query(86400, SeriesResolution::Minute, false);
  ASSERT_TRUE(day);
  EXPECT_EQ(day->to - day->from, 86400s);
  EXPECT_EQ(day->samples, (1440u - 90u) + 5400u);
  EXPECT_EQ(day->fields[0].min, 90 + 60);  // minute 150 onwards: 25 h + 90 min − 24 h = 150 min
}

TEST(TimeSeries, AClockSteppingBackALittleJoinsTheNewestPointAndALotClears) {
  TimeSeries s(2);
  add(s, kT0 + 100s, 1);
  add(s, kT0 + 70s, 2);  // 30 s back: joins the point at 100 s
  auto w = s.query(10, SeriesResolution::Second, true);
  ASSERT_TRUE(w);
  ASSERT_EQ(w->points.size(), 1u);
  EXPECT_EQ(w->points[0].start, kT0 + 100s);
  EXPECT_EQ(w->points[0].samples, 2u);
  EXPECT_EQ(s.resets(), 0u);
  EXPECT_TRUE(s.validate());
  add(s, kT0 - 1h, 3);  // an hour back: a new history
  EXPECT_EQ(s.resets(), 1u);
  w = s.query(3600, SeriesResolution::Second, false);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->samples, 1u);
  EXPECT_EQ(w->fields[0].max, 3);
  EXPECT_EQ(*s.newest(), kT0 - 1h);
  EXPECT_TRUE(s.validate());
}

TEST(TimeSeries, GapsLeaveNoPoints) {
  TimeSeries s(2);
  add(s, kT0, 5);
  add(s, kT0 + 30s, 7);
  auto w = s.query(60, SeriesResolution::Second, true);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->points.size(), 2u);
  EXPECT_EQ(w->samples, 2u);
  EXPECT_DOUBLE_EQ(w->fields[0].mean, 6);
  // A window that ends at the newest point and starts after the first.
  w = s.query(20, SeriesResolution::Second, false);
  EXPECT_EQ(w->samples, 1u);
  EXPECT_EQ(w->fields[0].min, 7);
}

}  // namespace
}  // namespace memd
