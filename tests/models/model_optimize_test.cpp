// Idle models and load progress (issue 15, items 2 and 5) on host devices:
// optimize() offloads idle models a tier down and never a pinned or
// within-keep-alive one, reports the bytes it freed as the allocator sees
// them, drops the RAM tier to its floor; the keep-alive timer and the
// release callback reach the same logic; a load publishes throttled
// model_progress events ending with a final one.
#include <gtest/gtest.h>

#include <thread>

#include "model_manager_fixture.hpp"
#include "models/model_manager.hpp"
#include "safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;
using namespace std::chrono_literals;

const DeviceId kDev = DeviceId::host(0);

// One host device of 64 MiB; the keep-alive timer off unless `sweep` is set.
struct Fixture : ModelManagerFixture {
  explicit Fixture(std::uint64_t ram_cache = 64 * kMiB, std::chrono::milliseconds sweep = 0ms)
      : ModelManagerFixture(
            {.ram_cache_bytes = ram_cache, .models = [=](ModelOptions& m) { m.keep_alive_sweep = sweep; }}) {}

  // Loads on host:0 unless the request names a device.
  ModelStatus load(ModelLoadRequest r) {
    if (!r.device) r.device = kDev;
    return ModelManagerFixture::load(std::move(r));
  }
  ModelTier tier(std::string_view name) { return models->status(name)->tier; }
  std::uint64_t bytes(std::string_view name) { return models->status(name)->bytes; }
  // What the allocator counts on a device (requested bytes of live allocations).
  std::uint64_t on(DeviceId device) {
    auto by = manager->requested_by_device();
    auto it = by.find(device);
    return it == by.end() ? 0 : it->second;
  }
  // The events of `kind` since the last call, as their wire objects.
  std::vector<nlohmann::json> drain(EventKind kind) {
    std::vector<nlohmann::json> out;
    for (const auto& e : events->poll(1000))
      if (e->kind == kind) out.push_back(nlohmann::json::parse(e->line));
    return out;
  }
};

