// memory_model_export and memory_model_export_release through dispatch (the
// path both doors take): the tensor table matches the layout and the bytes
// at each offset are the file's; hostile inputs get their code; an exported
// model is never evicted and cannot be unloaded until its exports are
// released; an importer keeps the memory counted past the unload until its
// connection closes; and nothing is left behind.
#include "protocol/actions/model_export_actions.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include "../models/safetensors_writer.hpp"
#include "dispatch_fixture.hpp"
#include "models/model_layout.hpp"

namespace memd {
namespace {

using json = nlohmann::json;
using namespace test_models;

const DeviceId kHost = DeviceId::host(0);

class ModelExportActionsTest : public test::DispatchTest {
 protected:
  void SetUp() override {
    write_safetensors(root_.path / "tiny.safetensors",
                      {{"w.0", {256, 1024}}, {"w.1", {64, 1024}, "BF16"}, {"b", {7}, "F32"}});
    write_diffusers(root_.path / "pipe", {{"unet", {{"conv.weight", {32, 4, 3, 3}}, {"conv.bias", {32}, "F32"}}},
                                          {"vae", {{"dec.weight", {16, 16}}}}});
    auto o = options(128 * kMiB);
    o.models.roots = *ModelRoots::create({root_.path});
    o.models.ram_cache_bytes = 16 * kMiB;
    start(o);
  }
  void TearDown() override {
    if (!service_) return;
    // Nothing left behind: no model, no export, no import, no allocation.
    for (const auto& m : service_->models().status()) (void)service_->models().unload(m.name);
    EXPECT_EQ(service_->export_counts(), ExportCounts{});
    EXPECT_TRUE(service_->manager().list({}).empty());
    EXPECT_TRUE(service_->validate());
  }
  void load(const std::string& name, const std::string& path) {
    auto started = call("memory_model_load", {{"name", name}, {"path", path}, {"deviceId", "host:0"}});
    ASSERT_TRUE(started) << started.error().message;
    auto done = service_->models().wait(name);
    ASSERT_TRUE(done);
    ASSERT_EQ(done->state, ModelState::Loaded) << done->error;
  }
  ErrorCode refused_code(std::string_view action, const json& params) { return refused(action, params).code; }
  TempDir root_;
};

TEST_F(ModelExportActionsTest, AnswersEachComponentsExportAndTensorTable) {
  load("pipe", "pipe");
  auto exported = call("memory_model_export", {{"name", "pipe"}, {"owners", {"worker", "worker"}}});
  ASSERT_TRUE(exported) << exported.error().message;
  const json& e = *exported;
  EXPECT_EQ(e["name"], "pipe");
  EXPECT_EQ(e["deviceId"], "host:0");
  EXPECT_EQ(e["owners"], json::array({"worker"}));
  EXPECT_TRUE(e["socket"].is_null()) << "no socket door in this fixture";
  const auto layout = read_model_layout(root_.path / "pipe");
  ASSERT_TRUE(layout) << layout.error().message;
  const auto status = service_->models().status("pipe");
  ASSERT_TRUE(status);
  ASSERT_EQ(e["components"].size(), layout->components.size());
  for (std::size_t i = 0; i < layout->components.size(); ++i) {
    const auto& lc = layout->components[i];
    const json& c = e["components"][i];
    SCOPED_TRACE(lc.name);
    EXPECT_EQ(c["name"], lc.name);
    EXPECT_EQ(c["allocationId"], status->components[i].allocation->to_string());
    EXPECT_EQ(c["sizeBytes"], lc.bytes);
    EXPECT_EQ(c["deviceId"], "host:0");
    EXPECT_EQ(c["tier"], "VRAM");
    EXPECT_FALSE(c.contains("gpuUuid")) << "a host device has no UUID";
    EXPECT_EQ(c["export"]["allocationId"], c["allocationId"]);
    EXPECT_EQ(c["export"]["owner"], "memd:models");
    EXPECT_EQ(c["export"]["owners"], json::array({"worker"}));
    EXPECT_EQ(c["export"]["released"], false);
    const auto id = *AllocationId::parse(c["allocationId"].get<std::string>());
    EXPECT_EQ(service_->manager().get(id)->status, MemoryAllocationStatus::Exported);
    ASSERT_EQ(c["tensors"].size(), lc.tensors.size());
    for (std::size_t t = 0; t < lc.tensors.size(); ++t) {
      const auto& lt = lc.tensors[t];
      const json& jt = c["tensors"][t];
      EXPECT_EQ(jt["name"], lt.name);
      EXPECT_EQ(jt["dtype"], std::string(to_string(lt.dtype)));
      EXPECT_EQ(jt["shape"], json(lt.shape));
      EXPECT_EQ(jt["offset"], lt.offset);
      EXPECT_EQ(jt["sizeBytes"], lt.bytes);
      EXPECT_EQ(lt.offset % kTensorAlignment, 0u);
      // The bytes at that offset of the buffer are the tensor's in the file.
      auto bytes = service_->transfers().read(id, lt.offset, lt.bytes);
      ASSERT_TRUE(bytes) << bytes.error().message;
      for (std::uint64_t b = 0; b < lt.bytes; ++b)
        ASSERT_EQ((*bytes)[b], tensor_byte(lt.name, b)) << lt.name << " byte " << b;
    }
  }
  // The dtypes as safetensors spells them.
  load("tiny", "tiny.safetensors");
  auto tiny = call("memory_model_export", {{"name", "tiny"}, {"owners", {"w"}}});
  ASSERT_TRUE(tiny) << tiny.error().message;
  std::vector<std::string> dtypes;
  for (const auto& t : (*tiny)["components"][0]["tensors"]) dtypes.push_back(t["dtype"]);
  EXPECT_EQ(dtypes, (std::vector<std::string>{"F16", "BF16", "F32"}));
  // Only the named owners may import.
  const auto export_id = *ExportId::parse((*tiny)["components"][0]["export"]["exportId"].get<std::string>());
  auto stranger = service_->import_export(Caller::as("mallory"), export_id, 7);
  ASSERT_FALSE(stranger);
  EXPECT_EQ(stranger.error().code, ErrorCode::permission_denied);
  for (const char* m : {"pipe", "tiny"}) {
    auto released = call("memory_model_export_release", {{"name", m}});
    ASSERT_TRUE(released) << released.error().message;
    EXPECT_FALSE((*released)["released"].empty());
  }
}

TEST_F(ModelExportActionsTest, HostileInputsGetTheirCodesAndTheDaemonServesOn) {
  const auto I = ErrorCode::invalid_argument, N = ErrorCode::not_found, C = ErrorCode::conflict;
  load("tiny", "tiny.safetensors");
  json many = json::array();
  for (int i = 0; i < 65; ++i) many.push_back("w" + std::to_string(i));
  const std::vector<std::pair<json, ErrorCode>> cases = {
      {json::object(), I},
      {{{"name", "tiny"}}, I},
      {{{"owners", {"w"}}}, I},
      {{{"name", "nobody"}, {"owners", {"w"}}}, N},
      {{{"name", ""}, {"owners", {"w"}}}, I},
      {{{"name", "a/b"}, {"owners", {"w"}}}, I},
      {{{"name", "../tiny"}, {"owners", {"w"}}}, I},
      {{{"name", "tiny\n"}, {"owners", {"w"}}}, I},
      {{{"name", std::string(129, 'a')}, {"owners", {"w"}}}, I},
      {{{"name", 7}, {"owners", {"w"}}}, I},
      {{{"name", "tiny"}, {"owners", json::array()}}, I},
      {{{"name", "tiny"}, {"owners", "w"}}, I},
      {{{"name", "tiny"}, {"owners", {7}}}, I},
      {{{"name", "tiny"}, {"owners", {""}}}, I},
      {{{"name", "tiny"}, {"owners", {"bad\x01owner"}}}, I},
      {{{"name", "tiny"}, {"owners", many}}, I},
  };
  for (const auto& [params, code] : cases)
    EXPECT_EQ(refused_code("memory_model_export", params), code) << params.dump();
  EXPECT_EQ(refused_code("memory_model_export_release", json::object()), I);
  EXPECT_EQ(refused_code("memory_model_export_release", {{"name", "nobody"}}), N);
  EXPECT_EQ(refused_code("memory_model_export_release", {{"name", "tiny"}, {"exportId", "nope"}}), I);
  EXPECT_EQ(refused_code("memory_model_export_release",
                         {{"name", "tiny"}, {"exportId", "d4e5f6a7-b8c9-4d0e-9f10-23456789abcd"}}),
            N);
  // A failed model is no export: conflict, saying why.
  write_raw_safetensors(root_.path / "bad.safetensors", R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,9]}})",
                        std::string(9, 'x'));
  ASSERT_TRUE(call("memory_model_load", {{"name", "bad"}, {"path", "bad.safetensors"}}));
  ASSERT_EQ(service_->models().wait("bad")->state, ModelState::Failed);
  EXPECT_EQ(refused_code("memory_model_export", {{"name", "bad"}, {"owners", {"w"}}}), C);
  // Evicted to the RAM cache: conflict, naming each component's tier.
  ASSERT_GT(service_->models().evict_for(kHost, 1), 0u);
  ASSERT_EQ(service_->models().status("tiny")->tier, ModelTier::RAM);
  auto in_ram = call("memory_model_export", {{"name", "tiny"}, {"owners", {"w"}}});
  ASSERT_FALSE(in_ram);
  EXPECT_EQ(in_ram.error().code, C);
  EXPECT_NE(in_ram.error().message.find("model: RAM"), std::string::npos) << in_ram.error().message;
  // An export of some other allocation is not this model's to release.
  auto plain = call("memory_allocate", {{"sizeBytes", 4096}, {"deviceId", "host:0"}, {"exportable", true}});
  ASSERT_TRUE(plain) << plain.error().message;
  auto other = call("memory_export", {{"allocationId", (*plain)["allocationId"]}, {"owners", {"w"}}});
  ASSERT_TRUE(other) << other.error().message;
  EXPECT_EQ(refused_code("memory_model_export_release", {{"name", "tiny"}, {"exportId", (*other)["exportId"]}}), N);
  ASSERT_TRUE(call("memory_deallocate", {{"allocationId", (*plain)["allocationId"]}}));
  // Still serving: back in VRAM, it exports.
  load("tiny", "tiny.safetensors");
  auto ok = call("memory_model_export", {{"name", "tiny"}, {"owners", {"w"}}});
  ASSERT_TRUE(ok) << ok.error().message;
  ASSERT_TRUE(call("memory_model_export_release", {{"name", "tiny"}}));
}

