// The model manager across a restart (issue 17, item 4): records() keeps
// every model that was Loaded with its terms and its files' identities;
// restore() loads pinned models back (byte for byte) and registers the rest
// at the Disk tier; a record whose file changed or went, whose device or
// root is gone, ends Failed with the reason and keeps its record; the state
// generation and hook follow what a restart must see.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <utime.h>

#include <atomic>
#include <filesystem>

#include "model_manager_fixture.hpp"
#include "models/model_manager.hpp"
#include "safetensors_writer.hpp"

namespace memd {
namespace {

using namespace test_models;

const DeviceId kDev = DeviceId::host(0);

struct Fixture : ModelManagerFixture {
  Fixture() : ModelManagerFixture({.host_device_sizes = {64 * kMiB, 64 * kMiB}}) {}
  // Restarts the manager and restores `records` into it; waits for every job.
  void restart_with(const std::vector<ModelRecord>& records) {
    restart();
    models->restore(records);
    for (const auto& r : records) (void)models->wait(r.name);
  }
  FileIdentity identity(const std::filesystem::path& p) {
    auto f = ModelFile::open(p);
    EXPECT_TRUE(f) << p;
    return f ? f->identity() : FileIdentity{};
  }
};

const ModelRecord* find(const std::vector<ModelRecord>& records, std::string_view name) {
  for (const auto& r : records)
    if (r.name == name) return &r;
  return nullptr;
}

TEST(ModelRestore, RecordsAreTheModelsThatWereLoadedWithTheirTermsAndFiles) {
  Fixture f;
  write_safetensors(f.root.path / "a.safetensors", unet("a", 2));
  write_diffusers(f.root.path / "pipe", {{"unet", unet("p", 1)}, {"vae", vae()}});
  write_raw_safetensors(f.root.path / "bad.safetensors", R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,9]}})",
                        std::string(9, 'x'));
  ASSERT_EQ(f.load({.name = "a", .path = "a.safetensors", .device = kDev, .priority = 2,
                    .keep_alive = std::chrono::seconds(300), .pinned = true})
                .state,
            ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "pipe", .path = "pipe", .dtype = Dtype::BF16}).state, ModelState::Loaded);
  ASSERT_EQ(f.load({.name = "bad", .path = "bad.safetensors", .device = kDev}).state, ModelState::Failed);
  const auto records = f.models->records();
  ASSERT_EQ(records.size(), 2u) << "a model never Loaded has no files to keep";
  const ModelRecord* a = find(records, "a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->path, (std::filesystem::canonical(f.root.path) / "a.safetensors").string());
  EXPECT_EQ(a->device, kDev);
  EXPECT_EQ(a->priority, 2);
  EXPECT_EQ(a->keep_alive, std::chrono::seconds(300));
  EXPECT_TRUE(a->pinned);
  EXPECT_FALSE(a->dtype);
  ASSERT_EQ(a->files.size(), 1u);
  EXPECT_EQ(a->files[0].path, a->path);
  EXPECT_EQ(a->files[0].identity, f.identity(a->path));
  EXPECT_LE(a->last_use, std::chrono::system_clock::now());
  const ModelRecord* pipe = find(records, "pipe");
  ASSERT_NE(pipe, nullptr);
  EXPECT_EQ(pipe->dtype, Dtype::BF16);
  EXPECT_FALSE(pipe->pinned);
  EXPECT_EQ(pipe->files.size(), 2u) << "the unet's and the vae's files";
  EXPECT_EQ(pipe->device, *f.models->status("pipe")->device) << "the device it was placed on";
}

