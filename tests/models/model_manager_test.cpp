// The model manager on host devices: loads read back byte for byte, shared
// components stored once, eviction order under a limit with a pinned model
// kept, restores from the RAM tier, and refusals that leave nothing behind.
#include "models/model_manager.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "model_manager_fixture.hpp"
#include "safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;

const DeviceId kDev = DeviceId::host(0);

// Two host devices of 64 MiB (placement picks between them).
struct Fixture : ModelManagerFixture {
  explicit Fixture(bool with_roots = true)
      : ModelManagerFixture({.host_device_sizes = {64 * kMiB, 64 * kMiB}, .with_roots = with_roots}) {}
  // The loads and evictions since the last call, as "kind:model".
  std::vector<std::string> kinds() {
    return event_kinds([](EventKind k) { return k == EventKind::model_loaded || k == EventKind::model_evicted; });
  }
};

TEST(ModelManager, LoadsADiffusersFolderAndEveryTensorReadsBack) {
  Fixture f;
  const std::map<std::string, std::vector<FakeTensor>> parts = {
      {"unet", unet("unet", 6)}, {"vae", vae()}, {"text_encoder", encoder()}};
  write_diffusers(f.root.path / "sdxl", parts);
  ModelLoadRequest r;
  r.name = "sdxl";
  r.path = "sdxl";
  r.device = kDev;
  const auto s = f.load(r);
  ASSERT_EQ(s.state, ModelState::Loaded) << s.error;
  EXPECT_EQ(s.tier, ModelTier::VRAM);
  EXPECT_EQ(s.kind, "diffusers");
  EXPECT_EQ(s.components.size(), 3u);
  EXPECT_EQ(s.vram_bytes, s.bytes);
  EXPECT_GT(s.load_gbps, 0.0);
  f.expect_bytes(s);
  EXPECT_EQ(f.kinds(), (std::vector<std::string>{"model_loaded:sdxl"}));
  // Asking again while resident is a hit, not a second load.
  auto again = f.models->load(r);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->hits, 1u);
  EXPECT_EQ(again->state, ModelState::Loaded);
  auto gone = f.models->unload("sdxl");
  ASSERT_TRUE(gone);
  EXPECT_EQ(f.held_by_models(), 0u);
}

// The status says Loaded a moment before the job has published its events
// and ended; an unload in that moment waits for it instead of answering
// conflict (memd-load --mode soak met the 409 about once a hundred loads).
TEST(ModelManager, AnUnloadRightAfterStatusSaysLoadedSucceeds) {
  Fixture f;
  write_safetensors(f.root.path / "small.safetensors", weights("small", 1));
  for (int i = 0; i < 50; ++i) {
    ModelLoadRequest r{.name = "small", .path = "small.safetensors", .device = kDev};
    ASSERT_TRUE(f.models->load(r));
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      auto s = f.models->status("small");
      ASSERT_TRUE(s) << s.error().message;
      ASSERT_NE(s->state, ModelState::Failed) << s->error;
      if (s->state == ModelState::Loaded) break;
      ASSERT_LT(std::chrono::steady_clock::now(), end) << "still loading";
    }
    auto gone = f.models->unload("small");
    ASSERT_TRUE(gone) << "load " << i << ": " << gone.error().message;
    EXPECT_EQ(f.held_by_models(), 0u);
  }
}

