// The model actions through dispatch (the path both doors take): a load, its
// status, an estimate, pin, unload; hostile parameters refused with their
// code and the daemon serving on.
#include "protocol/actions/model_actions.hpp"

#include <gtest/gtest.h>

#include "../models/safetensors_writer.hpp"
#include "dispatch_fixture.hpp"

namespace memd {
namespace {

using json = nlohmann::json;
using namespace test_models;

class ModelActionsTest : public test::DispatchTest {
 protected:
  void SetUp() override {
    write_safetensors(root_.path / "tiny.safetensors",
                      {{"w.0", {256, 1024}}, {"w.1", {64, 1024}}, {"b", {7}, "F32"}});
    auto o = options(128 * kMiB);
    o.models.roots = *ModelRoots::create({root_.path});
    o.models.ram_cache_bytes = 16 * kMiB;
    start(o);
  }
  TempDir root_;
};

TEST_F(ModelActionsTest, LoadStatusEstimatePinUnload) {
  auto started = call("memory_model_load", {{"name", "tiny"}, {"path", "tiny.safetensors"}, {"deviceId", "host:0"},
                                            {"priority", "High"}, {"keepAliveSeconds", 60}});
  ASSERT_TRUE(started) << started.error().message;
  EXPECT_EQ((*started)["name"], "tiny");
  ASSERT_TRUE(service_->models().wait("tiny"));
  auto one = call("memory_model_status", {{"name", "tiny"}});
  ASSERT_TRUE(one) << one.error().message;
  EXPECT_EQ((*one)["state"], "Loaded");
  EXPECT_EQ((*one)["tier"], "VRAM");
  EXPECT_EQ((*one)["deviceId"], "host:0");
  EXPECT_EQ((*one)["priority"], "High");
  EXPECT_EQ((*one)["keepAliveSeconds"], 60);
  EXPECT_EQ((*one)["tensors"], 3);
  EXPECT_EQ((*one)["dtypes"], json::array({"F16", "F32"}));
  ASSERT_EQ((*one)["components"].size(), 1u);
  EXPECT_TRUE((*one)["components"][0].contains("allocationId"));
  auto all = call("memory_model_status", json::object());
  ASSERT_TRUE(all);
  EXPECT_EQ((*all)["models"].size(), 1u);
  auto estimate = call("memory_model_estimate", {{"name", "again"}, {"path", "tiny.safetensors"}});
  ASSERT_TRUE(estimate) << estimate.error().message;
  EXPECT_EQ((*estimate)["fits"], true);
  auto pinned = call("memory_model_pin", {{"name", "tiny"}});
  ASSERT_TRUE(pinned);
  EXPECT_EQ((*pinned)["pinned"], true);
  auto gone = call("memory_model_unload", {{"name", "tiny"}});
  ASSERT_TRUE(gone) << gone.error().message;
  EXPECT_EQ((*gone)["unloaded"], true);
  EXPECT_EQ(refused("memory_model_unload", {{"name", "tiny"}}).code, ErrorCode::not_found);
}

TEST_F(ModelActionsTest, ADtypeNarrowsTheF32TensorsAndAnotherOneConflicts) {
  auto estimate = call("memory_model_estimate", {{"name", "half"}, {"path", "tiny.safetensors"}, {"dtype", "BF16"}});
  ASSERT_TRUE(estimate) << estimate.error().message;
  auto started = call("memory_model_load", {{"name", "half"}, {"path", "tiny.safetensors"}, {"dtype", "BF16"}});
  ASSERT_TRUE(started) << started.error().message;
  ASSERT_TRUE(service_->models().wait("half"));
  auto s = call("memory_model_status", {{"name", "half"}});
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["state"], "Loaded");
  EXPECT_EQ((*s)["dtype"], "BF16");
  EXPECT_EQ((*s)["dtypes"], json::array({"BF16", "F16"}));
  EXPECT_EQ((*s)["sizeBytes"], (*estimate)["sizeBytes"]);
  EXPECT_EQ(refused("memory_model_load", {{"name", "half"}, {"path", "tiny.safetensors"}, {"dtype", "F16"}}).code,
            ErrorCode::conflict);
  EXPECT_EQ(refused("memory_model_load", {{"name", "half"}, {"path", "tiny.safetensors"}}).code, ErrorCode::conflict);
  EXPECT_TRUE(call("memory_model_unload", {{"name", "half"}}));
}

TEST_F(ModelActionsTest, HostileParametersAreRefusedAndTheDaemonServesOn) {
  const auto I = ErrorCode::invalid_argument, P = ErrorCode::permission_denied, N = ErrorCode::not_found;
  struct Case {
    json params;
    ErrorCode code;
  };
  const std::vector<Case> cases = {
      {json::object(), I},
      {{{"name", "x"}}, I},
      {{{"path", "tiny.safetensors"}}, I},
      {{{"name", ""}, {"path", "tiny.safetensors"}}, I},
      {{{"name", std::string(129, 'a')}, {"path", "tiny.safetensors"}}, I},
      {{{"name", "a/b"}, {"path", "tiny.safetensors"}}, I},
      {{{"name", "x"}, {"path", 7}}, I},
      {{{"name", "x"}, {"path", "../tiny.safetensors"}}, P},
      {{{"name", "x"}, {"path", "/etc/passwd"}}, P},
      {{{"name", "x"}, {"path", "/dev/zero"}}, P},
      {{{"name", "x"}, {"path", "missing.safetensors"}}, N},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"deviceId", "cuda:99"}}, N},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"deviceId", "cpu"}}, N},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"keepAliveSeconds", "60"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"priority", "Urgent"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"keepAliveSeconds", -1}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"pinned", "yes"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"dtype", "f16"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"dtype", "F32"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"dtype", "F8_E4M3"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"dtype", 16}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"dtype", ""}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"placement", "pack"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"placement", "Spread"}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"placement", ""}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"placement", 1}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"placement", nullptr}}, I},
      {{{"name", "x"}, {"path", "tiny.safetensors"}, {"placement", {"fit"}}}, I},
  };
  for (const auto& c : cases) EXPECT_EQ(refused("memory_model_load", c.params).code, c.code) << c.params.dump();
  EXPECT_EQ(refused("memory_model_status", {{"name", "nobody"}}).code, N);
  EXPECT_EQ(refused("memory_model_pin", {{"name", "nobody"}}).code, N);
  EXPECT_EQ(refused("memory_model_unload", json::object()).code, I);
  // Still serving; a placement is taken by name.
  auto ok = call("memory_model_load", {{"name", "tiny"}, {"path", "tiny.safetensors"}, {"placement", "fit"}});
  ASSERT_TRUE(ok) << ok.error().message;
  ASSERT_TRUE(service_->models().wait("tiny"));
  EXPECT_TRUE(call("memory_model_unload", {{"name", "tiny"}}));
}

}  // namespace
}  // namespace memd
