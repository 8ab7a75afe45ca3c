// tests/models/model_manager_fixture.hpp — a ModelManager on host devices for
// the model manager tests (model_manager_test, model_preloader_test,
// model_optimize_test): a device catalog of host devices, the memory manager,
// a transfer engine on the host backend, an event bus, a monitor that never
// samples by itself (interval 0) and a ModelManager over a temporary model
// root with a RAM tier. Its destructor checks every model buffer went back.
//
// What the tests differ in is a FixtureOptions: the host devices' sizes, the
// RAM tier, roots or none, and a callback for any other ModelOptions field
// (preload, keep_alive_sweep, state_dir, ...). A test file derives its own
// Fixture from ModelManagerFixture and adds only what is its own.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "models/model_manager.hpp"
#include "safetensors_writer.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd::test_models {

// A model part of `mib` MiB (F16 rows of 1 MiB each) and one small bias,
// named `<tag>.block.<i>.weight` and `<tag>.<bias>`.
inline std::vector<FakeTensor> weights(const std::string& tag, int mib, const std::string& bias = "bias") {
  std::vector<FakeTensor> t;
  for (int i = 0; i < mib; ++i) t.push_back({tag + ".block." + std::to_string(i) + ".weight", {512, 1024}});
  t.push_back({tag + "." + bias, {7}});
  return t;
}
// A UNet-like part of `mib` MiB, and small parts two models can share.
inline std::vector<FakeTensor> unet(const std::string& tag, int mib) { return weights(tag, mib, "conv_out.bias"); }
inline std::vector<FakeTensor> vae() { return {{"decoder.conv_in.weight", {256, 1024}}, {"decoder.conv_in.bias", {9}}}; }
inline std::vector<FakeTensor> encoder() {
  return {{"text_model.embeddings.weight", {512, 1024}}, {"text_model.ln.bias", {5}}};
}

struct FixtureOptions {
  std::vector<std::uint64_t> host_device_sizes = {64 * kMiB};
  std::uint64_t ram_cache_bytes = 64 * kMiB;
  bool with_roots = true;  // false: ModelOptions::roots stays empty (every load refused)
  std::function<void(ModelOptions&)> models;  // any other ModelOptions field
};

struct ModelManagerFixture {
  FixtureOptions options;
  TempDir root;
  std::unique_ptr<DeviceCatalog> catalog;
  std::unique_ptr<MemoryManager> manager;
  std::unique_ptr<TransferEngine> engine;
  std::unique_ptr<EventBus> bus;
  std::unique_ptr<Monitor> monitor;
  std::unique_ptr<ModelManager> models;
  std::shared_ptr<Subscription> events;

  explicit ModelManagerFixture(FixtureOptions o = {}) : options(std::move(o)) {
    BackendOptions bo;
    bo.host_device_sizes = options.host_device_sizes;
    bo.enable_cuda = false;
    catalog = std::move(*DeviceCatalog::discover(bo));
    ManagerOptions mo;
    mo.pinned_limit_bytes = 256 * kMiB;
    manager = std::make_unique<MemoryManager>(*catalog, mo);
    Backend* host = nullptr;
    for (const auto& b : catalog->backends())
      if (b->name() == "host") host = b.get();
    engine = std::make_unique<TransferEngine>(*manager, *host, TransferOptions{});
    bus = std::make_unique<EventBus>();
    MonitorOptions mon;
    mon.interval = std::chrono::milliseconds(0);
    monitor = std::move(*Monitor::create(*catalog, *manager, *engine, *bus, mon));
    restart();
    events = bus->subscribe({}, 0);
  }
  ~ModelManagerFixture() {
    models.reset();
    EXPECT_EQ(manager->usage_by_owner().count(std::string(kModelOwner)), 0u) << "every model buffer went back";
    monitor.reset();
    engine.reset();
  }
  ModelManagerFixture(const ModelManagerFixture&) = delete;
  ModelManagerFixture& operator=(const ModelManagerFixture&) = delete;

  // The fixture's ModelOptions, then `more` on top.
  ModelOptions model_options(const std::function<void(ModelOptions&)>& more = {}) const {
    ModelOptions m;
    if (options.with_roots) m.roots = *ModelRoots::create({root.path});
    m.ram_cache_bytes = options.ram_cache_bytes;
    if (options.models) options.models(m);
    if (more) more(m);
    return m;
  }
  // A new ModelManager in place of the old (which goes first) on the same
  // devices, engine, monitor and bus.
  void restart(const std::function<void(ModelOptions&)>& more = {}) {
    models.reset();
    models = std::make_unique<ModelManager>(*manager, *engine, *monitor, *bus, model_options(more));
  }

  // Starts a load and waits for it; Failed and the like come back as status.
  ModelStatus load(ModelLoadRequest r) {
    auto started = models->load(r);
    EXPECT_TRUE(started) << started.error().message;
    auto done = models->wait(r.name);
    EXPECT_TRUE(done) << done.error().message;
    return done ? *done : ModelStatus{};
  }
  // What the models hold in the allocator.
  std::uint64_t held_by_models() {
    auto u = manager->usage_by_owner();
    auto it = u.find(std::string(kModelOwner));
    return it == u.end() ? 0 : it->second.bytes;
  }
  // A per-device limit on `device`, sampled at once.
  void limit_device(DeviceId device, std::uint64_t bytes) {
    Limits limits;
    limits.per_device[device] = bytes;
    ASSERT_TRUE(manager->set_limits(limits));
    monitor->sample_now();
  }
  // Every tensor of a model's components reads back as written (each must be
  // in VRAM).
  void expect_bytes(const ModelStatus& s) {
    auto layout = read_model_layout(s.path);
    ASSERT_TRUE(layout) << layout.error().message;
    for (const auto& c : s.components) {
      ASSERT_TRUE(c.allocation) << c.name << " is not in VRAM";
      const auto* lc = layout->component(c.name);
      ASSERT_NE(lc, nullptr);
      for (const auto& t : lc->tensors) {
        auto got = engine->read(*c.allocation, t.offset, t.bytes);
        ASSERT_TRUE(got);
        for (std::uint64_t i = 0; i < t.bytes; i += 4099)
          ASSERT_EQ((*got)[i], tensor_byte(t.name, i)) << s.name << "/" << c.name << "/" << t.name << " byte " << i;
      }
    }
  }
  void expect_bytes(std::string_view name) {
    auto s = models->status(name);
    ASSERT_TRUE(s);
    expect_bytes(*s);
  }
  // The events since the last call that `keep` takes, as "kind:model".
  std::vector<std::string> event_kinds(const std::function<bool(EventKind)>& keep) {
    std::vector<std::string> out;
    for (const auto& e : events->poll(1000)) {
      if (!keep(e->kind)) continue;
      const auto line = nlohmann::json::parse(e->line);
      out.push_back(std::string(to_string(e->kind)) + ":" + line["data"].value("model", ""));
    }
    return out;
  }
};

}  // namespace memd::test_models