TEST_F(ModelExportActionsTest, AnExportedModelStaysUntilItsExportsAreReleased) {
  load("tiny", "tiny.safetensors");
  auto first = call("memory_model_export", {{"name", "tiny"}, {"owners", {"worker"}}});
  auto second = call("memory_model_export", {{"name", "tiny"}, {"owners", {"other"}}});
  ASSERT_TRUE(first && second);
  const std::string alloc = (*first)["components"][0]["allocationId"];
  EXPECT_EQ((*second)["components"][0]["allocationId"], alloc) << "one buffer, two exports";
  // Never evicted, even when asked to free everything, and never moved.
  EXPECT_EQ(service_->models().evict_for(kHost, 1), 0u);
  EXPECT_EQ(service_->models().status("tiny")->tier, ModelTier::VRAM);
  // Unload: conflict while an export is live, naming the remedy.
  auto unload = call("memory_model_unload", {{"name", "tiny"}});
  ASSERT_FALSE(unload);
  EXPECT_EQ(unload.error().code, ErrorCode::conflict);
  EXPECT_NE(unload.error().message.find("memory_model_export_release"), std::string::npos);
  // Release one by id: the other still holds it.
  auto one = call("memory_model_export_release",
                  {{"name", "tiny"}, {"exportId", (*first)["components"][0]["export"]["exportId"]}});
  ASSERT_TRUE(one) << one.error().message;
  ASSERT_EQ((*one)["released"].size(), 1u);
  EXPECT_EQ((*one)["released"][0]["released"], true);
  EXPECT_EQ(refused_code("memory_model_export_release",
                         {{"name", "tiny"}, {"exportId", (*first)["components"][0]["export"]["exportId"]}}),
            ErrorCode::not_found);
  EXPECT_EQ(refused_code("memory_model_unload", {{"name", "tiny"}}), ErrorCode::conflict);
  auto rest = call("memory_model_export_release", {{"name", "tiny"}});
  ASSERT_TRUE(rest);
  EXPECT_EQ((*rest)["released"].size(), 1u);
  const auto id = *AllocationId::parse(alloc);
  EXPECT_EQ(service_->manager().get(id)->status, MemoryAllocationStatus::Allocated);
  auto none = call("memory_model_export_release", {{"name", "tiny"}});
  ASSERT_TRUE(none);
  EXPECT_TRUE((*none)["released"].empty());
  // Released: it may go down a tier again, and unload.
  EXPECT_GT(service_->models().evict_for(kHost, 1), 0u);
  EXPECT_EQ(service_->models().status("tiny")->tier, ModelTier::RAM);
  EXPECT_TRUE(call("memory_model_unload", {{"name", "tiny"}}));
}