TEST(ModelManager, TwoFineTunesHoldTheirSharedVaeAndEncoderOnce) {
  Fixture f;
  write_diffusers(f.root.path / "base", {{"unet", unet("base", 4)}, {"vae", vae()}, {"text_encoder", encoder()}});
  write_diffusers(f.root.path / "tuned", {{"unet", unet("tuned", 4)}, {"vae", vae()}, {"text_encoder", encoder()}});
  ModelLoadRequest a{.name = "base", .path = "base", .device = kDev};
  ModelLoadRequest b{.name = "tuned", .path = "tuned", .device = kDev};
  const auto sa = f.load(a);
  const auto sb = f.load(b);
  ASSERT_EQ(sa.state, ModelState::Loaded) << sa.error;
  ASSERT_EQ(sb.state, ModelState::Loaded) << sb.error;
  auto both = f.models->status("tuned");
  ASSERT_TRUE(both);
  std::uint64_t shared = 0, unet_bytes = 0;
  for (const auto& c : both->components) {
    if (c.name == "unet") {
      unet_bytes = c.bytes;
      EXPECT_EQ(c.holders, 1u);
    } else {
      EXPECT_EQ(c.holders, 2u) << c.name << " is shared";
      EXPECT_FALSE(c.hash.empty());
      shared += c.bytes;
    }
  }
  EXPECT_EQ(both->shared_bytes, shared);
  // Stored once: two UNets and one VAE and encoder, not two of each.
  EXPECT_EQ(f.held_by_models(), 2 * unet_bytes + shared);
  // Unloading one keeps what the other still holds.
  ASSERT_TRUE(f.models->unload("base"));
  EXPECT_EQ(f.held_by_models(), unet_bytes + shared);
  f.expect_bytes(*f.models->status("tuned"));
  ASSERT_TRUE(f.models->unload("tuned"));
}

TEST(ModelManager, AStateDirectoryKeepsContentHashesSoARestartDoesNotRehash) {
  Fixture f;
  TempDir state;
  write_diffusers(f.root.path / "base", {{"unet", unet("base", 2)}, {"vae", vae()}, {"text_encoder", encoder()}});
  write_diffusers(f.root.path / "tuned", {{"unet", unet("tuned", 2)}, {"vae", vae()}, {"text_encoder", encoder()}});
  auto restart = [&] { f.restart([&](ModelOptions& m) { m.state_dir = state.path; }); };
  auto load_both = [&] {
    ASSERT_EQ(f.load({.name = "base", .path = "base", .device = kDev}).state, ModelState::Loaded);
    ASSERT_EQ(f.load({.name = "tuned", .path = "tuned", .device = kDev}).state, ModelState::Loaded);
  };
  restart();
  EXPECT_EQ(f.models->hash_cache_loaded().loaded, 0u);  // nothing kept yet
  load_both();
  const auto computed = f.models->hash_cache().misses();
  EXPECT_GE(computed, 4u) << "the shared VAE and encoder were hashed in both models";
  ASSERT_TRUE(std::filesystem::exists(state.path / kHashCacheFile)) << "written after the load that hashed";
  restart();  // the destructor writes too; the new manager reads the file
  EXPECT_EQ(f.models->hash_cache_loaded().loaded, computed);
  EXPECT_EQ(f.models->hash_cache_loaded().skipped, 0u);
  load_both();
  EXPECT_EQ(f.models->hash_cache().misses(), 0u) << "nothing rehashed after the restart";
  EXPECT_GE(f.models->hash_cache().hits(), 4u);
  EXPECT_EQ(f.models->status("tuned")->shared_bytes, f.models->status("base")->shared_bytes);
  // A cut-off file costs only its bad line.
  {
    std::ofstream(state.path / kHashCacheFile, std::ios::app) << "{\"v\":1,\"hash\":\"00";
  }
  f.models.reset();
  ModelOptions m;
  m.roots = *ModelRoots::create({f.root.path});
  m.state_dir = state.path;
  ModelManager again(*f.manager, *f.engine, *f.monitor, *f.bus, std::move(m));
  EXPECT_EQ(again.hash_cache_loaded().loaded, computed);
  EXPECT_EQ(again.hash_cache_loaded().skipped, 1u);
}

