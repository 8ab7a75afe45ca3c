// memory_model_optimize through dispatch (the path both doors take): a dry
// run, then idle models offloaded with the bytes freed per tier and device;
// the load's progress in memory_model_status; hostile parameters refused
// with their code and the daemon serving on.
#include <gtest/gtest.h>

#include "../models/safetensors_writer.hpp"
#include "dispatch_fixture.hpp"

namespace memd {
namespace {

using json = nlohmann::json;
using namespace test_models;

class ModelOptimizeActionsTest : public test::DispatchTest {
 protected:
  void SetUp() override {
    write_safetensors(root_.path / "tiny.safetensors", {{"w.0", {256, 1024}}, {"w.1", {64, 1024}}, {"b", {7}, "F32"}});
    // Other bytes: a model loaded from the same file would share its
    // component, and a shared component stays while any holder is warm.
    write_safetensors(root_.path / "other.safetensors", {{"x.0", {128, 1024}}, {"c", {5}, "F32"}});
    auto o = options(128 * kMiB);
    o.models.roots = *ModelRoots::create({root_.path});
    o.models.ram_cache_bytes = 16 * kMiB;
    start(o);
  }
  void load(const json& params) {
    auto started = call("memory_model_load", params);
    ASSERT_TRUE(started) << started.error().message;
    ASSERT_TRUE(service_->models().wait(params["name"].get<std::string>()));
  }
  TempDir root_;
};

TEST_F(ModelOptimizeActionsTest, DryRunThenIdleModelsOffloadedWithTheBytesFreed) {
  load({{"name", "idle"}, {"path", "tiny.safetensors"}, {"deviceId", "host:0"}});
  load({{"name", "kept"}, {"path", "other.safetensors"}, {"deviceId", "host:0"}, {"keepAliveSeconds", 600}});
  auto status = call("memory_model_status", {{"name", "idle"}});
  ASSERT_TRUE(status);
  const auto size = (*status)["sizeBytes"].get<std::uint64_t>();
  const auto& progress = (*status)["progress"];
  EXPECT_EQ(progress["stage"], "done");
  EXPECT_EQ(progress["bytesDone"], progress["bytesTotal"]);
  EXPECT_GT(progress["bytesTotal"].get<std::uint64_t>(), 0u);
  EXPECT_GT(progress["rateBytesPerSecond"].get<double>(), 0.0);

  auto dry = call("memory_model_optimize", {{"dryRun", true}});
  ASSERT_TRUE(dry) << dry.error().message;
  EXPECT_EQ((*dry)["dryRun"], true);
  ASSERT_EQ((*dry)["moved"].size(), 1u) << dry->dump();
  EXPECT_EQ((*call("memory_model_status", {{"name", "idle"}}))["tier"], "VRAM") << "a dry run moves nothing";

  auto done = call("memory_model_optimize", json::object());
  ASSERT_TRUE(done) << done.error().message;
  EXPECT_EQ((*done)["dryRun"], false);
  ASSERT_EQ((*done)["moved"].size(), 1u) << done->dump();
  const auto& moved = (*done)["moved"][0];
  EXPECT_EQ(moved["name"], "idle");
  EXPECT_EQ(moved["deviceId"], "host:0");
  EXPECT_EQ(moved["fromTier"], "VRAM");
  EXPECT_EQ(moved["toTier"], "RAM");
  EXPECT_EQ(moved["sizeBytes"], size);
  EXPECT_EQ((*done)["freed"], json::array({{{"deviceId", "host:0"}, {"tier", "VRAM"}, {"bytes", size}}}));
  EXPECT_EQ((*done)["vramBytesFreed"], size);
  EXPECT_EQ((*done)["ramBytesAdded"], size);
  EXPECT_EQ((*done)["ramBytesFreed"], 0);
  EXPECT_EQ((*done)["ramCacheBytes"], size);
  EXPECT_EQ((*done)["orphanBytesFreed"], 0);
  EXPECT_EQ((*call("memory_model_status", {{"name", "idle"}}))["tier"], "RAM");
  EXPECT_EQ((*call("memory_model_status", {{"name", "kept"}}))["tier"], "VRAM");

  // The next pass takes the RAM tier to its floor: idle goes to Disk.
  auto floor = call("memory_model_optimize", {{"deviceId", "cpu"}});
  ASSERT_TRUE(floor) << floor.error().message;
  EXPECT_EQ((*floor)["freed"], json::array({{{"deviceId", "cpu"}, {"tier", "RAM"}, {"bytes", size}}}));
  EXPECT_EQ((*floor)["moved"][0]["toTier"], "Disk");
  EXPECT_EQ((*call("memory_model_status", {{"name", "idle"}}))["tier"], "Disk");
  for (const char* n : {"idle", "kept"}) EXPECT_TRUE(call("memory_model_unload", {{"name", n}}));
}

TEST_F(ModelOptimizeActionsTest, HostileParametersAreRefusedAndTheDaemonServesOn) {
  const auto I = ErrorCode::invalid_argument, N = ErrorCode::not_found;
  struct Case {
    json params;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {{{"dryRun", "yes"}}, I},
      {{{"dryRun", 1}}, I},
      {{{"dryRun", nullptr}}, I},
      {{{"dryRun", json::array({true})}}, I},
      {{{"deviceId", 0}}, I},
      {{{"deviceId", ""}}, I},
      {{{"deviceId", "gpu0"}}, I},
      {{{"deviceId", "host:-1"}}, I},
      {{{"deviceId", "host:99999999999999999999"}}, I},
      {{{"deviceId", std::string(4096, 'h')}}, I},
      {{{"deviceId", "cuda:7"}}, N},
      {{{"deviceId", "host:3"}}, N},
  };
  for (const auto& c : cases) EXPECT_EQ(refused("memory_model_optimize", c.params).code, c.code) << c.params.dump();
  // Still serving, and an empty call on no models moves nothing.
  auto ok = call("memory_model_optimize", json::object());
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_TRUE((*ok)["moved"].empty());
  EXPECT_TRUE((*ok)["freed"].empty());
}

}  // namespace
}  // namespace memd
