// Preloading as a client sees it (issue 15, item 7): a model brought up on a
// prediction says `preloaded: true` in memory_model_status until it is used,
// and memory_analytics reports the predictor's uses, preloads, hits, misses
// and hit rate under `models`.
#include <gtest/gtest.h>

#include "../models/safetensors_writer.hpp"
#include "dispatch_fixture.hpp"
#include "models/model_preloader.hpp"

namespace memd {
namespace {

using json = nlohmann::json;
using namespace test_models;

class ModelPreloadActionsTest : public test::DispatchTest {
 protected:
  void SetUp() override {
    for (const char* n : {"a", "b"})
      write_safetensors(root_.path / (std::string(n) + ".safetensors"), {{std::string(n) + ".w", {2048, 1024}}});
    auto o = options(128 * kMiB);
    o.models.roots = *ModelRoots::create({root_.path});
    o.models.ram_cache_bytes = 64 * kMiB;
    start(o);
  }
  void use(const std::string& name, bool pinned = false) {
    auto r = call("memory_model_load", {{"name", name}, {"path", name + ".safetensors"}, {"deviceId", "host:0"},
                                        {"pinned", pinned}});
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_TRUE(service_->models().wait(name));
  }
  void settle() { service_->models().preloader()->wait_idle(); }
  TempDir root_;
};

TEST_F(ModelPreloadActionsTest, StatusSaysPreloadedAndAnalyticsReportTheHitRate) {
  auto before = call("memory_analytics", json::object());
  ASSERT_TRUE(before) << before.error().message;
  EXPECT_EQ((*before)["models"], (json{{"uses", 0}, {"preloads", 0}, {"hits", 0}, {"misses", 0}, {"hitRate", 0.0}}));
  // a, then b, three times over; b leaves VRAM; a again: b comes back up.
  for (int i = 0; i < 3; ++i) {
    use("a", true);
    use("b");
  }
  settle();
  ASSERT_GT(service_->models().evict_for(DeviceId::host(0), 4 * kMiB), 0u);
  use("a", true);
  settle();
  auto b = call("memory_model_status", {{"name", "b"}});
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ((*b)["tier"], "VRAM");
  EXPECT_EQ((*b)["preloaded"], true);
  EXPECT_EQ((*b)["state"], "Loaded");
  use("b");
  b = call("memory_model_status", {{"name", "b"}});
  ASSERT_TRUE(b);
  EXPECT_EQ((*b)["preloaded"], false);
  auto after = call("memory_analytics", json::object());
  ASSERT_TRUE(after) << after.error().message;
  const auto& m = (*after)["models"];
  EXPECT_EQ(m["uses"], 8);
  EXPECT_EQ(m["preloads"], 1);
  EXPECT_EQ(m["hits"], 1);
  EXPECT_EQ(m["misses"], 0);
  EXPECT_EQ(m["hitRate"], 1.0);
  settle();
  for (const char* n : {"a", "b"}) ASSERT_TRUE(call("memory_model_unload", {{"name", n}}));
}

}  // namespace
}  // namespace memd