TEST(ModelManager, EvictionUnderALimitTakesTheCheapestAndNeverThePinned) {
  Fixture f;
  for (const char* n : {"a", "b", "c"}) write_safetensors(f.root.path / (std::string(n) + ".safetensors"), unet(n, 12));
  // Room for two 12 MiB models on host:0 (with their units), not three.
  f.limit_device(kDev, 30 * kMiB);
  ModelLoadRequest a{.name = "a", .path = "a.safetensors", .device = kDev, .pinned = true};
  ModelLoadRequest b{.name = "b", .path = "b.safetensors", .device = kDev};
  ModelLoadRequest c{.name = "c", .path = "c.safetensors", .device = kDev};
  ASSERT_EQ(f.load(a).state, ModelState::Loaded);
  ASSERT_EQ(f.load(b).state, ModelState::Loaded);
  (void)f.kinds();
  const auto sc = f.load(c);
  ASSERT_EQ(sc.state, ModelState::Loaded) << sc.error;
  EXPECT_EQ(f.models->status("a")->tier, ModelTier::VRAM) << "pinned: never evicted";
  EXPECT_EQ(f.models->status("b")->tier, ModelTier::RAM) << "b went down one tier, to the RAM cache";
  EXPECT_EQ(f.models->ram_bytes(), f.models->status("b")->bytes);
  EXPECT_EQ(f.kinds(), (std::vector<std::string>{"model_evicted:b", "model_loaded:c"}));
  // The counters /metrics reads move with the events.
  EXPECT_EQ(f.models->counters().loads_completed, 3u);
  EXPECT_EQ(f.models->counters().loads_failed, 0u);
  EXPECT_EQ(f.models->counters().evictions, 1u);
  // b back: c is the one that can go now; b's bytes come back from RAM intact.
  const auto sb = f.load(b);
  ASSERT_EQ(sb.state, ModelState::Loaded) << sb.error;
  EXPECT_EQ(sb.tier, ModelTier::VRAM);
  EXPECT_EQ(f.models->status("c")->tier, ModelTier::RAM);
  f.expect_bytes(sb);
  EXPECT_EQ(f.models->counters().loads_completed, 4u) << "a restore to VRAM is a load";
  EXPECT_EQ(f.models->counters().evictions, 2u);
  // Too big for the device even with every unpinned model gone: refused with
  // the numbers, nothing half-loaded.
  write_safetensors(f.root.path / "huge.safetensors", unet("huge", 24));
  const auto huge = f.load({.name = "huge", .path = "huge.safetensors", .device = kDev});
  EXPECT_EQ(huge.state, ModelState::Failed);
  EXPECT_NE(huge.error.find("short"), std::string::npos) << huge.error;
  EXPECT_EQ(f.models->status("a")->tier, ModelTier::VRAM);
  EXPECT_EQ(f.models->counters().loads_completed, 4u);
  EXPECT_EQ(f.models->counters().loads_failed, 1u);
  const auto evictions = f.models->counters().evictions;
  for (const char* n : {"a", "b", "c", "huge"}) EXPECT_TRUE(f.models->unload(n));
  EXPECT_EQ(f.models->counters().evictions, evictions) << "an unload is not an eviction";
}

// A limit set just before a load counts at once: the monitor's reading
// still has its last sample's limit (none), and the load must evict rather
// than meet the limit in the allocator.
// A switch between two models of the same size: the restore of the one in
// RAM takes the evicted one's VRAM buffer (renamed, every byte rewritten)
// instead of a new allocation, and a buffer that was ever exported is never
// handed on.
TEST(ModelManager, ARestoreReusesTheBufferItsEvictionFreedUnlessItWasExported) {
  Fixture f;
  for (const char* n : {"a", "b"}) write_safetensors(f.root.path / (std::string(n) + ".safetensors"), unet(n, 12));
  f.limit_device(kDev, 20 * kMiB);  // one 12 MiB model at a time
  ModelLoadRequest a{.name = "a", .path = "a.safetensors", .device = kDev};
  ModelLoadRequest b{.name = "b", .path = "b.safetensors", .device = kDev};
  ASSERT_EQ(f.load(a).state, ModelState::Loaded);
  ASSERT_EQ(f.load(b).state, ModelState::Loaded);  // a goes to RAM (a new buffer for b: a has no RAM copy to restore)
  const auto b_buffer = *f.models->status("b")->components.at(0).allocation;
  const auto sa = f.load(a);  // a up from RAM, b down
  ASSERT_EQ(sa.tier, ModelTier::VRAM) << sa.error;
  EXPECT_EQ(f.models->status("b")->tier, ModelTier::RAM);
  const auto a_buffer = *sa.components.at(0).allocation;
  EXPECT_EQ(a_buffer, b_buffer) << "b's buffer went to a";
  auto rec = f.manager->get(a_buffer);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->name, "a/model") << "renamed for its new holder";
  f.expect_bytes(sa);
  // Exported once (the grant is enough), a buffer is never handed on.
  auto view = f.models->export_model("a", [](const ModelExportView&) -> Result<void> { return {}; });
  ASSERT_TRUE(view) << view.error().message;
  const auto sb = f.load(b);  // b up, a down
  ASSERT_EQ(sb.tier, ModelTier::VRAM) << sb.error;
  EXPECT_NE(*sb.components.at(0).allocation, a_buffer) << "an exported buffer is not reused";
  EXPECT_FALSE(f.manager->get(a_buffer)) << "it was freed";
  f.expect_bytes(sb);
  ASSERT_TRUE(f.models->unload("a"));
  ASSERT_TRUE(f.models->unload("b"));
}