TEST(ModelOptimize, IdleModelsGoDownPinnedAndWithinKeepAliveStay) {
  Fixture f;
  for (const char* n : {"idle", "pinned", "warm"})
    write_safetensors(f.root.path / (std::string(n) + ".safetensors"), weights(n, 4));
  ASSERT_EQ(f.load({.name = "idle", .path = "idle.safetensors"}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "pinned", .path = "pinned.safetensors", .pinned = true}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "warm", .path = "warm.safetensors", .keep_alive = 60s}).state, ModelState::Loaded);
  const std::uint64_t idle = f.bytes("idle"), warm = f.bytes("warm");
  (void)f.drain(EventKind::model_evicted);

  // A dry run says what would move and moves nothing.
  auto plan = f.models->optimize({.dry_run = true});
  ASSERT_TRUE(plan) << plan.error().message;
  EXPECT_TRUE(plan->dry_run);
  ASSERT_EQ(plan->moved.size(), 1u);
  EXPECT_EQ(plan->moved[0].name, "idle");
  EXPECT_EQ(plan->moved[0].to, ModelTier::RAM);
  EXPECT_EQ(plan->vram_freed[kDev], idle);
  EXPECT_EQ(plan->ram_added, idle);
  EXPECT_EQ(f.tier("idle"), ModelTier::VRAM);
  EXPECT_EQ(f.models->ram_bytes(), 0u);
  EXPECT_TRUE(f.drain(EventKind::model_evicted).empty());

  // keepAliveSeconds 0: idle at once. The bytes freed are the allocator's.
  const std::uint64_t before = f.on(kDev);
  auto done = f.models->optimize({});
  ASSERT_TRUE(done) << done.error().message;
  ASSERT_EQ(done->moved.size(), 1u);
  EXPECT_EQ(done->moved[0].name, "idle");
  EXPECT_EQ(done->moved[0].from, ModelTier::VRAM);
  EXPECT_EQ(done->moved[0].to, ModelTier::RAM);
  EXPECT_EQ(done->moved[0].bytes, idle);
  EXPECT_EQ(done->vram_freed[kDev], idle);
  EXPECT_EQ(before - f.on(kDev), idle) << "what the report says is what the device got back";
  EXPECT_EQ(done->ram_added, idle);
  EXPECT_EQ(done->ram_freed, 0u);
  EXPECT_EQ(done->ram_bytes, idle);
  EXPECT_EQ(done->orphans_freed, 0u);
  EXPECT_EQ(f.tier("idle"), ModelTier::RAM);
  EXPECT_EQ(f.tier("pinned"), ModelTier::VRAM) << "pinned: never";
  EXPECT_EQ(f.tier("warm"), ModelTier::VRAM) << "within its keep-alive";
  auto evicted = f.drain(EventKind::model_evicted);
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0]["data"]["model"], "idle");
  EXPECT_EQ(evicted[0]["data"]["toTier"], "RAM");
  EXPECT_EQ(evicted[0]["data"]["reason"], "optimize");

  // A minute on: warm's keep-alive ran out, so it goes to RAM, and idle,
  // already there and above the floor, goes to Disk (one tier a pass).
  auto later = f.models->optimize({.now = std::chrono::steady_clock::now() + 61s});
  ASSERT_TRUE(later);
  EXPECT_EQ(f.tier("warm"), ModelTier::RAM);
  EXPECT_EQ(f.tier("idle"), ModelTier::Disk);
  EXPECT_EQ(f.tier("pinned"), ModelTier::VRAM);
  EXPECT_EQ(later->vram_freed[kDev], warm);
  EXPECT_EQ(later->ram_freed, idle);
  EXPECT_EQ(later->ram_added, warm);
  EXPECT_EQ(f.models->ram_bytes(), warm);
  EXPECT_EQ(later->moved.size(), 2u);

  // Both come back intact: one from RAM, one from its file.
  for (const char* n : {"idle", "warm"}) {
    ASSERT_EQ(f.load({.name = n, .path = std::string(n) + ".safetensors"}).state, ModelState::Loaded);
    EXPECT_EQ(f.tier(n), ModelTier::VRAM);
    f.expect_bytes(n);
  }
  for (const char* n : {"idle", "pinned", "warm"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelOptimize, AFullRamTierSendsIdleModelsToDisk) {
  Fixture f(8 * kMiB);
  write_safetensors(f.root.path / "big.safetensors", weights("big", 12));
  write_safetensors(f.root.path / "small.safetensors", weights("small", 2));
  ASSERT_EQ(f.load({.name = "big", .path = "big.safetensors"}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "small", .path = "small.safetensors"}).state, ModelState::Loaded);
  auto r = f.models->optimize({});
  ASSERT_TRUE(r);
  EXPECT_EQ(f.tier("big"), ModelTier::Disk) << "12 MiB does not fit an 8 MiB RAM tier";
  EXPECT_EQ(f.tier("small"), ModelTier::RAM);
  EXPECT_EQ(r->vram_freed[kDev], f.bytes("big") + f.bytes("small"));
  EXPECT_EQ(r->ram_added, f.bytes("small"));
  EXPECT_EQ(f.on(kDev), 0u);
  for (const auto& m : r->moved)
    EXPECT_EQ(m.to, m.name == "big" ? ModelTier::Disk : ModelTier::RAM) << m.name;
  for (const char* n : {"big", "small"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelOptimize, TheRamFloorKeepsWhatPinnedOrWarmModelsHold) {
  Fixture f;
  write_safetensors(f.root.path / "warm.safetensors", weights("warm", 3));
  write_safetensors(f.root.path / "cold.safetensors", weights("cold", 3));
  ASSERT_EQ(f.load({.name = "warm", .path = "warm.safetensors", .keep_alive = 60s}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "cold", .path = "cold.safetensors"}).state, ModelState::Loaded);
  // Both into the RAM tier (a minute on, warm is idle too).
  auto down = f.models->optimize({.now = std::chrono::steady_clock::now() + 61s});
  ASSERT_TRUE(down);
  ASSERT_EQ(f.tier("warm"), ModelTier::RAM);
  ASSERT_EQ(f.tier("cold"), ModelTier::RAM);
  // Now, warm is within its keep-alive again: the floor keeps it. cpu is
  // the RAM tier only: no VRAM is looked at.
  auto floor = f.models->optimize({.device = DeviceId::cpu()});
  ASSERT_TRUE(floor);
  EXPECT_EQ(floor->ram_freed, f.bytes("cold"));
  EXPECT_TRUE(floor->vram_freed.empty());
  EXPECT_EQ(f.tier("cold"), ModelTier::Disk);
  EXPECT_EQ(f.tier("warm"), ModelTier::RAM);
  EXPECT_EQ(f.models->ram_bytes(), f.bytes("warm"));
  // Pinned while in RAM: kept even past its keep-alive.
  ASSERT_TRUE(f.models->set_pinned("warm", true));
  auto pinned = f.models->optimize({.device = DeviceId::cpu(), .now = std::chrono::steady_clock::now() + 61s});
  ASSERT_TRUE(pinned);
  EXPECT_EQ(pinned->ram_freed, 0u);
  EXPECT_EQ(f.tier("warm"), ModelTier::RAM);
  // Unpinned and past it: the pressure path (the allocator's release rung
  // for pinned host memory) drops it.
  ASSERT_TRUE(f.models->set_pinned("warm", false));
  EXPECT_EQ(f.models->release_ram_to_floor(), 0u) << "within keep-alive: still the floor";
  ASSERT_TRUE(f.models->optimize({.device = DeviceId::cpu(), .dry_run = true}));
  EXPECT_EQ(f.tier("warm"), ModelTier::RAM);
  (void)f.drain(EventKind::model_evicted);
  EXPECT_EQ(f.models->optimize({.device = DeviceId::cpu(), .now = std::chrono::steady_clock::now() + 61s})->ram_freed,
            f.bytes("warm"));
  EXPECT_EQ(f.models->ram_bytes(), 0u);
  EXPECT_EQ(f.tier("warm"), ModelTier::Disk);
  auto evicted = f.drain(EventKind::model_evicted);
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0]["data"]["fromTier"], "RAM");
  EXPECT_EQ(evicted[0]["data"]["toTier"], "Disk");
  for (const char* n : {"warm", "cold"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelOptimize, ReleaseCallbackDropsTheRamTierUnderPressure) {
  Fixture f;
  write_safetensors(f.root.path / "m.safetensors", weights("m", 3));
  ASSERT_EQ(f.load({.name = "m", .path = "m.safetensors"}).state, ModelState::Loaded);
  ASSERT_TRUE(f.models->optimize({.device = kDev}));
  ASSERT_EQ(f.tier("m"), ModelTier::RAM);
  // The pressure policy's High action on cpu: the ladder's release rung.
  const std::uint64_t before = f.on(DeviceId::cpu());
  (void)f.manager->release_cached(DeviceId::cpu());
  EXPECT_EQ(before - f.on(DeviceId::cpu()), f.bytes("m"));
  EXPECT_EQ(f.tier("m"), ModelTier::Disk);
  EXPECT_EQ(f.models->ram_bytes(), 0u);
  // A GPU-like device's release rung leaves the RAM tier alone.
  ASSERT_EQ(f.load({.name = "m", .path = "m.safetensors"}).state, ModelState::Loaded);
  ASSERT_TRUE(f.models->optimize({.device = kDev}));
  (void)f.manager->release_cached(kDev);
  EXPECT_EQ(f.tier("m"), ModelTier::RAM);
  EXPECT_TRUE(f.models->unload("m"));
}

TEST(ModelOptimize, ASharedComponentStaysWhileAnyHolderIsWarm) {
  Fixture f;
  write_diffusers(f.root.path / "a", {{"unet", weights("a", 3)}, {"vae", vae()}});
  write_diffusers(f.root.path / "b", {{"unet", weights("b", 3)}, {"vae", vae()}});
  ASSERT_EQ(f.load({.name = "a", .path = "a"}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "b", .path = "b", .keep_alive = 60s}).state, ModelState::Loaded);
  ASSERT_GT(f.models->status("a")->shared_bytes, 0u);
  auto r = f.models->optimize({});
  ASSERT_TRUE(r);
  std::uint64_t unet = 0;
  const auto a = f.models->status("a");
  for (const auto& c : a->components)
    if (c.name == "unet") unet = c.bytes;
  ASSERT_EQ(r->moved.size(), 1u);
  EXPECT_EQ(r->moved[0].bytes, unet) << "only a's own UNet moved";
  EXPECT_EQ(r->vram_freed[kDev], unet);
  EXPECT_EQ(f.tier("a"), ModelTier::RAM) << "its VAE in VRAM, its UNet in RAM: every part at least in RAM";
  EXPECT_EQ(f.tier("b"), ModelTier::VRAM);
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelOptimize, TheKeepAliveTimerOffloadsOnlyModelsWithAKeepAlive) {
  {
    Fixture f;
    for (const char* n : {"timed", "untimed", "pinned"})
      write_safetensors(f.root.path / (std::string(n) + ".safetensors"), weights(n, 2));
    ASSERT_EQ(f.load({.name = "timed", .path = "timed.safetensors", .keep_alive = 60s}).state, ModelState::Loaded);
    ASSERT_EQ(f.load({.name = "untimed", .path = "untimed.safetensors"}).state, ModelState::Loaded);
    ASSERT_EQ(f.load({.name = "pinned", .path = "pinned.safetensors", .keep_alive = 60s, .pinned = true}).state,
              ModelState::Loaded);
    EXPECT_TRUE(f.models->expire_idle(std::chrono::steady_clock::now()).moved.empty()) << "nobody expired yet";
    auto r = f.models->expire_idle(std::chrono::steady_clock::now() + 61s);
    ASSERT_EQ(r.moved.size(), 1u);
    EXPECT_EQ(r.moved[0].name, "timed");
    EXPECT_EQ(f.tier("timed"), ModelTier::RAM);
    EXPECT_EQ(f.tier("untimed"), ModelTier::VRAM) << "keepAliveSeconds 0: no timer";
    EXPECT_EQ(f.tier("pinned"), ModelTier::VRAM);
    // The timer leaves the RAM tier alone.
    EXPECT_TRUE(f.models->expire_idle(std::chrono::steady_clock::now() + 3600s).moved.empty());
    EXPECT_EQ(f.tier("timed"), ModelTier::RAM);
    auto evicted = f.drain(EventKind::model_evicted);
    ASSERT_EQ(evicted.size(), 1u);
    EXPECT_EQ(evicted[0]["data"]["reason"], "keep-alive");
    for (const char* n : {"timed", "untimed", "pinned"}) EXPECT_TRUE(f.models->unload(n));
  }
  // On its own: a 1 s keep-alive runs out and the sweep offloads it.
  Fixture f(64 * kMiB, 20ms);
  write_safetensors(f.root.path / "m.safetensors", weights("m", 2));
  ASSERT_EQ(f.load({.name = "m", .path = "m.safetensors", .keep_alive = 1s}).state, ModelState::Loaded);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (f.tier("m") == ModelTier::VRAM && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_EQ(f.tier("m"), ModelTier::RAM);
  EXPECT_TRUE(f.models->unload("m"));
}

TEST(ModelOptimize, RefusesADeviceThatDoesNotExist) {
  Fixture f;
  auto r = f.models->optimize({.device = DeviceId::host(9)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::not_found);
  auto empty = f.models->optimize({});
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->moved.empty());
  EXPECT_EQ(empty->orphans_freed, 0u);
}

TEST(ModelProgress, ALoadPublishesThrottledProgressEndingWithTheFinalOne) {
  Fixture f;
  write_safetensors(f.root.path / "p.safetensors", weights("p", 24));
  (void)f.drain(EventKind::model_progress);
  const auto t0 = std::chrono::steady_clock::now();
  const auto s = f.load({.name = "p", .path = "p.safetensors"});
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(s.state, ModelState::Loaded) << s.error;
  EXPECT_EQ(s.progress_bytes, s.progress_total);
  EXPECT_GT(s.progress_total, s.bytes - 4096) << "the tensors' bytes: the component less its alignment";
  EXPECT_LE(s.progress_total, s.bytes);
  EXPECT_EQ(s.stage, "done");
  EXPECT_GT(s.rate_bytes_per_second, 0.0);
  // model_progress, then model_loaded: the final one first.
  std::vector<nlohmann::json> progress;
  bool loaded_after_final = false;
  for (const auto& e : f.events->poll(1000)) {
    if (e->kind == EventKind::model_progress) progress.push_back(nlohmann::json::parse(e->line));
    if (e->kind == EventKind::model_loaded) loaded_after_final = !progress.empty() && progress.back()["data"]["final"];
  }
  EXPECT_TRUE(loaded_after_final);
  ASSERT_FALSE(progress.empty());
  const auto& last = progress.back()["data"];
  EXPECT_EQ(last["model"], "p");
  EXPECT_EQ(last["final"], true);
  EXPECT_EQ(last["stage"], "done");
  EXPECT_EQ(last["state"], "Loaded");
  EXPECT_EQ(last["bytesDone"], s.progress_total);
  EXPECT_EQ(last["bytesTotal"], s.progress_total);
  EXPECT_EQ(last["deviceId"], "host:0");
  EXPECT_EQ(progress.back()["deviceId"], "host:0");
  // At most one per 100 ms before the final one.
  EXPECT_LE(progress.size() - 1, static_cast<std::size_t>(ms / 100) + 1) << ms << " ms";
  for (const auto& p : progress) EXPECT_EQ(p["data"]["final"], &p == &progress.back());

  // A restore from the RAM tier says so, and lands only what was missing.
  ASSERT_TRUE(f.models->optimize({}));
  (void)f.drain(EventKind::model_progress);
  ASSERT_TRUE(f.models->load({.name = "p", .path = "p.safetensors"}));
  // The restore's first event goes out before any bytes land; wait for the end.
  const auto back = f.models->wait("p");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->tier, ModelTier::VRAM);
  auto restore = f.drain(EventKind::model_progress);
  ASSERT_FALSE(restore.empty());
  EXPECT_EQ(restore.back()["data"]["final"], true);
  EXPECT_EQ(restore.back()["data"]["bytesDone"], s.bytes) << "from RAM: the whole buffer";
  EXPECT_EQ(restore.back()["data"]["bytesTotal"], s.bytes);
  // A failed load ends with a final event that carries the error.
  write_raw_safetensors(f.root.path / "bad.safetensors", R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,9]}})",
                        std::string(9, 'x'));
  const auto bad = f.load({.name = "bad", .path = "bad.safetensors"});
  ASSERT_EQ(bad.state, ModelState::Failed);
  auto failed = f.drain(EventKind::model_progress);
  ASSERT_FALSE(failed.empty());
  EXPECT_EQ(failed.back()["data"]["state"], "Failed");
  EXPECT_EQ(failed.back()["data"]["stage"], "failed");
  EXPECT_TRUE(failed.back()["data"].contains("error"));
  for (const char* n : {"p", "bad"}) EXPECT_TRUE(f.models->unload(n));
}

}  // namespace
}  // namespace memd