TEST_F(ModelExportActionsTest, AnImporterKeepsTheWeightsCountedPastTheUnloadUntilItCloses) {
  load("tiny", "tiny.safetensors");
  auto exported = call("memory_model_export", {{"name", "tiny"}, {"owners", {"worker"}}});
  ASSERT_TRUE(exported) << exported.error().message;
  const json& c = (*exported)["components"][0];
  const auto id = *AllocationId::parse(c["allocationId"].get<std::string>());
  const auto export_id = *ExportId::parse(c["export"]["exportId"].get<std::string>());
  auto grant = service_->import_export(Caller::as("worker"), export_id, 42);
  ASSERT_TRUE(grant) << grant.error().message;
  ::close(grant->fd);
  EXPECT_EQ(grant->allocation.id, id);
  // Released, but an importer maps it: still never evicted.
  ASSERT_TRUE(call("memory_model_export_release", {{"name", "tiny"}}));
  EXPECT_EQ(service_->models().evict_for(kHost, 1), 0u);
  // Unload is allowed now; the memory stays (Freeing) while the importer maps it.
  ASSERT_TRUE(call("memory_model_unload", {{"name", "tiny"}}));
  auto held = service_->manager().get(id);
  ASSERT_TRUE(held);
  EXPECT_EQ(held->status, MemoryAllocationStatus::Freeing);
  EXPECT_EQ(service_->export_counts().imports, 1u);
  service_->importer_closed(42);
  EXPECT_FALSE(service_->manager().get(id)) << "the importer closed: the memory goes";
}

}  // namespace
}  // namespace memd