TEST(ModelManager, ALimitSetJustBeforeALoadCountsWithoutANewSample) {
  Fixture f;
  for (const char* n : {"a", "b"}) write_safetensors(f.root.path / (std::string(n) + ".safetensors"), unet(n, 12));
  f.monitor->sample_now();  // sampled without a limit
  ASSERT_EQ(f.load({.name = "a", .path = "a.safetensors", .device = kDev}).state, ModelState::Loaded);
  Limits limits;
  limits.per_device[kDev] = 20 * kMiB;  // one 12 MiB model, not two
  ASSERT_TRUE(f.manager->set_limits(limits));
  const auto b = f.load({.name = "b", .path = "b.safetensors", .device = kDev});
  ASSERT_EQ(b.state, ModelState::Loaded) << b.error;
  EXPECT_EQ(f.models->status("a")->tier, ModelTier::RAM);
  for (const char* n : {"a", "b"}) EXPECT_TRUE(f.models->unload(n));
}

// The pressure policy (issue 14) reaches model eviction through the
// allocator's reclaim callback: a device driven past Critical by model
// weights comes back under High with the cheapest model in the RAM cache.
TEST(ModelManager, CriticalPressureEvictsThroughTheReclaimCallback) {
  Fixture f;
  for (const char* n : {"old", "new"}) write_safetensors(f.root.path / (std::string(n) + ".safetensors"), unet(n, 13));
  f.limit_device(kDev, 28 * kMiB);  // 2 x 13 MiB is 92.9 %: Critical
  ASSERT_EQ(f.load({.name = "old", .path = "old.safetensors", .device = kDev}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "new", .path = "new.safetensors", .device = kDev}).state, ModelState::Loaded);
  f.monitor->note_usage(kDev);
  ASSERT_EQ(f.monitor->level(kDev), PressureLevel::Critical);
  (void)f.kinds();
  const auto actions = f.monitor->run_policy();
  bool reclaimed = false;
  for (const auto& a : actions) reclaimed = reclaimed || a.action == "reclaim";
  EXPECT_TRUE(reclaimed);
  EXPECT_LT(f.monitor->level(kDev), PressureLevel::High);
  EXPECT_EQ(f.models->status("old")->tier, ModelTier::RAM) << "the least recently used went down a tier";
  EXPECT_EQ(f.models->status("new")->tier, ModelTier::VRAM);
  EXPECT_EQ(f.kinds(), (std::vector<std::string>{"model_evicted:old"}));
  for (const char* n : {"old", "new"}) EXPECT_TRUE(f.models->unload(n));
}

