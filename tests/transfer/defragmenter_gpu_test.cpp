// Defragmentation on cuda:0 (ctest label `gpu`): the host test's fragment /
// defragment / verify, and a remap of a block owning whole units, on VRAM.
// Skips with a clear message where no GPU is visible (or without CUDA).
#include <gtest/gtest.h>

#include <random>

#include "alloc/memory_manager.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"
#include "transfer/defragmenter.hpp"
#include "transfer/transfer_engine.hpp"

namespace memd {
namespace {

struct Gpu {
  std::unique_ptr<DeviceCatalog> catalog;
  std::unique_ptr<MemoryManager> manager;
  std::unique_ptr<TransferEngine> engine;
  Backend* host = nullptr;
};

// Null (and the reason) when there is no cuda:0.
std::unique_ptr<Gpu> make_gpu(std::string& why) {
  BackendOptions bo;
  bo.host_device_sizes = {64 * kMiB};
  auto c = DeviceCatalog::discover(bo);
  if (!c) {
    why = "device discovery failed: " + c.error().message;
    return nullptr;
  }
  if (!(*c)->info(DeviceId::cuda(0))) {
    why = "no CUDA device found (cuda:0 is not in the catalog; built with CUDA: "
#if defined(MEMD_WITH_CUDA)
          "yes)";
#else
          "no)";
#endif
    return nullptr;
  }
  auto g = std::make_unique<Gpu>();
  g->catalog = std::move(*c);
  g->manager = std::make_unique<MemoryManager>(*g->catalog);
  for (const auto& b : g->catalog->backends())
    if (b->name() == "host") g->host = b.get();
  g->engine = std::make_unique<TransferEngine>(*g->manager, *g->host);
  return g;
}

std::vector<std::byte> pattern(std::uint64_t n, std::uint64_t seed) {
  std::vector<std::byte> out(n);
  std::mt19937_64 rng(seed);
  for (auto& b : out) b = static_cast<std::byte>(rng());
  return out;
}

AllocationRecord alloc(Gpu& g, std::uint64_t bytes) {
  AllocationRequest r;
  r.size_bytes = bytes;
  r.device = DeviceId::cuda(0);
  r.memory_type = MemoryType::VRAM;
  auto rec = g.manager->allocate(r);
  EXPECT_TRUE(rec) << (rec ? "" : rec.error().message);
  return rec ? *rec : AllocationRecord{};
}

TEST(DefragmenterGpu, FragmentedVramCompactsEveryByteIntact) {
  std::string why;
  auto g = make_gpu(why);
  if (!g) GTEST_SKIP() << why;
  std::mt19937_64 rng(11);
  std::vector<AllocationRecord> all, live;
  std::vector<std::vector<std::byte>> bytes;
  for (int i = 0; i < 240; ++i) all.push_back(alloc(*g, 64 * kKiB + rng() % (960 * kKiB)));
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(g->manager->deallocate(all[i].id));
      continue;
    }
    live.push_back(all[i]);
    bytes.push_back(pattern(all[i].size_bytes, i));
    ASSERT_TRUE(g->engine->write(all[i].id, 0, bytes.back()));
  }
  auto pool = g->manager->pool(DeviceId::cuda(0), MemoryType::VRAM);
  ASSERT_TRUE(pool);
  const auto before = (*pool)->stats();
  Defragmenter defrag(*g->manager, g->engine->stream_pool());
  DefragOptions o;
  o.device = DeviceId::cuda(0);
  auto report = defrag.run(o);
  ASSERT_TRUE(report) << report.error().message;
  for (std::size_t i = 0; i < live.size(); ++i) {
    auto got = g->engine->read(live[i].id, 0, live[i].size_bytes);
    ASSERT_TRUE(got) << got.error().message;
    ASSERT_EQ(*got, bytes[i]) << "allocation " << i;
  }
  const auto after = (*pool)->stats();
  std::printf("cuda:0 fragmentation %.3f -> %.3f, reserved %llu -> %llu, %llu moves\n", before.fragmentation,
              after.fragmentation, static_cast<unsigned long long>(before.reserved_bytes),
              static_cast<unsigned long long>(after.reserved_bytes), static_cast<unsigned long long>(report->moves));
  EXPECT_GT(report->moves, 0u);
  EXPECT_LE(after.fragmentation, 0.05);
  EXPECT_LT(after.reserved_bytes, before.reserved_bytes);
  auto v = g->manager->validate();
  EXPECT_TRUE(v) << (v ? "" : v.error().message);
}

TEST(DefragmenterGpu, WholeUnitBlockRemapsWithItsBytes) {
  std::string why;
  auto g = make_gpu(why);
  if (!g) GTEST_SKIP() << why;
  auto a = alloc(*g, 64 * kMiB);
  auto b = alloc(*g, 64 * kMiB);
  auto c = alloc(*g, 64 * kMiB);
  const auto bytes = pattern(c.size_bytes, 99);
  ASSERT_TRUE(g->engine->write(c.id, 0, bytes));
  ASSERT_TRUE(g->manager->deallocate(a.id));
  ASSERT_TRUE(g->manager->deallocate(b.id));
  g->manager->trim();
  Defragmenter defrag(*g->manager, g->engine->stream_pool());
  auto report = defrag.run({});
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->remaps, 1u);
  EXPECT_LT(g->manager->get(c.id)->address, c.address);
  auto got = g->engine->read(c.id, 0, c.size_bytes);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, bytes);
  auto v = g->manager->validate();
  EXPECT_TRUE(v) << (v ? "" : v.error().message);
}

}  // namespace
}  // namespace memd