TEST(ModelRestore, PinnedModelsComeBackIntoVramTheRestAtTheDiskTier) {
  Fixture f;
  write_safetensors(f.root.path / "a.safetensors", unet("a", 3));
  write_safetensors(f.root.path / "b.safetensors", unet("b", 2));
  ASSERT_EQ(f.load({.name = "a", .path = "a.safetensors", .device = kDev, .keep_alive = std::chrono::seconds(120)})
                .state,
            ModelState::Loaded);
  ASSERT_TRUE(f.models->set_pinned("a", true));
  ASSERT_EQ(f.load({.name = "b", .path = "b.safetensors", .device = DeviceId::host(1), .priority = 0,
                    .keep_alive = std::chrono::seconds(60)})
                .state,
            ModelState::Loaded);
  const auto before_a = *f.models->status("a");
  const auto records = f.models->records();
  (void)f.event_kinds([](EventKind) { return true; });

  f.restart_with(records);
  auto a = f.models->status("a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->state, ModelState::Loaded) << a->error;
  EXPECT_EQ(a->tier, ModelTier::VRAM);
  EXPECT_TRUE(a->pinned);
  EXPECT_EQ(a->keep_alive, std::chrono::seconds(120));
  EXPECT_EQ(a->device, kDev);
  EXPECT_EQ(a->bytes, before_a.bytes);
  f.expect_bytes("a");
  auto b = f.models->status("b");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->state, ModelState::Loaded) << b->error;
  EXPECT_EQ(b->tier, ModelTier::Disk) << "known, nothing allocated";
  EXPECT_EQ(b->vram_bytes, 0u);
  EXPECT_EQ(b->keep_alive, std::chrono::seconds(60));
  EXPECT_EQ(b->priority, 0);
  EXPECT_EQ(b->device, DeviceId::host(1));
  EXPECT_EQ(f.held_by_models(), a->vram_bytes) << "only the pinned model holds memory";
  // Its last use came across on the wall clock.
  EXPECT_EQ(std::chrono::floor<std::chrono::milliseconds>(b->last_use),
            std::chrono::floor<std::chrono::milliseconds>(find(records, "b")->last_use));
  // A load restores the Disk-tier model from its files on its terms.
  EXPECT_EQ(f.event_kinds([](EventKind k) { return k == EventKind::model_loaded; }),
            std::vector<std::string>{"model_loaded:a"})
      << "a registration is not a load";
  auto loaded = f.load({.name = "b", .path = find(records, "b")->path, .device = DeviceId::host(1),
                        .priority = 0, .keep_alive = std::chrono::seconds(60)});
  EXPECT_EQ(loaded.state, ModelState::Loaded) << loaded.error;
  EXPECT_EQ(loaded.tier, ModelTier::VRAM);
  f.expect_bytes("b");
  // And the records are what they were.
  auto again = f.models->records();
  ASSERT_EQ(again.size(), 2u);
  for (const auto& r : records) {
    const ModelRecord* now = find(again, r.name);
    ASSERT_NE(now, nullptr) << r.name;
    EXPECT_EQ(now->files, r.files);
    EXPECT_EQ(now->pinned, r.pinned);
    EXPECT_EQ(now->keep_alive, r.keep_alive);
  }
}

