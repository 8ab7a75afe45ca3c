// Per-request debug lines and the periodic access summary.
#include "server/http/access_log.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "memd/size.hpp"

namespace memd {
namespace {

std::string micros_text(std::uint64_t us) {
  if (us < 1000) return fmt::format("{} µs", us);
  if (us < 1'000'000) return fmt::format("{:.1f} ms", static_cast<double>(us) / 1e3);
  return fmt::format("{:.2f} s", static_cast<double>(us) / 1e6);
}

}  // namespace

std::size_t AccessLog::bucket(std::uint64_t micros) noexcept {
  micros = std::min<std::uint64_t>(micros, (std::uint64_t{1} << 44) - 1);
  if (micros < 16) return static_cast<std::size_t>(micros);
  const int e = std::bit_width(micros) - 1;  // 4..43
  const auto sub = static_cast<std::size_t>((micros >> (e - 2)) & 3);
  return 16 + static_cast<std::size_t>(e - 4) * 4 + sub;
}

std::uint64_t AccessLog::bucket_upper(std::size_t b) noexcept {
  if (b < 16) return b;
  const int e = static_cast<int>((b - 16) / 4) + 4;
  const std::uint64_t sub = (b - 16) % 4;
  return ((4 + sub) << (e - 2)) + (std::uint64_t{1} << (e - 2)) - 1;
}

void AccessLog::record(const RequestRecord& r) {
  spdlog::debug("{} {} {} in {} out {} {} µs", r.method, r.target.substr(0, 256), r.status, r.bytes_in,
                r.bytes_out, r.took.count());
  const auto micros = static_cast<std::uint64_t>(std::max<std::int64_t>(0, r.took.count()));
  std::lock_guard lock(mutex_);
  ++requests_;
  ++by_class_[r.status >= 100 && r.status < 600 ? static_cast<std::size_t>(r.status / 100) : 0];
  bytes_in_ += r.bytes_in;
  bytes_out_ += r.bytes_out;
  ++latency_[bucket(micros)];
}

std::uint64_t AccessLog::percentile(double fraction) const {
  // The smallest bucket with at least `fraction` of the requests at or below it.
  const auto want = static_cast<std::uint64_t>(fraction * static_cast<double>(requests_) + 0.999999);
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < kBuckets; ++b) {
    seen += latency_[b];
    if (seen >= std::max<std::uint64_t>(want, 1)) return bucket_upper(b);
  }
  return bucket_upper(kBuckets - 1);
}

std::optional<std::string> AccessLog::take_summary() {
  std::lock_guard lock(mutex_);
  if (requests_ == 0) return std::nullopt;
  std::string line = fmt::format("http: {} request{} (2xx {}, 4xx {}, 5xx {}", requests_, requests_ == 1 ? "" : "s",
                                 by_class_[2], by_class_[4], by_class_[5]);
  // Rare classes only when they occurred: 1xx/3xx are never answered today,
  // and 0 counts requests whose client left before the answer.
  if (by_class_[1] + by_class_[3] > 0) line += fmt::format(", 1xx/3xx {}", by_class_[1] + by_class_[3]);
  if (by_class_[0] > 0) line += fmt::format(", unanswered {}", by_class_[0]);
  line += fmt::format("), {} in, {} out, p50 ≤ {}, p99 ≤ {}", format_size(bytes_in_), format_size(bytes_out_),
                      micros_text(percentile(0.50)), micros_text(percentile(0.99)));
  requests_ = 0;
  by_class_ = {};
  bytes_in_ = bytes_out_ = 0;
  latency_ = {};
  return line;
}

}  // namespace memd
