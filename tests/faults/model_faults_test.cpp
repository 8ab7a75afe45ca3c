// Model files changed under a load (issue 17 item 3): at a random copy of
// the load (the FaultPlan's observer counts them) one of the model's files
// is truncated or rewritten in place. The load either fails invalid_file-
// style ("changed" / "truncated") and leaves nothing of itself in memory,
// or — when the file changed after its component's bytes were read and
// checked — holds exactly the bytes of the files as they were. Another
// model loaded before is untouched either way, and the service still
// loads the model cleanly once its files are whole again. A copy that
// fails outright (the device's copy engine) fails the load the same clean
// way.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <random>

#include "fault_test_support.hpp"
#include "models/safetensors_writer.hpp"

namespace memd::faults {
namespace {

namespace fs = std::filesystem;
using test_models::FakeTensor;

constexpr int kPoints = 20;

std::vector<FakeTensor> weights(const std::string& tag, int mib) {
  std::vector<FakeTensor> t;
  for (int i = 0; i < mib; ++i) t.push_back({tag + ".block." + std::to_string(i) + ".weight", {512, 1024}});
  t.push_back({tag + ".bias", {7}});
  return t;
}

const std::map<std::string, std::vector<FakeTensor>>& victim_parts() {
  static const std::map<std::string, std::vector<FakeTensor>> parts = {
      {"unet", weights("unet", 6)},
      {"vae", {{"decoder.conv_in.weight", {512, 1024}}, {"decoder.conv_in.bias", {9}}}},
      {"text_encoder", {{"text_model.embeddings.weight", {1024, 1024}}, {"text_model.ln.bias", {5}}}}};
  return parts;
}

struct ModelEnv {
  test_models::TempDir root;
  std::unique_ptr<FaultService> env;

  explicit ModelEnv(std::uint64_t ram_cache_bytes = 0) {
    auto roots = ModelRoots::create({root.path});
    EXPECT_TRUE(roots) << (roots ? "" : roots.error().message);
    env = std::make_unique<FaultService>(
        FaultServiceOptions{.model_roots = std::move(*roots), .ram_cache_bytes = ram_cache_bytes});
  }
  ModelManager& models() { return env->service->models(); }
  Result<ModelStatus> load(const std::string& name, const std::string& path) {
    auto started = models().load({.name = name, .path = path, .device = env->dev0});
    if (!started) return started;
    return models().wait(name, std::chrono::seconds(30));
  }
  std::uint64_t held_by_models() {
    auto u = env->service->manager().usage_by_owner();
    auto it = u.find(std::string(kModelOwner));
    return it == u.end() ? 0 : it->second.bytes;
  }
  // Each resident component's bytes, by component name.
  std::map<std::string, std::vector<std::byte>> component_bytes(const ModelStatus& s) {
    std::map<std::string, std::vector<std::byte>> out;
    for (const auto& c : s.components) {
      if (!c.allocation) continue;
      out[c.name] = env->read(*c.allocation, c.bytes);
    }
    return out;
  }
  std::vector<fs::path> weight_files(const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.path().extension() == ".safetensors") out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// Rewrites `bytes` bytes at `offset` in place: same inode, same size, a
// new mtime — what an editor or a second download into the same file does.
void rewrite_in_place(const fs::path& path, std::uint64_t offset, std::uint64_t bytes, std::uint64_t seed) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const auto junk = pattern(bytes, seed);
  ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(offset)), static_cast<ssize_t>(bytes));
  ::close(fd);
}

