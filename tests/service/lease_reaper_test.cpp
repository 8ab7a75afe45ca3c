// LeaseReaper on an injected clock: wake() sweeps at once with the clock's
// time, the interval sweeps on its own, a throwing sweep does not end it,
// and stop() (or the destructor, mid-sweep) joins before returning, after
// which no sweep runs.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "service/lease_reaper.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;

// Polls `done` for up to five seconds: generous for a loaded CI machine.
template <typename F>
bool eventually(F done) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

struct FakeClock {
  std::atomic<std::int64_t> seconds{1000};
  LeaseClock clock() {
    return [this] { return SteadyTime{std::chrono::seconds(seconds.load())}; };
  }
};

TEST(LeaseReaper, WakeSweepsAtOnceWithTheInjectedTime) {
  FakeClock fake;
  std::atomic<std::int64_t> seen{-1};
  LeaseReaper reaper([&](SteadyTime now) { seen = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count(); },
                     std::chrono::hours(1), fake.clock());
  fake.seconds = 1060;  // a lease of 60 s has run out; the hour-long interval has not
  reaper.wake();
  ASSERT_TRUE(eventually([&] { return seen.load() == 1060; })) << "saw " << seen.load();
  EXPECT_GE(reaper.sweeps(), 1u);
}

TEST(LeaseReaper, SweepsEveryIntervalAndSurvivesAThrowingSweep) {
  std::atomic<int> calls{0};
  LeaseReaper reaper(
      [&](SteadyTime) {
        if (++calls == 1) throw std::runtime_error("first sweep fails");
      },
      5ms);
  ASSERT_TRUE(eventually([&] { return calls.load() >= 4; })) << calls.load() << " sweeps";
}

TEST(LeaseReaper, StopJoinsAndNothingSweepsAfter) {
  std::atomic<int> calls{0};
  LeaseReaper reaper([&](SteadyTime) { ++calls; }, 1ms);
  ASSERT_TRUE(eventually([&] { return calls.load() >= 2; }));
  reaper.stop();
  const int after_stop = calls.load();
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls.load(), after_stop);
  reaper.stop();  // idempotent
  reaper.wake();  // and harmless once stopped
  std::this_thread::sleep_for(5ms);
  EXPECT_EQ(calls.load(), after_stop);
}

TEST(LeaseReaper, DestroyedMidSweepWaitsForIt) {
  std::atomic<bool> in_sweep{false}, finished{false};
  {
    LeaseReaper reaper(
        [&](SteadyTime) {
          in_sweep = true;
          std::this_thread::sleep_for(30ms);
          finished = true;
        },
        std::chrono::hours(1));
    reaper.wake();
    ASSERT_TRUE(eventually([&] { return in_sweep.load(); }));
  }
  EXPECT_TRUE(finished.load()) << "the destructor returned while a sweep was running";
}

TEST(LeaseReaper, StopFromAnotherThreadWhileWaiting) {
  LeaseReaper reaper([](SteadyTime) {}, std::chrono::hours(1));
  std::thread stopper([&] { reaper.stop(); });
  stopper.join();
  EXPECT_EQ(reaper.sweeps(), 0u);
}

}  // namespace
}  // namespace memd
