// MemoryService with a state directory (issue 17, item 4), in-process:
// limits are written before update_limits answers and are back after a
// restart; a corrupt file is set aside and the rest restored; a limit on a
// device the machine lacks now is skipped, one over a device's capacity
// kept; a second service on the same directory is refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "memd/size.hpp"
#include "models/safetensors_writer.hpp"
#include "service/memory_service.hpp"
#include "service/state_store.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;
const Caller kAdmin = Caller::host("admin");

using test_models::TempDir;  // tests/models/safetensors_writer.hpp

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::unique_ptr<MemoryService> start(const fs::path& state, std::vector<std::uint64_t> devices = {64 * kMiB}) {
  ServiceOptions o;
  o.backends.host_device_sizes = std::move(devices);
  o.backends.enable_cuda = false;
  o.session_sweep_interval = std::chrono::milliseconds(0);
  o.state_dir = state;
  auto s = MemoryService::create(o);
  EXPECT_TRUE(s) << s.error().message;
  return s ? std::move(*s) : nullptr;
}

void set(MemoryService& s, LimitUpdate u) { ASSERT_TRUE(s.update_limits(kAdmin, u)); }

TEST(StateRestart, LimitsAreWrittenBeforeTheAnswerAndComeBack) {
  TempDir d;
  Limits expected;
  {
    auto s = start(d.path, {64 * kMiB, 64 * kMiB});
    ASSERT_TRUE(s);
    set(*s, {.device = DeviceId::host(1), .bytes = 32 * kMiB});
    // On disk already, as a SIGKILL would find it.
    auto on_disk = parse_limits_state(slurp(d.path / kLimitsStateFile));
    ASSERT_TRUE(on_disk) << on_disk.error().message;
    EXPECT_EQ(on_disk->per_device.at(DeviceId::host(1)), 32 * kMiB);
    set(*s, {.memory_type = MemoryType::VRAM, .bytes = 48 * kMiB});
    set(*s, {.owner = std::string("team-a"), .bytes = 4 * kMiB});
    set(*s, {.owner = std::string("team-b"), .bytes = 8 * kMiB});
    set(*s, {.owner = std::string("team-b")});  // removed again
    expected = s->limits();
    EXPECT_EQ(*parse_limits_state(slurp(d.path / kLimitsStateFile)), expected);
    // Refused updates change nothing on disk.
    EXPECT_FALSE(s->update_limits(Caller::as("team-a"), {.owner = std::string("team-a"), .bytes = 1 << 30}));
  }
  auto s = start(d.path, {64 * kMiB, 64 * kMiB});
  ASSERT_TRUE(s);
  EXPECT_EQ(s->limits(), expected);
  EXPECT_EQ(s->limits().per_owner.count("team-b"), 0u);
  // And they are enforced: team-a may not pass its 4 MiB.
  AllocationRequest r;
  r.size_bytes = 5 * kMiB;
  r.device = DeviceId::host(0);
  auto refused = s->allocate(Caller::as("team-a"), r);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::quota_exceeded);
}

TEST(StateRestart, ACorruptFileIsSetAsideAndTheRestIsRestored) {
  TempDir d;
  {
    auto s = start(d.path);
    set(*s, {.owner = std::string("team-a"), .bytes = 4 * kMiB});
  }
  // models.json cut off by a crash, predictor.json of a future memd.
  { std::ofstream(d.path / kModelsStateFile) << R"({"format": "memd-state", "kind": "models", "version": 1, "mod)"; }
  {
    std::ofstream(d.path / kPredictorStateFile)
        << R"({"format": "memd-state", "kind": "predictor", "version": 7, "models": []})";
  }
  auto s = start(d.path);
  ASSERT_TRUE(s) << "a bad state file never stops the daemon";
  EXPECT_EQ(s->limits().per_owner.at("team-a"), 4 * kMiB);
  std::vector<std::string> aside;
  for (const auto& e : fs::directory_iterator(d.path)) {
    const auto name = e.path().filename().string();
    if (name.find(".bad-") != std::string::npos) aside.push_back(name);
  }
  std::sort(aside.begin(), aside.end());
  ASSERT_EQ(aside.size(), 2u);
  EXPECT_TRUE(aside[0].starts_with("models.json.bad-"));
  EXPECT_TRUE(aside[1].starts_with("predictor.json.bad-"));
  EXPECT_FALSE(fs::exists(d.path / kModelsStateFile));
  EXPECT_TRUE(s->models().status().empty());
}

TEST(StateRestart, ALimitOnADeviceNoLongerThereIsSkippedOneOverCapacityKept) {
  TempDir d;
  {
    auto s = start(d.path, {64 * kMiB, 64 * kMiB});
    set(*s, {.device = DeviceId::host(0), .bytes = 1ull << 40});  // over the device: it caps nothing
    set(*s, {.device = DeviceId::host(1), .bytes = 16 * kMiB});
    set(*s, {.owner = std::string("team-a"), .bytes = 4 * kMiB});
  }
  auto s = start(d.path, {64 * kMiB});  // host:1 is gone
  ASSERT_TRUE(s);
  const Limits l = s->limits();
  EXPECT_EQ(l.per_device.size(), 1u);
  EXPECT_EQ(l.per_device.at(DeviceId::host(0)), 1ull << 40);
  EXPECT_EQ(l.per_owner.at("team-a"), 4 * kMiB);
  // The file is left as it was until the limits change.
  EXPECT_EQ(parse_limits_state(slurp(d.path / kLimitsStateFile))->per_device.size(), 2u);
}

TEST(StateRestart, ASecondServiceOnTheDirectoryIsRefused) {
  TempDir d;
  auto first = start(d.path);
  ASSERT_TRUE(first);
  ServiceOptions o;
  o.backends.host_device_sizes = {64 * kMiB};
  o.backends.enable_cuda = false;
  o.state_dir = d.path;
  auto second = MemoryService::create(o);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, ErrorCode::conflict);
  EXPECT_NE(second.error().message.find("in use by another memd"), std::string::npos);
  first.reset();
  EXPECT_TRUE(MemoryService::create(o));
}

TEST(StateRestart, WithoutAStateDirectoryNothingIsWritten) {
  TempDir d;
  ServiceOptions o;
  o.backends.host_device_sizes = {64 * kMiB};
  o.backends.enable_cuda = false;
  auto s = MemoryService::create(o);
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)->state(), nullptr);
  ASSERT_TRUE((*s)->update_limits(kAdmin, {.owner = std::string("x"), .bytes = 1}));
  EXPECT_TRUE((*s)->save_state());
  EXPECT_TRUE(fs::is_empty(d.path));
}

}  // namespace
}  // namespace memd