TEST(ModelFaultsTest, AFileTruncatedOrRewrittenWhileLoading) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  ModelEnv m;
  FaultService& env = *m.env;
  Bystanders by(env);
  test_models::write_safetensors(m.root.path / "other.safetensors", weights("other", 3));
  auto other = m.load("other", "other.safetensors");
  ASSERT_TRUE(other && other->state == ModelState::Loaded) << (other ? other->error : other.error().message);
  const auto other_bytes = m.component_bytes(*other);
  ASSERT_FALSE(other_bytes.empty());

  // A clean load first: its bytes, and how many copies a load makes.
  test_models::write_diffusers(m.root.path / "victim", victim_parts());
  const auto files = m.weight_files(m.root.path / "victim");
  ASSERT_EQ(files.size(), 3u);
  std::map<fs::path, std::string> originals;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    originals[f].assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto copies_before = env.plan->calls(FaultOp::copy);
  auto clean = m.load("victim", "victim");
  ASSERT_TRUE(clean && clean->state == ModelState::Loaded) << (clean ? clean->error : clean.error().message);
  const std::uint64_t copies_per_load = env.plan->calls(FaultOp::copy) - copies_before;
  ASSERT_GE(copies_per_load, 3u);
  const auto victim_bytes = m.component_bytes(*clean);
  ASSERT_TRUE(m.models().unload("victim"));
  const auto base = env.all_counters();
  const auto base_models = m.held_by_models();

  int failed = 0, survived = 0;
  for (int point = 0; point < kPoints + 4; ++point) {
    const std::uint64_t at = 1 + rng() % copies_per_load;
    const auto& file = files[rng() % files.size()];
    const bool truncate = rng() % 2 == 0;
    const std::uint64_t size = originals[file].size();
    const std::uint64_t cut = 16 + rng() % (size - 16);
    const std::uint64_t junk_at = rng() % (size - 64), junk_seed = rng();
    SCOPED_TRACE("point " + std::to_string(point) + ": at copy " + std::to_string(at) + ", " +
                 (truncate ? "truncate " : "rewrite ") + file.filename().string() + " of " +
                 file.parent_path().filename().string());
    const std::uint64_t fire = env.plan->calls(FaultOp::copy) + at;
    std::atomic<bool> done{false};
    env.plan->set_observer([&](FaultOp op, std::uint64_t call) {
      if (op != FaultOp::copy || call != fire || done.exchange(true)) return;
      if (truncate) ASSERT_EQ(::truncate(file.c_str(), static_cast<off_t>(cut)), 0);
      else rewrite_in_place(file, junk_at, 64, junk_seed);
    });
    auto s = m.load("victim", "victim");
    env.plan->set_observer(nullptr);
    ASSERT_TRUE(s) << s.error().message;
    if (s->state == ModelState::Loaded) {
      ++survived;
      EXPECT_EQ(m.component_bytes(*s), victim_bytes) << "a model loaded from a changing file holds other bytes";
    } else {
      ++failed;
      EXPECT_EQ(s->state, ModelState::Failed);
      EXPECT_TRUE(s->error.find("changed") != std::string::npos || s->error.find("truncated") != std::string::npos)
          << s->error;
      EXPECT_EQ(s->vram_bytes, 0u) << "a failed load left components in memory";
      EXPECT_EQ(m.held_by_models(), base_models) << "a failed load left model memory behind";
    }
    auto gone = m.models().unload("victim");
    EXPECT_TRUE(gone) << gone.error().message;
    EXPECT_EQ(env.all_counters(), base);
    EXPECT_EQ(m.held_by_models(), base_models);
    auto still = m.models().status("other");
    ASSERT_TRUE(still);
    EXPECT_EQ(still->state, ModelState::Loaded);
    EXPECT_EQ(m.component_bytes(*still), other_bytes) << "another model's bytes changed";
    by.expect_intact(env);
    // The file made whole again (a new mtime): the next point starts clean.
    test_models::write_bytes(file, originals[file]);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(failed, kPoints * 3 / 4) << failed << " loads failed, " << survived << " finished";
  auto again = m.load("victim", "victim");
  ASSERT_TRUE(again && again->state == ModelState::Loaded) << (again ? again->error : again.error().message);
  EXPECT_EQ(m.component_bytes(*again), victim_bytes);
  env.expect_serving();
}

TEST(ModelFaultsTest, ACopyThatFailsWhileLoading) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  ModelEnv m;
  FaultService& env = *m.env;
  Bystanders by(env);
  test_models::write_diffusers(m.root.path / "victim", victim_parts());
  const auto copies_before = env.plan->calls(FaultOp::copy);
  auto clean = m.load("victim", "victim");
  ASSERT_TRUE(clean && clean->state == ModelState::Loaded) << (clean ? clean->error : clean.error().message);
  const std::uint64_t copies_per_load = env.plan->calls(FaultOp::copy) - copies_before;
  const auto victim_bytes = m.component_bytes(*clean);
  ASSERT_TRUE(m.models().unload("victim"));
  const auto base = env.all_counters();
  const auto base_models = m.held_by_models();
  int fired = 0;
  for (int point = 0; point < kPoints; ++point) {
    const FaultOp op = point % 3 == 2 ? FaultOp::wait : FaultOp::copy;
    const std::uint64_t nth = 1 + rng() % copies_per_load;
    SCOPED_TRACE("point " + std::to_string(point) + ": " + std::string(to_string(op)) + " " + std::to_string(nth));
    const auto injected = env.plan->injected(op);
    env.plan->arm({op, nth, false});
    auto s = m.load("victim", "victim");
    env.plan->disarm(op);
    ASSERT_TRUE(s) << s.error().message;
    if (env.plan->injected(op) == injected) {
      // The load made fewer calls of op than nth: nothing failed.
      EXPECT_EQ(s->state, ModelState::Loaded) << s->error;
      EXPECT_EQ(m.component_bytes(*s), victim_bytes);
    } else {
      ++fired;
      EXPECT_EQ(s->state, ModelState::Failed);
      EXPECT_NE(s->error.find("injected fault"), std::string::npos) << s->error;
      EXPECT_EQ(s->vram_bytes, 0u);
      EXPECT_EQ(m.held_by_models(), base_models) << "a failed load left model memory behind";
    }
    ASSERT_TRUE(m.models().unload("victim"));
    EXPECT_EQ(env.all_counters(), base);
    by.expect_intact(env);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(fired, kPoints / 2);
  auto again = m.load("victim", "victim");
  ASSERT_TRUE(again && again->state == ModelState::Loaded) << (again ? again->error : again.error().message);
  EXPECT_EQ(m.component_bytes(*again), victim_bytes);
  env.expect_serving();
}

