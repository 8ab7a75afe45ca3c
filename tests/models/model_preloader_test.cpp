// Preloading on prediction (issue 15, item 7), on host devices: a scripted
// sequence (a, then b, again and again) makes b the expected next model, so
// using a brings b up — into idle VRAM, or from Disk into the RAM tier —
// and b's use is a hit; never by evicting anything; an eviction before use
// is a miss; off means off; an unload or a real load racing a preload ends
// clean.
#include "models/model_preloader.hpp"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "model_manager_fixture.hpp"
#include "models/model_manager.hpp"
#include "safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;

const DeviceId kDev = DeviceId::host(0);

// One host device of 64 MiB and three models a, b and c of 6 MiB (+ a bias):
// one component each, rounded to 8 MiB of VRAM units.
struct Fixture : ModelManagerFixture {
  explicit Fixture(std::uint64_t ram_cache, bool preload = true, double threshold = 0.5)
      : ModelManagerFixture({.ram_cache_bytes = ram_cache, .models = [=](ModelOptions& m) {
                               m.preload = preload;
                               m.preload_threshold = threshold;
                             }}) {
    for (const char* n : {"a", "b", "c"})
      write_safetensors(root.path / (std::string(n) + ".safetensors"), weights(n, 6));
  }

  static ModelLoadRequest request(const std::string& name, bool pinned = false) {
    return {.name = name, .path = name + ".safetensors", .device = kDev, .pinned = pinned};
  }
  ModelStatus use(const std::string& name, bool pinned = false) { return load(request(name, pinned)); }
  // What the last use led to has happened.
  void settle() {
    if (auto* p = models->preloader()) p->wait_idle();
  }
  ModelStatus status(const std::string& name) { return *models->status(name); }
  // The model events since the last call, as "kind:model".
  std::vector<std::string> kinds() {
    return event_kinds([](EventKind k) {
      return to_string(k).starts_with("model_") && k != EventKind::model_progress;  // progress: its own tests
    });
  }
  // a (pinned) and b loaded, then a, b, a, b, a, b: b follows a.
  void script() {
    ASSERT_EQ(use("a", true).state, ModelState::Loaded);
    ASSERT_EQ(use("b").state, ModelState::Loaded);
    for (int i = 0; i < 3; ++i) {
      use("a", true);
      use("b");
    }
    settle();
  }
  // b leaves VRAM (a is pinned: b is the one that goes).
  void evict_b() {
    EXPECT_GT(models->evict_for(kDev, 8 * kMiB), 0u);
    EXPECT_NE(status("b").tier, ModelTier::VRAM);
  }
  // After script(): a fills half of host:0 (a 16 MiB limit, so a preload
  // into VRAM would pass the ceiling), c is in the RAM tier (an 8 MiB one:
  // c went there after b, which dropped b's copy), b is on Disk.
  void b_on_disk_c_in_ram() {
    limit_device(kDev, 16 * kMiB);
    evict_b();
    ASSERT_EQ(use("c").state, ModelState::Loaded);
    settle();
    EXPECT_GT(models->evict_for(kDev, 8 * kMiB), 0u);
    ASSERT_EQ(status("b").tier, ModelTier::Disk);
    ASSERT_EQ(status("c").tier, ModelTier::RAM);
  }
};

