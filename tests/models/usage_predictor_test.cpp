// The usage predictor on scripted sequences whose next model is known.
#include "models/usage_predictor.hpp"

#include <gtest/gtest.h>

namespace memd {
namespace {

using Clock = UsagePredictor::Clock;
using namespace std::chrono_literals;

// The most likely model that is not the one in use.
std::string next_after(const UsagePredictor& p, Clock::time_point now) {
  const auto last = p.last_used();
  for (const auto& m : p.predict(now, 100))
    if (!last || m.model != *last) return m.model;
  return {};
}

TEST(UsagePredictor, ACycleIsPredictedFromItsSuccessions) {
  UsagePredictor p;
  auto t = Clock::now();
  // base -> refiner -> upscaler, three times; "other" used often but never in the cycle.
  for (int i = 0; i < 6; ++i) p.record_use("other", t += 1s);
  for (int round = 0; round < 3; ++round)
    for (const char* m : {"base", "refiner", "upscaler"}) p.record_use(m, t += 10s);
  p.record_use("base", t += 10s);
  EXPECT_EQ(next_after(p, t), "refiner");
  p.record_use("refiner", t += 10s);
  EXPECT_EQ(next_after(p, t), "upscaler");
  double sum = 0;
  for (const auto& m : p.predict(t, 100)) sum += m.probability;
  EXPECT_NEAR(sum, 1.0, 1e-9);
  EXPECT_GT(p.reuse_probability("upscaler", t), p.reuse_probability("other", t));
  EXPECT_EQ(p.reuse_probability("never-seen", t), 0.0);
}

TEST(UsagePredictor, WithoutSuccessionsFrequencyAndRecencyDecide) {
  UsagePredictor p;
  auto t = Clock::now();
  for (int i = 0; i < 5; ++i) p.record_use("daily", t += 1s);
  p.record_use("once", t += 1s);
  // "once" is the last used: it has no successors, so frequency and recency rank.
  const auto ranked = p.predict(t, 2);
  ASSERT_EQ(ranked.size(), 2u);
  EXPECT_EQ(ranked[0].model, "daily");
  // Hours later both have decayed alike: still a distribution.
  const auto later = p.predict(t + 5h, 2);
  EXPECT_NEAR(later[0].probability + later[1].probability, 1.0, 1e-9);
}

TEST(UsagePredictor, PreloadsCountAsHitsWhenUsedAndMissesWhenEvicted) {
  UsagePredictor p;
  auto t = Clock::now();
  p.record_use("a", t);
  p.record_use("b", t += 1s);
  p.record_preload("a");
  EXPECT_TRUE(p.preloaded("a"));
  p.record_use("a", t += 1s);  // hit
  EXPECT_FALSE(p.preloaded("a"));
  p.record_preload("b");
  p.record_eviction("b");      // miss
  EXPECT_FALSE(p.preloaded("b"));
  p.record_preload("never-used");  // nothing predicted it: not counted
  EXPECT_FALSE(p.preloaded("never-used"));
  const auto s = p.stats();
  EXPECT_EQ(s.preloads, 2u);
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_DOUBLE_EQ(s.hit_rate(), 0.5);
}

TEST(UsagePredictor, BoundedAndForgets) {
  PredictorOptions o;
  o.max_models = 3;
  o.max_successors = 2;
  UsagePredictor p(o);
  auto t = Clock::now();
  for (const char* m : {"a", "b", "c", "d"}) p.record_use(m, t += 1s);
  const auto all = p.predict(t, 100);
  EXPECT_EQ(all.size(), 3u);
  for (const auto& m : all) EXPECT_NE(m.model, "a") << "the least recently used is forgotten";
  p.forget("d");
  EXPECT_FALSE(p.last_used());
  EXPECT_EQ(p.predict(t, 100).size(), 2u);
  // Successors are capped (two here): the rarest goes, the frequent stays.
  o.max_models = 10;
  UsagePredictor q(o);
  for (const char* m : {"x", "s1", "x", "s1", "x", "s2", "x", "s3"}) q.record_use(m, t += 1s);
  q.record_use("x", t += 1s);
  EXPECT_EQ(next_after(q, t), "s1");
}

// A restart (issue 17, item 4): the history leaves on the wall clock and
// comes back on a new steady clock, predicting what it predicted before.
TEST(UsagePredictor, TheHistoryCrossesARestartOnTheWallClock) {
  UsagePredictor p;
  auto t = Clock::now();
  for (int round = 0; round < 3; ++round)
    for (const char* m : {"base", "refiner", "upscaler"}) p.record_use(m, t += 10s);
  p.record_use("base", t += 10s);
  const auto g = p.generation();
  const auto wall = std::chrono::system_clock::now();
  const PredictorHistory h = p.history(t, wall);
  EXPECT_EQ(p.generation(), g) << "reading it changes nothing";
  ASSERT_EQ(h.models.size(), 3u);
  EXPECT_EQ(h.last, "base");
  for (const auto& m : h.models) {
    EXPECT_LE(m.last_use, wall);
    if (m.name == "base") {
      EXPECT_EQ(m.last_use, wall);
    }
    if (m.name == "upscaler") {
      EXPECT_EQ(m.last_use, wall - 10s);
    }
  }
  // A new process: another steady clock, an hour later on the wall.
  UsagePredictor q;
  const auto t2 = Clock::time_point(Clock::duration(12345));
  q.restore(h, t2, wall + 1h);
  EXPECT_GT(q.generation(), 0u);
  EXPECT_EQ(q.last_used(), "base");
  EXPECT_EQ(next_after(q, t2), "refiner");
  const auto back = q.history(t2, wall + 1h);
  ASSERT_EQ(back.models.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back.models[i].name, h.models[i].name);
    EXPECT_EQ(back.models[i].successors, h.models[i].successors);
    EXPECT_DOUBLE_EQ(back.models[i].frequency, h.models[i].frequency);
    EXPECT_LT(std::chrono::abs(back.models[i].last_use - h.models[i].last_use), 1ms);
  }
  // A use counts on from there.
  q.record_use("refiner", t2 + 1s);
  EXPECT_EQ(next_after(q, t2 + 1s), "upscaler");
}

TEST(UsagePredictor, ARestoreKeepsWithinTheBoundsAndDropsWhatNamesNoModel) {
  UsagePredictor p({.max_models = 2, .max_successors = 1});
  const auto wall = std::chrono::system_clock::now();
  PredictorHistory h;
  h.last = "gone";
  h.models.push_back({"old", 1, wall - 2h, wall - 2h, {{"new", 1}}});
  h.models.push_back({"new", 1, wall - 1h, wall - 1h, {{"mid", 5}, {"old", 2}, {"gone", 9}, {"new", 4}}});
  h.models.push_back({"mid", 1, wall + 1h, wall + 1h, {}});  // the wall clock went back: counts as now
  p.restore(h, Clock::now(), wall);
  const auto back = p.history(Clock::now(), wall);
  ASSERT_EQ(back.models.size(), 2u) << "the two most recently used";
  EXPECT_EQ(back.models[0].name, "mid");
  EXPECT_LE(back.models[0].last_use, std::chrono::system_clock::now());
  EXPECT_EQ(back.models[1].name, "new");
  using Successors = std::map<std::string, std::uint64_t, std::less<>>;
  EXPECT_EQ(back.models[1].successors, (Successors{{"mid", 5}})) << "its most frequent one that is remembered";
  EXPECT_FALSE(back.last) << "'gone' is not remembered";
}

}  // namespace
}  // namespace memd
