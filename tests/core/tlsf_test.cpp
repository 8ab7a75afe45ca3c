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

TEST(Tlsf, CallerChosenPlacementCarvesExactlyTheRangeAsked) {
  Tlsf t;
  constexpr std::uint64_t kBase = 1ull << 30;
  ASSERT_TRUE(t.add_region(kBase, 64 << 20));
  auto a = t.allocate(1 << 20), b = t.allocate(4096), c = t.allocate(8 << 20), d = t.allocate(4096);
  ASSERT_TRUE(a && b && c && d);
  ASSERT_TRUE(t.free(a->offset));
  ASSERT_TRUE(t.free(c->offset));
  // Free blocks now: a's 1 MiB hole, c's 8 MiB hole, the tail. Only the ones
  // of at least 2 MiB are offered, each once.
  std::map<std::uint64_t, std::uint64_t> seen;
  std::uint32_t c_handle = 0;
  t.for_each_free(2 << 20, [&](std::uint32_t h, std::uint64_t off, std::uint64_t size) {
    EXPECT_TRUE(seen.emplace(off, size).second);
    if (off == c->offset) c_handle = h;
    return true;
  });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen.at(c->offset), std::uint64_t{8} << 20);
  EXPECT_TRUE(seen.count(d->offset + d->size));
  // Stopping early is honoured.
  int calls = 0;
  t.for_each_free(0, [&](std::uint32_t, std::uint64_t, std::uint64_t) { return ++calls < 1; });
  EXPECT_EQ(calls, 1);

  // Carve the middle of c's hole: padding before and tail after stay free.
  const std::uint64_t at = c->offset + (3 << 20);
  auto mid = t.allocate_in(c_handle, at, 2 << 20);
  ASSERT_TRUE(mid);
  EXPECT_EQ(*mid, (TlsfBlock{at, std::uint64_t{2} << 20}));
  EXPECT_EQ(t.free_block_at(c->offset), (TlsfBlock{c->offset, std::uint64_t{3} << 20}));
  EXPECT_EQ(t.free_block_at(at + (2 << 20)), (TlsfBlock{at + (2 << 20), std::uint64_t{3} << 20}));
  ASSERT_TRUE(t.validate());

  // Hostile calls change nothing: a handle that is not a free block, a range
  // outside its block, an unaligned start.
  const auto used = t.used_bytes();
  EXPECT_FALSE(t.allocate_in(c_handle, at, 256)) << "the handle is allocated now";
  EXPECT_FALSE(t.allocate_in(0xFFFFFFF0u, at, 256));
  std::uint32_t head = 0;
  t.for_each_free(0, [&](std::uint32_t h, std::uint64_t off, std::uint64_t) {
    if (off == c->offset) head = h;
    return true;
  });
  EXPECT_FALSE(t.allocate_in(head, c->offset + (2 << 20), 2 << 20)) << "runs past the 3 MiB hole";
  EXPECT_FALSE(t.allocate_in(head, c->offset + 100, 256)) << "not a multiple of the unit";
  EXPECT_EQ(t.used_bytes(), used);
  ASSERT_TRUE(t.validate());
  ASSERT_TRUE(t.free(mid->offset));
  ASSERT_TRUE(t.validate());
}

TEST(Tlsf, FreeBelowKeepsLargeBlocksAllocated) {
  Tlsf t;
  ASSERT_TRUE(t.add_region(1ull << 30, 64 << 20));
  auto small = t.allocate(1 << 20), large = t.allocate(8 << 20);
  ASSERT_TRUE(small && large);
  std::uint64_t kept = 1;
  // Large: stays allocated, its size reported, nothing changes.
  EXPECT_FALSE(t.free_below(large->offset, 4 << 20, kept));
  EXPECT_EQ(kept, std::uint64_t{8} << 20);
  EXPECT_EQ(t.allocated_size(large->offset), std::optional<std::uint64_t>(8 << 20));
  // Small: freed as free() would.
  auto freed = t.free_below(small->offset, 4 << 20, kept);
  ASSERT_TRUE(freed);
  EXPECT_EQ(kept, 0u);
  EXPECT_EQ(freed->size, std::uint64_t{1} << 20);
  EXPECT_FALSE(t.allocated_size(small->offset));
  // Unknown offsets: neither freed nor kept.
  EXPECT_FALSE(t.free_below(small->offset, 4 << 20, kept));
  EXPECT_EQ(kept, 0u);
  EXPECT_FALSE(t.free_below(12345, 0, kept));
  ASSERT_TRUE(t.validate());
  ASSERT_TRUE(t.free(large->offset));
  EXPECT_EQ(t.used_bytes(), 0u);
  ASSERT_TRUE(t.validate());
}

}  // namespace
}  // namespace memd