// Holds the next move of a component down to the RAM tier once its copy
// there is made and before it lands (ModelManager::set_move_hook), until
// the test lets it go: a test acts in the middle of an eviction's move.
struct MoveGate {
  std::promise<void> reached, go;
  std::shared_future<void> go_future = go.get_future().share();
  std::atomic<bool> armed{true};
  void install(ModelManager& models) {
    models.set_move_hook([this](const std::string&) {
      if (!armed.exchange(false)) return;
      reached.set_value();
      go_future.wait();
    });
  }
  bool wait_reached() { return reached.get_future().wait_for(std::chrono::seconds(30)) == std::future_status::ready; }
};

// An unload that arrives while an eviction is moving the model's only
// component to the RAM tier waits for the move, then frees what landed:
// before, it freed the VRAM buffer at once, and the eviction then landed a
// RAM copy that no model held (pinned host memory leaked for good, the RAM
// tier's count too high).
TEST(ModelFaultsTest, AnUnloadDuringAnEvictionsCopyWaitsAndLeavesNothing) {
  ModelEnv m(32 * kMiB);
  FaultService& env = *m.env;
  Bystanders by(env);
  test_models::write_safetensors(m.root.path / "a.safetensors", weights("a", 4));
  const auto base = m.held_by_models();
  auto a = m.load("a", "a.safetensors");
  ASSERT_TRUE(a && a->state == ModelState::Loaded) << (a ? a->error : a.error().message);
  MoveGate gate;
  gate.install(m.models());
  auto evicting = std::async(std::launch::async, [&] { return m.models().evict_for(env.dev0, 4 * kMiB); });
  ASSERT_TRUE(gate.wait_reached());
  auto unloading = std::async(std::launch::async, [&] { return m.models().unload("a"); });
  EXPECT_EQ(unloading.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout)
      << "the unload must wait for the move in flight";
  gate.go.set_value();
  EXPECT_GT(evicting.get(), 0u);
  auto gone = unloading.get();
  ASSERT_TRUE(gone) << gone.error().message;
  EXPECT_EQ(m.held_by_models(), base) << "a RAM copy outlived its model";
  EXPECT_EQ(m.models().ram_bytes(), 0u);
  m.models().set_move_hook(nullptr);
  by.expect_intact(env);
  env.expect_serving();
}

// A load that arrives while an eviction is moving the model down is not a
// hit (its VRAM id is still set until the move lands): it starts a job that
// waits the move out and brings the model back, so the model the load
// reports Loaded is in VRAM, with its bytes.
TEST(ModelFaultsTest, ALoadDuringAnEvictionsCopyBringsTheModelBack) {
  ModelEnv m(32 * kMiB);
  FaultService& env = *m.env;
  test_models::write_safetensors(m.root.path / "a.safetensors", weights("a", 4));
  auto a = m.load("a", "a.safetensors");
  ASSERT_TRUE(a && a->state == ModelState::Loaded) << (a ? a->error : a.error().message);
  const auto bytes = m.component_bytes(*a);
  MoveGate gate;
  gate.install(m.models());
  auto evicting = std::async(std::launch::async, [&] { return m.models().evict_for(env.dev0, 4 * kMiB); });
  ASSERT_TRUE(gate.wait_reached());
  auto during = m.models().load({.name = "a", .path = "a.safetensors", .device = env.dev0});
  ASSERT_TRUE(during) << during.error().message;
  EXPECT_EQ(during->state, ModelState::Loading) << "not a hit while its component is moving";
  gate.go.set_value();
  EXPECT_GT(evicting.get(), 0u);
  auto back = m.models().wait("a", std::chrono::seconds(30));
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->state, ModelState::Loaded) << back->error;
  EXPECT_EQ(back->tier, ModelTier::VRAM);
  EXPECT_EQ(m.component_bytes(*back), bytes);
  m.models().set_move_hook(nullptr);
  ASSERT_TRUE(m.models().unload("a"));
  EXPECT_EQ(m.models().ram_bytes(), 0u);
  env.expect_serving();
}

}  // namespace
}  // namespace memd::faults
