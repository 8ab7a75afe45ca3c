// The eviction planner: pinned never, priority first, keep-alive next, then
// the cheapest expected cost; only the bytes needed; shared components
// freed only when every holder goes.
#include "core/eviction_plan.hpp"

#include <gtest/gtest.h>

namespace memd {
namespace {

constexpr std::uint64_t GB = 1'000'000'000;

// One component per model, of `bytes`.
EvictionInput solo(std::vector<EvictionCandidate> models, std::vector<std::uint64_t> bytes, std::uint64_t need) {
  EvictionInput in;
  in.component_bytes = std::move(bytes);
  for (std::uint32_t i = 0; i < models.size(); ++i) models[i].components = {i};
  in.models = std::move(models);
  in.bytes_needed = need;
  return in;
}

EvictionCandidate idle(double seconds, double restore = 1.0) {
  EvictionCandidate c;
  c.idle_seconds = seconds;
  c.restore_seconds = restore;
  return c;
}

TEST(EvictionPlan, PinnedNeverPriorityFirstThenKeepAliveThenCheapest) {
  auto pinned = idle(10'000);
  pinned.pinned = true;
  auto important = idle(10'000);
  important.priority = 5;
  auto kept = idle(10'000);
  kept.in_keep_alive = true;
  auto recent = idle(5);
  auto old = idle(3'600);
  auto in = solo({pinned, important, kept, recent, old}, {GB, GB, GB, GB, GB}, 0);
  EXPECT_EQ(eviction_order(in), (std::vector<std::uint32_t>{4, 3, 2, 1}));
  in.bytes_needed = GB;
  auto plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->victims, (std::vector<std::uint32_t>{4}));
  EXPECT_EQ(plan->freed_bytes, GB);
  EXPECT_EQ(plan->evictable_bytes, 4 * GB) << "everything but the pinned model";
  in.bytes_needed = 4 * GB;
  plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->enough);
  EXPECT_EQ(plan->victims, (std::vector<std::uint32_t>{4, 3, 2, 1}));
}

TEST(EvictionPlan, ReuseProbabilityAndRestoreCostOutweighIdleness) {
  // Equally idle: the one that is cheap to bring back goes first.
  auto cheap = idle(60, 0.1);
  auto dear = idle(60, 10.0);
  auto in = solo({dear, cheap}, {GB, GB}, GB);
  auto plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->victims, (std::vector<std::uint32_t>{1}));
  // The predictor says the long-idle one is wanted next: the other goes.
  auto expected = idle(3'600);
  expected.reuse_probability = 0.9;
  auto unlikely = idle(30);
  unlikely.reuse_probability = 0.05;
  in = solo({expected, unlikely}, {GB, GB}, GB);
  plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->victims, (std::vector<std::uint32_t>{1}));
}

TEST(EvictionPlan, OnlyAsManyBytesAsNeeded) {
  // Cheapest first would take the small model, then the big one; the big one
  // alone is enough, so the small one stays.
  auto small = idle(7'200);
  auto big = idle(600);
  auto in = solo({small, big}, {1 * GB, 10 * GB}, 5 * GB);
  auto plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->victims, (std::vector<std::uint32_t>{1}));
  EXPECT_EQ(plan->freed_bytes, 10 * GB);
}

TEST(EvictionPlan, SharedComponentsComeBackOnlyWhenEveryHolderGoes) {
  // Two SDXL fine-tunes: own UNets (5 GB), shared encoders (1.6) and VAE (0.16).
  EvictionInput in;
  in.component_bytes = {5 * GB, 5 * GB, 1'600'000'000, 160'000'000};
  EvictionCandidate a = idle(3'600), b = idle(60);
  a.components = {0, 2, 3};
  b.components = {1, 2, 3};
  in.models = {a, b};
  in.bytes_needed = 5 * GB;
  auto plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->victims, (std::vector<std::uint32_t>{0}));
  EXPECT_EQ(plan->freed, (std::vector<std::uint32_t>{0})) << "the shared parts stay for b";
  EXPECT_EQ(plan->freed_bytes, 5 * GB);
  in.bytes_needed = 6 * GB;  // more than one UNet: both go, and the shared parts with them
  plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->freed_bytes, 10 * GB + 1'760'000'000);
  // A component held by an export in flight never comes back.
  in.held_elsewhere = {3};
  plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->freed_bytes, 10 * GB + 1'600'000'000);
}

TEST(EvictionPlan, NotEnoughEvictsNothingAndSaysHowMuchCould) {
  auto pinned = idle(1);
  pinned.pinned = true;
  auto in = solo({pinned, idle(100)}, {8 * GB, 2 * GB}, 5 * GB);
  auto plan = plan_eviction(in);
  ASSERT_TRUE(plan);
  EXPECT_FALSE(plan->enough);
  EXPECT_TRUE(plan->victims.empty()) << "a load that cannot fit must not empty the tier first";
  EXPECT_EQ(plan->evictable_bytes, 2 * GB);
}

TEST(EvictionPlan, RefusesAComponentThatDoesNotExist) {
  EvictionInput in;
  in.component_bytes = {GB};
  EvictionCandidate c;
  c.components = {3};
  in.models = {c};
  auto plan = plan_eviction(in);
  ASSERT_FALSE(plan);
  EXPECT_EQ(plan.error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace memd
