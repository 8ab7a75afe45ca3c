// RateLimiter (server/http/rate_limiter.hpp) on a clock the test moves, and
// the REST door with --rate-limit-requests against a real daemon: the
// flooding owner is held to its rate with 429 rate_limited and Retry-After,
// another owner is served meanwhile.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "server/daemon.hpp"
#include "server/http/rate_limiter.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;
using Clock = RateLimiter::Clock;

TEST(RateLimiter, HoldsAnOwnerToItsRequestRateAndSaysWhenToComeBack) {
  RateLimiter l({.requests_per_second = 10, .loopback = true});
  const auto t0 = Clock::time_point{} + 1h;
  int admitted = 0;
  std::optional<std::chrono::milliseconds> wait;
  for (int i = 0; i < 50; ++i) {
    wait = l.admit("flood", false, t0);
    if (!wait) ++admitted;
  }
  EXPECT_EQ(admitted, 10) << "a second's burst, no more";
  ASSERT_TRUE(wait);
  EXPECT_EQ(wait->count(), 100) << "one token comes back every 100 ms";
  EXPECT_FALSE(l.admit("calm", false, t0)) << "another owner has its own bucket";
  EXPECT_TRUE(l.admit("flood", false, t0 + 50ms));
  EXPECT_FALSE(l.admit("flood", false, t0 + 100ms));
  // Over ten seconds at most ten a second get through.
  admitted = 0;
  for (int ms = 101; ms <= 10'100; ++ms)
    if (!l.admit("flood", false, t0 + std::chrono::milliseconds(ms))) ++admitted;
  EXPECT_GE(admitted, 99);
  EXPECT_LE(admitted, 101);
  EXPECT_GT(l.refused(), 0u);
}

TEST(RateLimiter, BytesRunIntoDebtThatDelaysOnlyThatOwner) {
  RateLimiter l({.bytes_per_second = 1000, .loopback = true});
  const auto t0 = Clock::time_point{} + 1h;
  EXPECT_FALSE(l.admit("big", false, t0));
  l.charge_bytes("big", false, 5000, t0);  // a 5 KB download: 4 s of debt
  auto wait = l.admit("big", false, t0);
  ASSERT_TRUE(wait);
  EXPECT_EQ(wait->count(), 4000);
  EXPECT_FALSE(l.admit("small", false, t0));
  EXPECT_TRUE(l.admit("big", false, t0 + 3s));
  EXPECT_FALSE(l.admit("big", false, t0 + 4s));
}

TEST(RateLimiter, OffByDefaultAndOnLoopbackUnlessAsked) {
  RateLimiter off({});
  RateLimiter remote_only({.requests_per_second = 1});
  const auto t0 = Clock::time_point{} + 1h;
  for (int i = 0; i < 100; ++i) {
    EXPECT_FALSE(off.admit("x", false, t0));
    EXPECT_FALSE(remote_only.admit("x", true, t0));
  }
  EXPECT_FALSE(remote_only.admit("x", false, t0));
  EXPECT_TRUE(remote_only.admit("x", false, t0));
}

TEST(RateLimiter, ManyOwnerLabelsDoNotGrowWithoutBound) {
  RateLimiter l({.requests_per_second = 100, .loopback = true, .max_owners = 64});
  auto t = Clock::time_point{} + 1h;
  for (int i = 0; i < 10'000; ++i) {
    (void)l.admit("owner-" + std::to_string(i), false, t);
    t += 20ms;  // each bucket is full again 10 ms after its one request
  }
  EXPECT_LE(l.owners(), 65u);
}

TEST(RateLimitRest, TheFloodingOwnerIsHeldToItsRateAndAnotherIsServed) {
  testing::Daemon d({"--rate-limit-requests", "20", "--rate-limit-loopback"});
  ASSERT_FALSE(d.url().empty());
  httplib::Client c(d.url());
  int ok = 0, limited = 0;
  std::string retry_after, code;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 120; ++i) {
    auto r = c.Get("/api/memory/status", httplib::Headers{{"X-Memd-Owner", "flood"}});
    ASSERT_TRUE(r);
    if (r->status == 200) ++ok;
    if (r->status == 429) {
      ++limited;
      retry_after = r->get_header_value("Retry-After");
      code = nlohmann::json::parse(r->body)["error"].value("code", "");
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LE(ok, 20 + static_cast<int>(seconds * 20) + 1) << "over " << seconds << " s";
  EXPECT_GT(limited, 0);
  EXPECT_EQ(code, "rate_limited");
  EXPECT_FALSE(retry_after.empty());
  EXPECT_GE(std::stoi(retry_after), 1);
  auto calm = c.Get("/api/memory/status", httplib::Headers{{"X-Memd-Owner", "calm"}});
  ASSERT_TRUE(calm);
  EXPECT_EQ(calm->status, 200) << "another owner was refused during the flood";
  EXPECT_EQ(c.Get("/healthz")->status, 200);
}

}  // namespace
}  // namespace memd
