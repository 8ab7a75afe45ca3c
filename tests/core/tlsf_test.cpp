// TLSF: placement, splitting, coalescing, alignment, regions, and a
// randomised run against a reference model with validate() after each step.
#include "core/tlsf.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>

namespace memd {
namespace {
TEST(Tlsf, AllocatesFromTheStartAndCoalescesOnFree) {
  Tlsf t;
  ASSERT_TRUE(t.add_region(1 << 20, 1 << 20));
  auto a = t.allocate(1000);
  auto b = t.allocate(5000);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->offset, 1u << 20);
  EXPECT_EQ(a->size, 1024u);
  EXPECT_EQ(b->offset, (1u << 20) + 1024);
  EXPECT_EQ(t.used_bytes(), 1024u + 5120u);
  ASSERT_TRUE(t.validate());
  auto fa = t.free(a->offset);
  ASSERT_TRUE(fa);
  EXPECT_EQ(fa->size, 1024u);
  auto fb = t.free(b->offset);
  ASSERT_TRUE(fb);
  EXPECT_EQ(fb->merged, (TlsfBlock{1u << 20, 1u << 20}));
  EXPECT_EQ(t.free_blocks(), 1u);
  EXPECT_EQ(t.free_bytes(), 1u << 20);
  ASSERT_TRUE(t.validate());
}

TEST(Tlsf, RejectsUnknownAndDoubleFree) {
  Tlsf t;
  ASSERT_TRUE(t.add_region(0, 1 << 20));
  auto a = t.allocate(256);
  ASSERT_TRUE(a);
  EXPECT_FALSE(t.free(a->offset + 256));
  EXPECT_TRUE(t.free(a->offset));
  EXPECT_FALSE(t.free(a->offset));
  ASSERT_TRUE(t.validate());
}

TEST(Tlsf, ReusesAHoleOfTheRightSizeBeforeTheTail) {
  Tlsf t;
  ASSERT_TRUE(t.add_region(0, 64 << 20));
  auto a = t.allocate(3 << 20);
  auto b = t.allocate(1 << 20);
  auto c = t.allocate(3 << 20);
  ASSERT_TRUE(a && b && c);
  ASSERT_TRUE(t.free(b->offset));
  auto d = t.allocate(1 << 20);  // exactly the hole
  ASSERT_TRUE(d);
  EXPECT_EQ(d->offset, b->offset);
  ASSERT_TRUE(t.free(d->offset));
  auto e = t.allocate(600 << 10);  // fits inside the hole
  ASSERT_TRUE(e);
  EXPECT_EQ(e->offset, b->offset);
  ASSERT_TRUE(t.validate());
}

TEST(Tlsf, HonoursAlignmentAndKeepsPaddingFree) {
  Tlsf t;
  ASSERT_TRUE(t.add_region(0, 4 << 20));
  ASSERT_TRUE(t.allocate(256));
  auto a = t.allocate(64 << 10, 64 << 10);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->offset % (64 << 10), 0u);
  EXPECT_EQ(a->size, 64u << 10);
  ASSERT_TRUE(t.validate());
  EXPECT_EQ(t.free_bytes() + t.used_bytes(), 4u << 20);
  EXPECT_FALSE(t.allocate(256, 3000));  // not a power of two
}

TEST(Tlsf, FailsCleanlyWhenFull) {
  Tlsf t;
  ASSERT_TRUE(t.add_region(0, 1 << 20));
  EXPECT_FALSE(t.allocate((1 << 20) + 1));
  auto all = t.allocate(1 << 20);
  ASSERT_TRUE(all);
  EXPECT_FALSE(t.allocate(256));
  EXPECT_EQ(t.largest_free(), 0u);
  ASSERT_TRUE(t.validate());
}

TEST(Tlsf, RegionsDoNotMergeAndCanBeRemovedWhenEmpty) {
  Tlsf t;
  ASSERT_TRUE(t.add_region(0, 1 << 20));
  ASSERT_TRUE(t.add_region(1 << 20, 1 << 20));
  EXPECT_FALSE(t.add_region((1 << 20) - 256, 512));  // overlap
  EXPECT_FALSE(t.add_region(100, 256));             // misaligned
  auto a = t.allocate(1 << 20);
  ASSERT_TRUE(a);
  EXPECT_FALSE(t.remove_region(a->offset));
  ASSERT_TRUE(t.free(a->offset));
  EXPECT_EQ(t.free_blocks(), 2u);  // adjacent regions stay separate
  EXPECT_TRUE(t.remove_region(0));
  EXPECT_EQ(t.regions().size(), 1u);
  ASSERT_TRUE(t.validate());
}

TEST(Tlsf, RandomisedAgainstAModel) {
  Tlsf t;
  constexpr std::uint64_t kSize = 256ull << 20;
  ASSERT_TRUE(t.add_region(1ull << 30, kSize));
  std::mt19937_64 rng(42);
  std::map<std::uint64_t, std::uint64_t> live;  // offset → size
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 100 < 55) {
      std::uint64_t size = 1 + rng() % ((rng() % 10 == 0) ? (8 << 20) : (64 << 10));
      std::uint64_t align = std::uint64_t{256} << (rng() % 4 == 0 ? rng() % 8 : 0);
      auto b = t.allocate(size, align);
      if (!b) continue;
      ASSERT_EQ(b->offset % align, 0u);
      ASSERT_GE(b->size, size);
      auto next = live.lower_bound(b->offset);
      if (next != live.end()) {
        ASSERT_LE(b->offset + b->size, next->first) << "overlap";
      }
      if (next != live.begin()) {
        ASSERT_GE(b->offset, std::prev(next)->first + std::prev(next)->second);
      }
      live[b->offset] = b->size;
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      auto freed = t.free(it->first);
      ASSERT_TRUE(freed);
      ASSERT_EQ(freed->size, it->second);
      live.erase(it);
    }
    if (step % 997 == 0) {
      ASSERT_TRUE(t.validate()) << t.validate().error().message;
    }
  }
  for (auto [off, size] : live) ASSERT_TRUE(t.free(off));
  ASSERT_TRUE(t.validate());
  EXPECT_EQ(t.free_blocks(), 1u);
  EXPECT_EQ(t.largest_free(), kSize);
}

}  // namespace
}  // namespace memd
