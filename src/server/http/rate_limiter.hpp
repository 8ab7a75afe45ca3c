// server/http/rate_limiter.hpp — per-owner request and byte rates on the
// REST door (issue 17, item 5).
//
// memd serves other programs' memory; one owner flooding the door must not
// take it from the others. Each owner has two token buckets: requests per
// second and body bytes per second (in and out), each holding at most one
// second's worth (the burst). A request takes one request token and is
// refused while either bucket is empty — `rate_limited` (HTTP 429) with
// Retry-After, the seconds until it would be admitted. Bytes are charged as
// they pass and may run a bucket into debt (a download's size is known only
// as it streams); the debt delays that owner's next requests, not others'.
// Off by default; on loopback it applies only with `loopback` set (a local
// worker pool usually shares one host). Buckets of owners idle long enough
// to be full again are forgotten once there are many, so hostile owner
// labels cannot grow memory without bound.
//
// Thread safety: every method may be called from any thread (one mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace memd {

struct RateLimitOptions {
  double requests_per_second = 0;  // 0: no request limit
  double bytes_per_second = 0;     // 0: no byte limit
  bool loopback = false;           // limit loopback peers too
  std::size_t max_owners = 4096;   // buckets kept before idle ones are dropped
  bool enabled() const noexcept { return requests_per_second > 0 || bytes_per_second > 0; }
};

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RateLimiter(RateLimitOptions options) : options_(options) {}

  // Whether `owner` may make a request now; if not, how long until it may.
  // Takes a request token when admitted.
  std::optional<std::chrono::milliseconds> admit(std::string_view owner, bool loopback, Clock::time_point now);
  // Body bytes that passed for `owner` (in or out).
  void charge_bytes(std::string_view owner, bool loopback, std::uint64_t bytes, Clock::time_point now);

  const RateLimitOptions& options() const noexcept { return options_; }
  std::size_t owners() const;
  std::uint64_t refused() const;

 private:
  struct Bucket {
    double requests = 0;  // tokens
    double bytes = 0;     // tokens; negative is debt
    Clock::time_point at;
  };
  bool applies(bool loopback) const noexcept { return options_.enabled() && (!loopback || options_.loopback); }
  Bucket& bucket(std::string_view owner, Clock::time_point now);  // mutex held; refilled to `now`
  void forget_idle(Clock::time_point now);                         // mutex held

  const RateLimitOptions options_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::uint64_t refused_ = 0;
};

}  // namespace memd
