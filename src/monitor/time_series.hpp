// monitor/time_series.hpp — a bounded, two-resolution history of a few
// numbers (one device's memory, or the machine's transfer rate).
//
// Two rings, both filled from every sample and both preallocated at
// construction, so memory never grows:
//   * fine:   1 s points, 3,600 of them (the last hour);
//   * coarse: 1 min points, 1,440 of them (the last day).
// A point keeps, per field, min / max / sum / count of the samples that fell
// in it, so merging samples (two in one second) or reading a coarse point
// (up to 60 fine ones) keeps the mean and the extremes exact; a coarse
// point's aggregate is exactly the aggregate of the fine points it spans.
// A field may be absent from a sample (NaN: a rate needs two samples); its
// count then stays behind the point's sample count.
//
// Time is whatever the caller says (the monitor's sampled_at, or a test's
// clock), cut to whole seconds. Samples arrive in order; one up to
// kBackwardToleranceSeconds earlier than the newest (a clock stepped back a
// little) joins the newest point, an earlier one clears the series (a clock
// stepped back an hour would otherwise leave an hour of points in the
// future), counted in resets().
//
// A query ends at the newest point and covers the last `window` seconds:
// `window` 1 s points, or ceil(window / 60) 1 min points. For each field:
// min and max and mean of the samples (exact), and p95 over the points'
// means (nearest rank; exact over points, so over samples at 1 s resolution
// with at most one sample a second). Auto resolution is 1 s up to an hour,
// else 1 min.
//
// Thread safety: none; the owner (monitor/analytics.hpp) locks.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "memd/error.hpp"

namespace memd {

enum class SeriesResolution : std::uint8_t { Second, Minute };

std::string_view to_string(SeriesResolution r) noexcept;  // "1s", "1m"
// "1s", "1m"; nullopt for anything else ("auto" is the caller's).
std::optional<SeriesResolution> parse_series_resolution(std::string_view text) noexcept;

class TimeSeries {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  static constexpr std::size_t kFinePoints = 3600;    // 1 s each: an hour
  static constexpr std::size_t kCoarsePoints = 1440;  // 1 min each: a day
  static constexpr std::int64_t kBackwardToleranceSeconds = 60;
  static constexpr std::uint64_t kMaxWindowSeconds = kCoarsePoints * 60;

  // A field's samples in one point (or a whole window).
  struct Aggregate {
    double min = 0, max = 0, sum = 0;
    std::uint32_t count = 0;
    double mean() const noexcept { return count == 0 ? 0 : sum / count; }
    void add(double v) noexcept;
    void merge(const Aggregate& other) noexcept;
  };
  struct Point {
    TimePoint start;
    std::uint32_t samples = 0;
    std::vector<Aggregate> fields;
  };
  struct FieldSummary {
    std::uint64_t count = 0;  // samples with a value; 0: the rest is meaningless
    double min = 0, mean = 0, max = 0, p95 = 0;
  };
  struct Window {
    SeriesResolution resolution = SeriesResolution::Second;
    std::uint64_t seconds = 0;  // as asked
    TimePoint from, to;         // [from, to): whole points; equal when empty
    std::uint64_t samples = 0;
    std::vector<FieldSummary> fields;
    std::vector<Point> points;  // oldest first, only points holding samples; filled when asked
  };

  explicit TimeSeries(std::size_t fields);

  std::size_t field_count() const noexcept { return fields_; }
  // One sample; values.size() must be field_count() (NaN: no value).
  void add(TimePoint at, std::span<const double> values);
  // window_seconds 1..kMaxWindowSeconds (invalid_argument otherwise); 1 s
  // resolution past an hour is out_of_range (not kept). An empty series
  // answers an empty window.
  Result<Window> query(std::uint64_t window_seconds, std::optional<SeriesResolution> resolution,
                       bool with_points) const;
  std::optional<TimePoint> newest() const;
  std::uint64_t resets() const noexcept { return resets_; }
  std::uint64_t samples() const noexcept { return total_samples_; }
  // Ring bookkeeping, aggregates, and each coarse point the fine ring still
  // covers equal to the sum of its fine points.
  Result<void> validate() const;

 private:
  struct Ring {
    std::int64_t step = 1;                 // seconds per point
    std::vector<std::int64_t> index;       // per slot: the point's index (seconds / step), kEmpty if none
    std::vector<std::uint32_t> samples;    // per slot
    std::vector<Aggregate> aggregates;     // slot * fields + field
    std::int64_t newest = 0;
    bool any = false;
    std::size_t capacity() const noexcept { return index.size(); }
  };
  static constexpr std::int64_t kEmpty = INT64_MIN;

  void clear();
  void add_to(Ring& ring, std::int64_t second, std::span<const double> values);
  const Ring& ring(SeriesResolution r) const noexcept { return r == SeriesResolution::Second ? fine_ : coarse_; }

  std::size_t fields_;
  Ring fine_, coarse_;
  std::optional<std::int64_t> newest_second_;
  std::uint64_t resets_ = 0;
  std::uint64_t total_samples_ = 0;
};

}  // namespace memd
