// RateLimiter: token buckets per owner; see rate_limiter.hpp.
#include "server/http/rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace memd {

RateLimiter::Bucket& RateLimiter::bucket(std::string_view owner, Clock::time_point now) {
  auto it = buckets_.find(std::string(owner));
  if (it == buckets_.end()) {
    if (buckets_.size() >= options_.max_owners) forget_idle(now);
    // A new owner starts with a full second's burst.
    it = buckets_.emplace(std::string(owner), Bucket{options_.requests_per_second, options_.bytes_per_second, now})
             .first;
    return it->second;
  }
  Bucket& b = it->second;
  const double elapsed = std::chrono::duration<double>(now - b.at).count();
  if (elapsed > 0) {
    b.requests = std::min(options_.requests_per_second, b.requests + elapsed * options_.requests_per_second);
    b.bytes = std::min(options_.bytes_per_second, b.bytes + elapsed * options_.bytes_per_second);
    b.at = now;
  }
  return b;
}

void RateLimiter::forget_idle(Clock::time_point now) {
  // Idle long enough to be full again: forgetting it changes nothing.
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    const double elapsed = std::chrono::duration<double>(now - it->second.at).count();
    const bool requests_full = options_.requests_per_second <= 0 ||
                               it->second.requests + elapsed * options_.requests_per_second >= options_.requests_per_second;
    const bool bytes_full = options_.bytes_per_second <= 0 ||
                            it->second.bytes + elapsed * options_.bytes_per_second >= options_.bytes_per_second;
    it = requests_full && bytes_full ? buckets_.erase(it) : std::next(it);
  }
}

std::optional<std::chrono::milliseconds> RateLimiter::admit(std::string_view owner, bool loopback,
                                                            Clock::time_point now) {
  if (!applies(loopback)) return std::nullopt;
  std::lock_guard lock(mutex_);
  Bucket& b = bucket(owner, now);
  double wait = 0;  // seconds
  if (options_.requests_per_second > 0 && b.requests < 1)
    wait = std::max(wait, (1 - b.requests) / options_.requests_per_second);
  if (options_.bytes_per_second > 0 && b.bytes < 0) wait = std::max(wait, -b.bytes / options_.bytes_per_second);
  if (wait > 0) {
    ++refused_;
    return std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(wait * 1000)));
  }
  if (options_.requests_per_second > 0) b.requests -= 1;
  return std::nullopt;
}

void RateLimiter::charge_bytes(std::string_view owner, bool loopback, std::uint64_t bytes, Clock::time_point now) {
  if (!applies(loopback) || options_.bytes_per_second <= 0 || bytes == 0) return;
  std::lock_guard lock(mutex_);
  bucket(owner, now).bytes -= static_cast<double>(bytes);
}

std::size_t RateLimiter::owners() const {
  std::lock_guard lock(mutex_);
  return buckets_.size();
}

std::uint64_t RateLimiter::refused() const {
  std::lock_guard lock(mutex_);
  return refused_;
}

}  // namespace memd