TEST(ModelRestore, AChangedOrGoneFileAMissingDeviceOrRootIsSkippedWithTheReasonAndKept) {
  Fixture f;
  TempDir elsewhere;
  for (const char* n : {"changed", "touched", "gone", "moved", "fine"})
    write_safetensors(f.root.path / (std::string(n) + ".safetensors"), unet(n, 1));
  for (const char* n : {"changed", "touched", "gone", "moved", "fine"})
    ASSERT_EQ(f.load({.name = n, .path = std::string(n) + ".safetensors", .device = kDev, .pinned = true}).state,
              ModelState::Loaded);
  auto records = f.models->records();
  ASSERT_EQ(records.size(), 5u);
  // What a restart then meets: rewritten (another size), the same bytes with
  // a new modification time, deleted, a device that is not there, a path
  // no root holds.
  write_safetensors(f.root.path / "changed.safetensors", unet("changed", 2));
  {
    const auto p = f.root.path / "touched.safetensors";
    struct stat st {};
    ASSERT_EQ(::stat(p.c_str(), &st), 0);
    const utimbuf times{st.st_atime, st.st_mtime - 100};
    ASSERT_EQ(::utime(p.c_str(), &times), 0);
  }
  std::filesystem::remove(f.root.path / "gone.safetensors");
  for (auto& r : records)
    if (r.name == "moved") r.device = DeviceId::host(7);
  ModelRecord outside = *find(records, "fine");
  outside.name = "outside";
  write_safetensors(elsewhere.path / "o.safetensors", unet("o", 1));
  outside.path = (elsewhere.path / "o.safetensors").string();
  outside.files = {{outside.path, f.identity(outside.path)}};
  records.push_back(outside);
  (void)f.event_kinds([](EventKind) { return true; });

  f.restart_with(records);
  auto failed = [&](std::string_view name) {
    auto s = f.models->status(name);
    EXPECT_TRUE(s) << name;
    if (!s) return std::string();
    EXPECT_EQ(s->state, ModelState::Failed) << name;
    EXPECT_TRUE(s->error.starts_with("not restored at start: ")) << name << ": " << s->error;
    EXPECT_EQ(s->vram_bytes, 0u) << name;
    return s->error;
  };
  EXPECT_NE(failed("changed").find("changed since memd loaded it (size"), std::string::npos);
  EXPECT_NE(failed("touched").find("changed since memd loaded it"), std::string::npos);
  EXPECT_NE(failed("gone").find("gone.safetensors"), std::string::npos);
  EXPECT_NE(failed("moved").find("no GPU or host device host:7 on this machine now"), std::string::npos);
  EXPECT_NE(failed("outside").find("outside"), std::string::npos);
  auto fine = f.models->status("fine");
  ASSERT_TRUE(fine);
  EXPECT_EQ(fine->state, ModelState::Loaded) << "one model's trouble is not another's";
  EXPECT_EQ(fine->tier, ModelTier::VRAM);
  f.expect_bytes("fine");
  // Each skipped model said why on the bus (its final progress).
  std::size_t failures = 0;
  for (const auto& e : f.events->poll(1000)) {
    if (e->kind != EventKind::model_progress) continue;
    const auto data = nlohmann::json::parse(e->line)["data"];
    if (data["state"] == "Failed" && data["final"] == true) {
      ++failures;
      EXPECT_TRUE(data.value("error", "").starts_with("not restored at start: ")) << data.dump();
    }
  }
  EXPECT_EQ(failures, 5u);
  // They keep their records until loaded again or unloaded.
  auto kept = f.models->records();
  EXPECT_EQ(kept.size(), 6u);
  EXPECT_EQ(find(kept, "changed")->files, find(records, "changed")->files);
  // Loaded again, the file as it is now is what is kept.
  auto again = f.load({.name = "changed", .path = "changed.safetensors", .device = kDev, .pinned = true});
  ASSERT_EQ(again.state, ModelState::Loaded) << again.error;
  f.expect_bytes("changed");
  EXPECT_EQ(find(f.models->records(), "changed")->files[0].identity,
            f.identity(f.root.path / "changed.safetensors"));
  ASSERT_TRUE(f.models->unload("gone"));
  EXPECT_EQ(find(f.models->records(), "gone"), nullptr);
}

TEST(ModelRestore, TheGenerationMovesOnEveryChangeAndTheHookOnThoseARestartMustSee) {
  Fixture f;
  write_safetensors(f.root.path / "a.safetensors", unet("a", 1));
  std::atomic<int> hooks{0};
  f.models->set_state_hook([&] { ++hooks; });
  const auto g0 = f.models->state_generation();
  ASSERT_EQ(f.load({.name = "a", .path = "a.safetensors", .device = kDev}).state, ModelState::Loaded);
  EXPECT_EQ(hooks, 1) << "the job's end";
  const auto g1 = f.models->state_generation();
  EXPECT_GT(g1, g0);
  // A hit with the same terms: a use (the generation), no prompt write.
  ASSERT_TRUE(f.models->load({.name = "a", .path = "a.safetensors", .device = kDev}));
  EXPECT_EQ(hooks, 1);
  EXPECT_GT(f.models->state_generation(), g1);
  // New terms, a pin, an unload: each at once.
  ASSERT_TRUE(f.models->load({.name = "a", .path = "a.safetensors", .device = kDev,
                              .keep_alive = std::chrono::seconds(9)}));
  EXPECT_EQ(hooks, 2);
  ASSERT_TRUE(f.models->set_pinned("a", true));
  EXPECT_EQ(hooks, 3);
  ASSERT_TRUE(f.models->set_pinned("a", false));
  EXPECT_EQ(hooks, 4);
  ASSERT_TRUE(f.models->unload("a"));
  EXPECT_EQ(hooks, 5);
  EXPECT_TRUE(f.models->records().empty());
  f.models->set_state_hook({});
  write_safetensors(f.root.path / "b.safetensors", unet("b", 1));
  ASSERT_EQ(f.load({.name = "b", .path = "b.safetensors", .device = kDev}).state, ModelState::Loaded);
  EXPECT_EQ(hooks, 5) << "no hook once it is taken away";
}

}  // namespace
}  // namespace memd
