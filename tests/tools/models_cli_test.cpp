// `memd load-model`, `memd models`, `memd optimize-models` and `memd unload`
// against a running daemon with a host device and a generated safetensors
// file under its --model-root: a load waits and says where the model went,
// the tables show it, optimize-models offloads it (a dry run first), and
// refusals (a path outside the root, an unknown model or device, a malformed
// file) print the daemon's code and exit 1.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../models/safetensors_writer.hpp"
#include "cli_run.hpp"
#include "server/daemon.hpp"

namespace memd::testing {
namespace {

using json = nlohmann::json;
using namespace test_models;

bool has(const Run& r, std::string_view want) { return r.out.find(want) != std::string::npos; }

TEST(ModelsCli, LoadListOptimizeUnloadAndRefusals) {
  TempDir root;
  write_safetensors(root.path / "tiny.safetensors", {{"w.0", {256, 1024}}, {"w.1", {64, 1024}}, {"b", {7}, "F32"}});
  write_raw_safetensors(root.path / "bad.safetensors", R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,9]}})",
                        std::string(9, 'x'));
  Daemon daemon({"--model-root", root.path.string(), "--ram-cache", "16MiB"});
  ASSERT_FALSE(daemon.url().empty());
  const std::string url = " --url " + daemon.url();

  auto loaded = memd("load-model tiny tiny.safetensors --device host:0" + url);
  ASSERT_EQ(loaded.code, 0) << loaded.out;
  EXPECT_TRUE(has(loaded, "loaded tiny: 640 KiB in VRAM on host:0")) << loaded.out;
  EXPECT_TRUE(has(loaded, "GB/s")) << loaded.out;
  // Asking again is a hit, not a second load.
  auto again = memd("load-model tiny tiny.safetensors" + url);
  ASSERT_EQ(again.code, 0) << again.out;

  auto list = memd("models" + url);
  ASSERT_EQ(list.code, 0) << list.out;
  for (const char* want : {"NAME", "tiny", "Loaded", "VRAM", "host:0", "Normal", "RAM cache: 0 B"})
    EXPECT_TRUE(has(list, want)) << want << "\n" << list.out;
  auto one = memd("models tiny" + url);
  ASSERT_EQ(one.code, 0) << one.out;
  EXPECT_TRUE(has(one, "COMPONENT")) << one.out;
  auto as_json = memd("models tiny --json" + url);
  ASSERT_EQ(as_json.code, 0) << as_json.out;
  const auto j = json::parse(as_json.out);
  EXPECT_EQ(j["state"], "Loaded");
  EXPECT_EQ(j["hits"], 1);
  EXPECT_EQ(j["progress"]["bytesDone"], j["progress"]["bytesTotal"]);

  // Optimize: a dry run says what would move; then it moves.
  auto dry = memd("optimize-models --dry-run" + url);
  ASSERT_EQ(dry.code, 0) << dry.out;
  for (const char* want : {"MODEL", "tiny", "VRAM", "RAM", "would free 640 KiB of VRAM on host:0"})
    EXPECT_TRUE(has(dry, want)) << want << "\n" << dry.out;
  EXPECT_EQ(json::parse(memd("models tiny --json" + url).out)["tier"], "VRAM");
  auto opt = memd("optimize-models" + url);
  ASSERT_EQ(opt.code, 0) << opt.out;
  EXPECT_TRUE(has(opt, "freed 640 KiB of VRAM on host:0")) << opt.out;
  EXPECT_TRUE(has(opt, "RAM cache: 640 KiB")) << opt.out;
  EXPECT_EQ(json::parse(memd("models tiny --json" + url).out)["tier"], "RAM");
  auto floor = memd("optimize-models --device cpu --json" + url);
  ASSERT_EQ(floor.code, 0) << floor.out;
  EXPECT_EQ(json::parse(floor.out)["ramBytesFreed"], j["sizeBytes"]) << floor.out;
  auto nothing = memd("optimize-models" + url);
  ASSERT_EQ(nothing.code, 0) << nothing.out;
  EXPECT_TRUE(has(nothing, "no model moved")) << nothing.out;
  // Back from its file, intact enough to be Loaded in VRAM again.
  auto back = memd("load-model tiny tiny.safetensors --placement fit" + url);
  ASSERT_EQ(back.code, 0) << back.out;
  EXPECT_TRUE(has(back, "in VRAM")) << back.out;

  // Refusals: the daemon's code, exit 1.
  for (const char* path : {"/etc/passwd", "../tiny.safetensors"}) {
    auto outside = memd(std::string("load-model evil ") + path + url);
    EXPECT_EQ(outside.code, 1) << outside.out;
    EXPECT_TRUE(has(outside, "permission_denied")) << outside.out;
  }
  auto missing = memd("load-model ghost missing.safetensors" + url);
  EXPECT_EQ(missing.code, 1);
  EXPECT_TRUE(has(missing, "not_found")) << missing.out;
  auto bad_placement = memd("load-model other tiny.safetensors --placement pack" + url);
  EXPECT_EQ(bad_placement.code, 1);
  EXPECT_TRUE(has(bad_placement, "invalid_argument")) << bad_placement.out;
  EXPECT_TRUE(has(bad_placement, "placement")) << bad_placement.out;
  auto bad_name = memd("load-model a/b tiny.safetensors" + url);
  EXPECT_EQ(bad_name.code, 1);
  EXPECT_TRUE(has(bad_name, "invalid_argument")) << bad_name.out;
  auto malformed = memd("load-model bad bad.safetensors" + url);
  EXPECT_EQ(malformed.code, 1) << malformed.out;
  EXPECT_TRUE(has(malformed, "load of 'bad' failed")) << malformed.out;
  for (const char* verb : {"models nobody", "unload nobody"}) {
    auto unknown = memd(std::string(verb) + url);
    EXPECT_EQ(unknown.code, 1) << verb;
    EXPECT_TRUE(has(unknown, "not_found")) << verb << "\n" << unknown.out;
  }
  auto no_device = memd("optimize-models --device cuda:9" + url);
  EXPECT_EQ(no_device.code, 1);
  EXPECT_TRUE(has(no_device, "not_found")) << no_device.out;
  auto bad_device = memd("optimize-models --device gpu0" + url);
  EXPECT_EQ(bad_device.code, 1);
  EXPECT_TRUE(has(bad_device, "invalid_argument")) << bad_device.out;

  for (const char* n : {"tiny", "bad"}) {
    auto gone = memd(std::string("unload ") + n + url);
    EXPECT_EQ(gone.code, 0) << gone.out;
    EXPECT_TRUE(has(gone, std::string("unloaded ") + n)) << gone.out;
  }
  auto empty = memd("models" + url);
  ASSERT_EQ(empty.code, 0) << empty.out;
  EXPECT_TRUE(has(empty, "no models")) << empty.out;
}

}  // namespace
}  // namespace memd::testing