TEST(ModelManager, RefusalsAndFailuresLeaveNothingBehind) {
  Fixture f;
  write_safetensors(f.root.path / "ok.safetensors", unet("ok", 2));
  // Outside the root, .., and a bad name: refused before any job.
  auto outside = f.models->load({.name = "x", .path = "/etc/passwd"});
  ASSERT_FALSE(outside);
  EXPECT_EQ(outside.error().code, ErrorCode::permission_denied);
  auto dots = f.models->load({.name = "x", .path = "../ok.safetensors"});
  ASSERT_FALSE(dots);
  auto bad_name = f.models->load({.name = "a/b", .path = "ok.safetensors"});
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().code, ErrorCode::invalid_argument);
  auto no_device = f.models->load({.name = "x", .path = "ok.safetensors", .device = DeviceId::host(7)});
  ASSERT_FALSE(no_device);
  EXPECT_EQ(no_device.error().code, ErrorCode::not_found);
  // A malformed file fails its job with the reader's message.
  write_raw_safetensors(f.root.path / "bad.safetensors", R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,9]}})",
                        std::string(9, 'x'));
  const auto bad = f.load({.name = "bad", .path = "bad.safetensors", .device = kDev});
  EXPECT_EQ(bad.state, ModelState::Failed);
  EXPECT_NE(bad.error.find("data_offsets"), std::string::npos) << bad.error;
  // The same name for another path is a conflict; the failed one unloads.
  auto taken = f.models->load({.name = "bad", .path = "ok.safetensors"});
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, ErrorCode::conflict);
  EXPECT_TRUE(f.models->unload("bad"));
  EXPECT_EQ(f.held_by_models(), 0u);
  // Without roots every load is refused, saying how to set one.
  Fixture closed(/*with_roots=*/false);
  auto off = closed.models->load({.name = "x", .path = "ok.safetensors"});
  ASSERT_FALSE(off);
  EXPECT_EQ(off.error().code, ErrorCode::permission_denied);
  EXPECT_NE(off.error().message.find("--model-root"), std::string::npos);
}

TEST(ModelManager, PlacementPicksTheDeviceWithRoom) {
  Fixture f;
  write_safetensors(f.root.path / "big.safetensors", unet("big", 40));
  write_safetensors(f.root.path / "next.safetensors", unet("next", 30));
  const auto big = f.load({.name = "big", .path = "big.safetensors"});
  ASSERT_EQ(big.state, ModelState::Loaded) << big.error;
  const auto next = f.load({.name = "next", .path = "next.safetensors"});
  ASSERT_EQ(next.state, ModelState::Loaded) << next.error;
  ASSERT_TRUE(big.device && next.device);
  EXPECT_NE(*big.device, *next.device) << "the second goes where it fits without evicting the first";
  EXPECT_EQ(f.models->status("big")->tier, ModelTier::VRAM);
  for (const char* n : {"big", "next"}) EXPECT_TRUE(f.models->unload(n));
}

