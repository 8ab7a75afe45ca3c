// TimeSeries: two preallocated rings of aggregated points; see time_series.hpp.
#include "monitor/time_series.hpp"

#include <algorithm>
#include <cmath>

namespace memd {
namespace {

std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

std::size_t slot_of(std::int64_t index, std::size_t capacity) noexcept {
  const auto c = static_cast<std::int64_t>(capacity);
  return static_cast<std::size_t>(((index % c) + c) % c);
}

}  // namespace

std::string_view to_string(SeriesResolution r) noexcept { return r == SeriesResolution::Second ? "1s" : "1m"; }

std::optional<SeriesResolution> parse_series_resolution(std::string_view text) noexcept {
  if (text == "1s") return SeriesResolution::Second;
  if (text == "1m") return SeriesResolution::Minute;
  return std::nullopt;
}

void TimeSeries::Aggregate::add(double v) noexcept {
  if (count == 0) {
    min = max = v;
  } else {
    min = std::min(min, v);
    max = std::max(max, v);
  }
  sum += v;
  ++count;
}

void TimeSeries::Aggregate::merge(const Aggregate& o) noexcept {
  if (o.count == 0) return;
  if (count == 0) {
    *this = o;
    return;
  }
  min = std::min(min, o.min);
  max = std::max(max, o.max);
  sum += o.sum;
  count += o.count;
}

TimeSeries::TimeSeries(std::size_t fields) : fields_(fields) {
  auto make = [&](Ring& r, std::int64_t step, std::size_t points) {
    r.step = step;
    r.index.assign(points, kEmpty);
    r.samples.assign(points, 0);
    r.aggregates.assign(points * fields_, Aggregate{});
  };
  make(fine_, 1, kFinePoints);
  make(coarse_, 60, kCoarsePoints);
}

void TimeSeries::clear() {
  for (Ring* r : {&fine_, &coarse_}) {
    std::fill(r->index.begin(), r->index.end(), kEmpty);
    std::fill(r->samples.begin(), r->samples.end(), 0u);
    std::fill(r->aggregates.begin(), r->aggregates.end(), Aggregate{});
    r->any = false;
    r->newest = 0;
  }
  newest_second_.reset();
}

void TimeSeries::add(TimePoint at, std::span<const double> values) {
  if (values.size() != fields_) return;  // a caller's bug; never half a sample
  std::int64_t second =
      std::chrono::floor<std::chrono::seconds>(at.time_since_epoch()).count();
  if (newest_second_ && second < *newest_second_) {
    if (*newest_second_ - second <= kBackwardToleranceSeconds) {
      second = *newest_second_;
    } else {
      clear();
      ++resets_;
    }
  }
  newest_second_ = second;
  add_to(fine_, second, values);
  add_to(coarse_, second, values);
  ++total_samples_;
}

void TimeSeries::add_to(Ring& r, std::int64_t second, std::span<const double> values) {
  const std::int64_t index = floor_div(second, r.step);
  const std::size_t slot = slot_of(index, r.capacity());
  if (r.index[slot] != index) {  // a point from an earlier lap, or none
    r.index[slot] = index;
    r.samples[slot] = 0;
    std::fill_n(r.aggregates.begin() + static_cast<std::ptrdiff_t>(slot * fields_), fields_, Aggregate{});
  }
  ++r.samples[slot];
  for (std::size_t f = 0; f < fields_; ++f)
    if (!std::isnan(values[f])) r.aggregates[slot * fields_ + f].add(values[f]);
  r.newest = r.any ? std::max(r.newest, index) : index;
  r.any = true;
}

std::optional<TimeSeries::TimePoint> TimeSeries::newest() const {
  if (!newest_second_) return std::nullopt;
  return TimePoint(std::chrono::seconds(*newest_second_));
}

Result<TimeSeries::Window> TimeSeries::query(std::uint64_t window_seconds, std::optional<SeriesResolution> resolution,
                                             bool with_points) const {
  if (window_seconds == 0 || window_seconds > kMaxWindowSeconds)
    return fail(ErrorCode::invalid_argument, "windowSeconds {} is outside 1..{}", window_seconds, kMaxWindowSeconds);
  const SeriesResolution res =
      resolution.value_or(window_seconds <= kFinePoints ? SeriesResolution::Second : SeriesResolution::Minute);
  if (res == SeriesResolution::Second && window_seconds > kFinePoints)
    // Well-formed, but past what is kept at that resolution (a rule across
    // two params the schema cannot state): out_of_range, like a read past an
    // allocation's end.
    return fail(ErrorCode::out_of_range,
                "1 s points are kept for {} s; a window of {} s needs resolution 1m (or auto)", kFinePoints,
                window_seconds);
  const Ring& r = ring(res);
  Window w;
  w.resolution = res;
  w.seconds = window_seconds;
  w.fields.assign(fields_, FieldSummary{});
  if (!r.any) return w;
  const auto n = static_cast<std::int64_t>((window_seconds + static_cast<std::uint64_t>(r.step) - 1) /
                                           static_cast<std::uint64_t>(r.step));
  const std::int64_t first = r.newest - n + 1;
  w.from = TimePoint(std::chrono::seconds(first * r.step));
  w.to = TimePoint(std::chrono::seconds((r.newest + 1) * r.step));
  std::vector<Aggregate> total(fields_);
  std::vector<std::vector<double>> means(fields_);
  for (std::int64_t index = first; index <= r.newest; ++index) {
    const std::size_t slot = slot_of(index, r.capacity());
    if (r.index[slot] != index || r.samples[slot] == 0) continue;
    w.samples += r.samples[slot];
    Point p;
    if (with_points) {
      p.start = TimePoint(std::chrono::seconds(index * r.step));
      p.samples = r.samples[slot];
    }
    for (std::size_t f = 0; f < fields_; ++f) {
      const Aggregate& a = r.aggregates[slot * fields_ + f];
      total[f].merge(a);
      if (a.count > 0) means[f].push_back(a.mean());
      if (with_points) p.fields.push_back(a);
    }
    if (with_points) w.points.push_back(std::move(p));
  }
  for (std::size_t f = 0; f < fields_; ++f) {
    FieldSummary& s = w.fields[f];
    s.count = total[f].count;
    if (s.count == 0) continue;
    s.min = total[f].min;
    s.max = total[f].max;
    s.mean = total[f].mean();
    auto& v = means[f];
    std::sort(v.begin(), v.end());
    // Nearest rank: the smallest value with at least 95 % of the points at
    // or below it.
    const auto rank = static_cast<std::size_t>(std::ceil(0.95 * static_cast<double>(v.size())));
    s.p95 = v[std::max<std::size_t>(rank, 1) - 1];
  }
  return w;
}

Result<void> TimeSeries::validate() const {
  for (const Ring* r : {&fine_, &coarse_}) {
    if (r->index.size() != r->samples.size() || r->aggregates.size() != r->index.size() * fields_)
      return fail(ErrorCode::internal, "time series: ring of {} s sized {} / {} / {}", r->step, r->index.size(),
                  r->samples.size(), r->aggregates.size());
    for (std::size_t slot = 0; slot < r->capacity(); ++slot) {
      const std::int64_t index = r->index[slot];
      if (index == kEmpty) {
        if (r->samples[slot] != 0) return fail(ErrorCode::internal, "time series: an empty slot holds samples");
        continue;
      }
      if (!r->any || slot_of(index, r->capacity()) != slot || index > r->newest)
        return fail(ErrorCode::internal, "time series: point {} sits in slot {} (newest {})", index, slot, r->newest);
      for (std::size_t f = 0; f < fields_; ++f) {
        const Aggregate& a = r->aggregates[slot * fields_ + f];
        if (a.count > r->samples[slot] || (a.count > 0 && a.min > a.max) ||
            (a.count > 0 && (a.sum < a.min * a.count - 1e-6 * std::abs(a.sum) - 1e-9 ||
                             a.sum > a.max * a.count + 1e-6 * std::abs(a.sum) + 1e-9)))
          return fail(ErrorCode::internal, "time series: point {} field {} holds count {} min {} max {} sum {}",
                      index, f, a.count, a.min, a.max, a.sum);
      }
    }
  }
  // Each coarse point whose whole minute the fine ring still holds is the sum
  // of those fine points: the two resolutions never disagree.
  if (fine_.any && coarse_.any) {
    const std::int64_t oldest_fine = fine_.newest - static_cast<std::int64_t>(fine_.capacity()) + 1;
    for (std::int64_t c = floor_div(oldest_fine + 59, 60); c <= coarse_.newest; ++c) {
      const std::size_t cs = slot_of(c, coarse_.capacity());
      std::uint64_t fine_samples = 0;
      for (std::int64_t s = c * 60; s < c * 60 + 60; ++s) {
        const std::size_t fs = slot_of(s, fine_.capacity());
        if (fine_.index[fs] == s) fine_samples += fine_.samples[fs];
      }
      const std::uint64_t coarse_samples = coarse_.index[cs] == c ? coarse_.samples[cs] : 0;
      if (fine_samples != coarse_samples)
        return fail(ErrorCode::internal, "time series: minute {} holds {} samples, its seconds {}", c,
                    coarse_samples, fine_samples);
    }
  }
  return {};
}

}  // namespace memd
