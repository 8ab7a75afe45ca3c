// server/http/access_log.hpp — what the REST door served: one debug line per
// request, and a one-line summary per interval (HttpOptions::access_summary)
// at info level, only when there was traffic, so an idle daemon's log stays
// quiet and a busy one's does not drown in per-request lines.
//
// Latency percentiles come from a fixed histogram (four buckets per power of
// two of microseconds), so recording costs no allocation and a percentile is
// reported as its bucket's upper edge: at most 25% above the true value.
//
// Thread safety: record() and take_summary() may be called from any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace memd {

struct RequestRecord {
  std::string_view method;
  std::string_view target;
  int status = 0;
  std::uint64_t bytes_in = 0;   // request body bytes read
  std::uint64_t bytes_out = 0;  // response body bytes written
  std::chrono::microseconds took{0};  // first byte of the request to the last of the answer
};

class AccessLog {
 public:
  // Logs the request at debug level and adds it to the interval's counts.
  void record(const RequestRecord& r);
  // "http: 12 requests (2xx 10, 4xx 2, 5xx 0), 1.0 MiB in, 4.0 MiB out, p50 ≤ 95 µs, p99 ≤ 2.0 ms"
  // for what was recorded since the last call, then starts over; nullopt when
  // nothing was.
  std::optional<std::string> take_summary();

  // The histogram's bucket for a latency, and that bucket's upper edge (µs).
  static std::size_t bucket(std::uint64_t micros) noexcept;
  static std::uint64_t bucket_upper(std::size_t bucket) noexcept;
  static constexpr std::size_t kBuckets = 16 + 4 * 40;

 private:
  std::uint64_t percentile(double fraction) const;  // requires mutex_

  std::mutex mutex_;
  std::uint64_t requests_ = 0;
  std::array<std::uint64_t, 6> by_class_{};  // index status / 100; 0: no answer (status 0)
  std::uint64_t bytes_in_ = 0, bytes_out_ = 0;
  std::array<std::uint64_t, kBuckets> latency_{};
};

}  // namespace memd