TEST(ModelPreloader, UsingABringsBIntoIdleVramAndBsUseIsAHit) {
  Fixture f(64 * kMiB);
  ASSERT_NE(f.models->preloader(), nullptr);
  f.script();
  f.evict_b();
  EXPECT_EQ(f.status("b").tier, ModelTier::RAM);
  EXPECT_EQ(f.models->predictor().stats().preloads, 0u) << "b was in VRAM all along until now";
  (void)f.kinds();
  // a again: b is expected next, and host:0 has idle room for it.
  f.use("a", true);
  f.settle();
  auto b = f.status("b");
  EXPECT_EQ(b.tier, ModelTier::VRAM);
  EXPECT_EQ(b.state, ModelState::Loaded);
  EXPECT_TRUE(b.preloaded);
  EXPECT_EQ(b.stage, "preloaded");
  EXPECT_EQ(f.kinds(), (std::vector<std::string>{"model_preload_started:b", "model_preload_finished:b"}));
  EXPECT_EQ(f.status("a").tier, ModelTier::VRAM);
  auto p = f.models->predictor().stats();
  EXPECT_EQ(p.preloads, 1u);
  EXPECT_EQ(p.hits, 0u);
  // b asked for: already resident, a hit for the model and the predictor.
  const auto hits = b.hits;
  auto now = f.models->load(Fixture::request("b"));
  ASSERT_TRUE(now);
  EXPECT_EQ(now->state, ModelState::Loaded) << "no job: it was there";
  EXPECT_EQ(now->hits, hits + 1);
  EXPECT_FALSE(now->preloaded);
  p = f.models->predictor().stats();
  EXPECT_EQ(p.hits, 1u);
  EXPECT_EQ(p.misses, 0u);
  EXPECT_DOUBLE_EQ(p.hit_rate(), 1.0);
  f.expect_bytes("b");
  f.settle();
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

// A preloaded model's keep-alive counts from the preload: the keep-alive
// sweep does not take down at once what a guess just brought up because its
// last use is older than its keep-alive.
TEST(ModelPreloader, TheKeepAliveSweepLeavesAFreshPreloadInPlace) {
  Fixture f(64 * kMiB);
  f.script();
  auto b = Fixture::request("b");
  b.keep_alive = std::chrono::seconds(1);
  ASSERT_EQ(f.load(b).state, ModelState::Loaded);  // b's last use, with a 1 s keep-alive
  f.settle();
  f.evict_b();
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // b's keep-alive runs out
  f.use("a", true);
  f.settle();
  ASSERT_EQ(f.status("b").tier, ModelTier::VRAM) << "preloaded";
  const auto swept = f.models->expire_idle(std::chrono::steady_clock::now());
  EXPECT_EQ(f.status("b").tier, ModelTier::VRAM) << "the sweep took down a fresh preload";
  EXPECT_TRUE(swept.moved.empty());
  // Once its keep-alive has run out since the preload too, it goes.
  (void)f.models->expire_idle(std::chrono::steady_clock::now() + std::chrono::seconds(2));
  EXPECT_NE(f.status("b").tier, ModelTier::VRAM);
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelPreloader, FromDiskIntoTheRamTierWhenVramHasNoIdleRoom) {
  Fixture f(8 * kMiB);  // the RAM tier holds one 6 MiB model
  f.script();
  // Room for two models on host:0: a preload into VRAM would fill it past
  // the ceiling, so b (on Disk) can only come up into the RAM tier, once c
  // has left it.
  ASSERT_NO_FATAL_FAILURE(f.b_on_disk_c_in_ram());
  ASSERT_TRUE(f.models->unload("c"));
  EXPECT_EQ(f.models->ram_bytes(), 0u);
  (void)f.kinds();
  f.use("a", true);
  f.settle();
  auto b = f.status("b");
  EXPECT_EQ(b.tier, ModelTier::RAM);
  EXPECT_TRUE(b.preloaded);
  EXPECT_EQ(b.ram_bytes, b.bytes);
  EXPECT_EQ(f.models->ram_bytes(), b.bytes);
  EXPECT_EQ(f.kinds(), (std::vector<std::string>{"model_preload_started:b", "model_preload_finished:b"}));
  // b asked for: restored from the RAM tier (one device copy of its bytes,
  // not a read of its file), and the predictor counts a hit.
  const auto copied = f.engine->stats().bytes_copied;
  const auto s = f.use("b");
  ASSERT_EQ(s.state, ModelState::Loaded) << s.error;
  EXPECT_EQ(s.tier, ModelTier::VRAM);
  EXPECT_FALSE(s.preloaded);
  EXPECT_EQ(f.engine->stats().bytes_copied - copied, s.bytes) << "restored by a copy from the RAM tier";
  f.expect_bytes("b");
  const auto p = f.models->predictor().stats();
  EXPECT_EQ(p.preloads, 1u);
  EXPECT_EQ(p.hits, 1u);
  f.settle();
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelPreloader, NeverEvictsForAGuess) {
  Fixture f(8 * kMiB);
  f.script();
  // Now: a fills half of host:0 (another model would pass the ceiling), c
  // fills the RAM tier (b would not fit beside it), b is on Disk.
  ASSERT_NO_FATAL_FAILURE(f.b_on_disk_c_in_ram());
  (void)f.kinds();
  f.use("a", true);
  f.settle();
  EXPECT_EQ(f.kinds(), std::vector<std::string>{}) << "nothing preloaded, nothing evicted";
  EXPECT_EQ(f.status("b").tier, ModelTier::Disk);
  EXPECT_FALSE(f.status("b").preloaded);
  EXPECT_EQ(f.status("c").tier, ModelTier::RAM) << "the RAM tier kept what it had";
  EXPECT_EQ(f.status("a").tier, ModelTier::VRAM);
  EXPECT_EQ(f.models->predictor().stats().preloads, 0u);
  for (const char* n : {"a", "b", "c"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelPreloader, APreloadEvictedUnusedIsAMiss) {
  Fixture f(64 * kMiB);
  f.script();
  f.evict_b();
  f.use("a", true);
  f.settle();
  ASSERT_TRUE(f.status("b").preloaded);
  // Room wanted on host:0 before b is used: b (a is pinned) goes down again.
  EXPECT_GT(f.models->evict_for(kDev, 8 * kMiB), 0u);
  EXPECT_EQ(f.status("b").tier, ModelTier::RAM);
  EXPECT_FALSE(f.status("b").preloaded);
  const auto p = f.models->predictor().stats();
  EXPECT_EQ(p.preloads, 1u);
  EXPECT_EQ(p.hits, 0u);
  EXPECT_EQ(p.misses, 1u);
  EXPECT_DOUBLE_EQ(p.hit_rate(), 0.0);
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelPreloader, OffOrBelowTheThresholdDoesNothing) {
  for (const bool on : {false, true}) {
    SCOPED_TRACE(on ? "threshold 0.99" : "off");
    Fixture f(64 * kMiB, on, 0.99);
    EXPECT_EQ(f.models->preloader() != nullptr, on);
    f.script();
    f.evict_b();
    (void)f.kinds();
    f.use("a", true);
    f.settle();
    if (!on) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // nothing to wait for: nothing runs
    EXPECT_EQ(f.status("b").tier, ModelTier::RAM);
    EXPECT_FALSE(f.status("b").preloaded);
    EXPECT_EQ(f.kinds(), std::vector<std::string>{});
    EXPECT_EQ(f.models->predictor().stats().preloads, 0u);
    for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
  }
}

// An unload right after the use that starts a preload, whatever point the
// preload has reached: it succeeds (a preload is cancelled and waited for,
// never a conflict), nothing of b stays behind, every preload is settled.
TEST(ModelPreloader, UnloadDuringAPreloadIsClean) {
  Fixture f(64 * kMiB);
  ASSERT_EQ(f.use("a", true).state, ModelState::Loaded);
  const auto a_bytes = f.held_by_models();
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(round);
    ASSERT_EQ(f.use("b").state, ModelState::Loaded);
    for (int i = 0; i < 3; ++i) {
      f.use("a", true);
      f.use("b");
    }
    f.settle();
    f.evict_b();
    ASSERT_TRUE(f.models->load(Fixture::request("a", true)));  // nudges the preloader
    auto gone = f.models->unload("b");
    ASSERT_TRUE(gone) << gone.error().message;
    f.settle();
    EXPECT_EQ(f.held_by_models(), a_bytes) << "only a's buffers left";
    EXPECT_EQ(f.models->ram_bytes(), 0u);
    const auto p = f.models->predictor().stats();
    EXPECT_EQ(p.preloads, p.hits + p.misses) << "every preload is a hit or a miss once b is gone";
  }
  EXPECT_TRUE(f.models->unload("a"));
}

// A real load right after the use that starts a preload of the same model:
// before the preload it simply runs, during it takes the preload over,
// after it is a hit; in every case b ends loaded in VRAM with its bytes.
TEST(ModelPreloader, ALoadRacingAPreloadTakesItOver) {
  Fixture f(64 * kMiB);
  f.script();
  for (int round = 0; round < 8; ++round) {
    SCOPED_TRACE(round);
    f.evict_b();
    ASSERT_TRUE(f.models->load(Fixture::request("a", true)));
    ASSERT_TRUE(f.models->load(Fixture::request("b")));
    auto b = f.models->wait("b");
    ASSERT_TRUE(b) << b.error().message;
    EXPECT_EQ(b->state, ModelState::Loaded) << b->error;
    EXPECT_EQ(b->tier, ModelTier::VRAM);
    EXPECT_FALSE(b->preloaded);
    f.expect_bytes("b");
    f.settle();
  }
  const auto p = f.models->predictor().stats();
  EXPECT_EQ(p.misses, 0u) << "b was used every time it was preloaded";
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

// Holds a preload once claimed until the test lets it go.
struct Gate {
  std::promise<void> claimed, go;
  std::shared_future<void> go_future = go.get_future().share();
  void install(ModelPreloader& p) {
    p.set_claimed_hook([this](const std::string&) {
      claimed.set_value();
      go_future.wait();
    });
  }
  bool wait_claimed() { return claimed.get_future().wait_for(std::chrono::seconds(30)) == std::future_status::ready; }
  // After script() and b's eviction, a's use starts b's preload: held here
  // once claimed, the model events so far drained.
  void hold_preload_of_b(Fixture& f) {
    f.script();
    f.evict_b();
    (void)f.kinds();
    install(*f.models->preloader());
    f.use("a", true);
    ASSERT_TRUE(wait_claimed());
  }
};

nlohmann::json last_event(Fixture& f, EventKind kind, std::vector<std::string>* kinds = nullptr) {
  nlohmann::json out;
  for (const auto& e : f.events->poll(1000)) {
    if (kinds && to_string(e->kind).starts_with("model_") && e->kind != EventKind::model_progress)
      kinds->push_back(std::string(to_string(e->kind)) + ":" + nlohmann::json::parse(e->line)["data"].value("model", ""));
    if (e->kind == kind) out = nlohmann::json::parse(e->line)["data"];
  }
  return out;
}

TEST(ModelPreloader, AnUnloadCancelsAPreloadInFlightAndWaitsForIt) {
  Fixture f(64 * kMiB);
  Gate gate;
  ASSERT_NO_FATAL_FAILURE(gate.hold_preload_of_b(f));
  EXPECT_EQ(f.status("b").stage, "preloading");
  EXPECT_FALSE(f.status("b").preloaded) << "not until it is up";
  auto unloading = std::async(std::launch::async, [&] { return f.models->unload("b"); });
  // The unload has cancelled the preload and waits for it to stop.
  EXPECT_EQ(unloading.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  gate.go.set_value();
  auto gone = unloading.get();
  ASSERT_TRUE(gone) << gone.error().message;
  f.models->preloader()->set_claimed_hook(nullptr);
  f.settle();
  std::vector<std::string> kinds;
  const auto finished = last_event(f, EventKind::model_preload_finished, &kinds);
  EXPECT_EQ(kinds, (std::vector<std::string>{"model_preload_started:b", "model_preload_finished:b", "model_evicted:b"}));
  EXPECT_EQ(finished.value("ok", true), false);
  EXPECT_NE(finished.value("error", "").find("cancelled"), std::string::npos) << finished.dump();
  const auto p = f.models->predictor().stats();
  EXPECT_EQ(p.preloads, 1u);
  EXPECT_EQ(p.hits, 0u);
  EXPECT_EQ(p.misses, 1u);
  EXPECT_EQ(f.models->ram_bytes(), 0u) << "b's RAM copy went with it";
  EXPECT_TRUE(f.models->unload("a"));
}

TEST(ModelPreloader, ALoadDuringAPreloadTakesItOverAndCountsAHit) {
  Fixture f(64 * kMiB);
  Gate gate;
  ASSERT_NO_FATAL_FAILURE(gate.hold_preload_of_b(f));
  auto started = f.models->load(Fixture::request("b"));
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ(started->state, ModelState::Loading) << "the load's own job follows the preload";
  gate.go.set_value();
  auto b = f.models->wait("b");
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(b->state, ModelState::Loaded) << b->error;
  EXPECT_EQ(b->tier, ModelTier::VRAM);
  EXPECT_FALSE(b->preloaded) << "used";
  f.models->preloader()->set_claimed_hook(nullptr);
  f.settle();
  std::vector<std::string> kinds;
  const auto finished = last_event(f, EventKind::model_preload_finished, &kinds);
  EXPECT_EQ(kinds, (std::vector<std::string>{"model_preload_started:b", "model_preload_finished:b", "model_loaded:b"}));
  EXPECT_EQ(finished.value("ok", false), true);
  const auto p = f.models->predictor().stats();
  EXPECT_EQ(p.preloads, 1u);
  EXPECT_EQ(p.hits, 1u);
  EXPECT_EQ(p.misses, 0u);
  f.expect_bytes("b");
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

}  // namespace
}  // namespace memd