// Two devices of different sizes: spread takes the roomier, fit the
// tightest that holds the model; a model one device cannot hold even empty
// skips it; one no device can hold is refused with every capacity named.
TEST(ModelManager, SpreadAndFitPlacementAndAModelLargerThanEveryDevice) {
  ModelManagerFixture f({.host_device_sizes = {64 * kMiB, 32 * kMiB}});
  const DeviceId large = DeviceId::host(0), small = DeviceId::host(1);
  write_safetensors(f.root.path / "s.safetensors", unet("s", 8));
  write_safetensors(f.root.path / "m.safetensors", unet("m", 40));
  write_safetensors(f.root.path / "xl.safetensors", unet("xl", 80));

  const auto spread = f.load({.name = "s", .path = "s.safetensors"});
  ASSERT_EQ(spread.state, ModelState::Loaded) << spread.error;
  EXPECT_EQ(spread.device, large) << "spread (the default): the most room";
  ASSERT_TRUE(f.models->unload("s"));
  auto estimate = f.models->estimate({.name = "s", .path = "s.safetensors", .placement = ModelPlacement::Fit});
  ASSERT_TRUE(estimate) << estimate.error().message;
  EXPECT_EQ(estimate->device, small);
  const auto fit = f.load({.name = "s", .path = "s.safetensors", .placement = ModelPlacement::Fit});
  ASSERT_EQ(fit.state, ModelState::Loaded) << fit.error;
  EXPECT_EQ(fit.device, small) << "fit: the least room that holds it, as estimated";
  f.expect_bytes(fit);

  // 40 MiB: host:1 (32 MiB) cannot hold it even empty, so fit takes host:0.
  const auto mid = f.load({.name = "m", .path = "m.safetensors", .placement = ModelPlacement::Fit});
  ASSERT_EQ(mid.state, ModelState::Loaded) << mid.error;
  EXPECT_EQ(mid.device, large);
  EXPECT_EQ(f.models->status("s")->tier, ModelTier::VRAM) << "nothing evicted";

  // 80 MiB fits no device: refused before anything is evicted or allocated.
  const std::uint64_t held = f.held_by_models();
  for (const auto placement : {ModelPlacement::Spread, ModelPlacement::Fit}) {
    auto refused = f.models->estimate({.name = "xl", .path = "xl.safetensors", .placement = placement});
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, ErrorCode::out_of_memory);
    for (const char* says : {"'xl' needs ", "host:0 holds ", "host:1 holds "})
      EXPECT_NE(refused.error().message.find(says), std::string::npos) << refused.error().message;
  }
  const auto xl = f.load({.name = "xl", .path = "xl.safetensors"});
  EXPECT_EQ(xl.state, ModelState::Failed);
  EXPECT_NE(xl.error.find("no device is that large"), std::string::npos) << xl.error;
  EXPECT_EQ(f.held_by_models(), held);
  EXPECT_EQ(f.models->status("s")->tier, ModelTier::VRAM);
  EXPECT_EQ(f.models->status("m")->tier, ModelTier::VRAM);
  for (const char* n : {"s", "m", "xl"}) (void)f.models->unload(n);
  EXPECT_EQ(f.held_by_models(), 0u);
}

// A model's components are exportable allocations, outside every pool. The
// monitor's sample must count them as memd's, not as another process's: else
// the room a load sees counts each resident model twice (once as "other
// processes" shrinking the capacity, once as memd's bytes in use), and loads
// evict early or are placed badly. Found by the issue-18 dry run on host
// stand-ins; the same sums are made for a GPU.
TEST(ModelManager, AResidentModelIsCountedOnceInTheRoomAfterASample) {
  ModelManagerFixture f({.host_device_sizes = {64 * kMiB}});
  write_safetensors(f.root.path / "a.safetensors", unet("a", 20));
  write_safetensors(f.root.path / "b.safetensors", unet("b", 4));
  auto empty = f.models->estimate({.name = "b", .path = "b.safetensors", .device = kDev});
  ASSERT_TRUE(empty) << empty.error().message;
  const auto a = f.load({.name = "a", .path = "a.safetensors", .device = kDev});
  ASSERT_EQ(a.state, ModelState::Loaded) << a.error;
  f.monitor->sample_now();
  const auto reading = f.monitor->pressure(kDev);
  ASSERT_TRUE(reading);
  EXPECT_EQ(reading->other_processes_bytes, 0u) << "memd's own model is not another process";
  EXPECT_GE(reading->in_use_bytes, a.bytes);
  auto after = f.models->estimate({.name = "b", .path = "b.safetensors", .device = kDev});
  ASSERT_TRUE(after) << after.error().message;
  // The room went down by the model's buffers once (page-rounded), not twice.
  EXPECT_LE(empty->room_bytes - after->room_bytes, a.bytes + kMiB)
      << "room " << empty->room_bytes << " -> " << after->room_bytes << " for a model of " << a.bytes;
  EXPECT_GE(empty->room_bytes - after->room_bytes, a.bytes);
  ASSERT_TRUE(f.models->unload("a"));
}

TEST(ModelManager, PlacementNamesParseAndPrint) {
  for (const auto p : {ModelPlacement::Spread, ModelPlacement::Fit})
    EXPECT_EQ(parse_model_placement(to_string(p)), p);
  for (const char* bad : {"", "Spread", "FIT", "pack", "spread ", "fit\n"})
    EXPECT_FALSE(parse_model_placement(bad)) << bad;
}

}  // namespace
}  // namespace memd
