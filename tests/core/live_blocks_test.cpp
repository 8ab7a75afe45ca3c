// LiveBlocks: insert/find/erase by address, the live <-> cached swaps and
// what makes them fail (double free, stale word after erase and reuse),
// untrackable input, a full neighbourhood, and many threads racing to free
// the same blocks (exactly one free of each wins).
#include "core/live_blocks.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace memd {
namespace {

constexpr std::uint64_t kBase = std::uint64_t{1} << 40;

TEST(LiveBlocks, FindsWhatWasInsertedWithItsSize) {
  LiveBlocks t(kBase, 10);
  ASSERT_TRUE(t.insert(kBase + 4096, 16384));
  ASSERT_TRUE(t.insert(kBase, 2 << 20));
  auto e = t.find(kBase + 4096);
  ASSERT_TRUE(e);
  EXPECT_EQ(e.size(), 16384u);
  EXPECT_FALSE(e.cached());
  EXPECT_EQ(t.find(kBase).size(), std::uint64_t{2} << 20);
  EXPECT_FALSE(t.find(kBase + 4096 + 256)) << "interior address";
  EXPECT_FALSE(t.find(kBase - 256)) << "below the base";
  EXPECT_FALSE(t.find(kBase + 4097)) << "unaligned";
  EXPECT_EQ(t.size(), 2u);
  EXPECT_TRUE(t.validate());
}

TEST(LiveBlocks, RefusesWhatItCannotTrack) {
  LiveBlocks t(kBase, 10);
  EXPECT_FALSE(t.insert(kBase - 256, 1024));
  EXPECT_FALSE(t.insert(kBase + 100, 1024));
  EXPECT_FALSE(t.insert(kBase, 0));
  EXPECT_FALSE(t.insert(kBase, 1000)) << "size not a multiple of 256";
  EXPECT_FALSE(t.insert(kBase, LiveBlocks::kMaxSize + 256));
  EXPECT_TRUE(t.insert(kBase, LiveBlocks::kMaxSize));
  EXPECT_EQ(t.find(kBase).size(), LiveBlocks::kMaxSize);
}

TEST(LiveBlocks, SwapsRefuseADoubleFreeAndAStaleWord) {
  LiveBlocks t(kBase, 10);
  ASSERT_TRUE(t.insert(kBase + 8192, 65536));
  auto a = t.find(kBase + 8192);
  auto b = t.find(kBase + 8192);  // a second free of the same pointer, racing
  EXPECT_TRUE(LiveBlocks::to_cached(a));
  EXPECT_TRUE(a.cached());
  EXPECT_FALSE(LiveBlocks::to_cached(b)) << "the word changed under it";
  EXPECT_FALSE(LiveBlocks::to_cached(a)) << "already cached";
  auto c = t.find(kBase + 8192);
  EXPECT_TRUE(c.cached());
  EXPECT_FALSE(LiveBlocks::to_cached(c));
  EXPECT_TRUE(LiveBlocks::to_live(c));
  EXPECT_FALSE(t.find(kBase + 8192).cached());
  // Erase, then the slot is reused by another block: an old entry's swap fails.
  auto old = t.find(kBase + 8192);
  t.erase(old);
  EXPECT_FALSE(t.find(kBase + 8192));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_FALSE(LiveBlocks::to_cached(old));
  ASSERT_TRUE(t.insert(kBase + 8192, 65536));
  EXPECT_TRUE(t.find(kBase + 8192));
}

TEST(LiveBlocks, AFullNeighbourhoodRefusesAndTombstonesAreReused) {
  LiveBlocks t(kBase, 6);  // 64 words
  std::vector<std::uint64_t> in;
  for (std::uint64_t i = 0; i < 1000; ++i)
    if (t.insert(kBase + i * 4096, 4096)) in.push_back(kBase + i * 4096);
  EXPECT_LE(in.size(), 64u);
  EXPECT_GE(in.size(), 32u);
  for (auto a : in) EXPECT_TRUE(t.find(a)) << a;
  for (auto a : in) {
    auto e = t.find(a);
    EXPECT_TRUE(t.erase(e));
  }
  EXPECT_EQ(t.size(), 0u);
  std::size_t again = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) again += t.insert(kBase + (5000 + i) * 4096, 4096);
  EXPECT_GE(again, 32u) << "tombstones take new entries";
  std::size_t seen = 0;
  t.for_each([&](std::uint64_t a, std::uint64_t size, bool cached) {
    EXPECT_TRUE(t.find(a));
    EXPECT_EQ(size, 4096u);
    EXPECT_FALSE(cached);
    ++seen;
  });
  EXPECT_EQ(seen, again);
  EXPECT_TRUE(t.validate());
}

// The pool erases a live entry under its lock (a stream free, a free that
// missed the caches) after find(); a lock-free free that cached the block in
// between must make that erase fail, or both frees succeed (review finding of
// session 4: erase was a plain store).
TEST(LiveBlocks, EraseFailsWhenTheWordChangedSinceFind) {
  LiveBlocks t(kBase, 10);
  ASSERT_TRUE(t.insert(kBase + 65536, 16384));
  auto pool_view = t.find(kBase + 65536);
  auto free_view = t.find(kBase + 65536);
  ASSERT_TRUE(LiveBlocks::to_cached(free_view));
  EXPECT_FALSE(t.erase(pool_view));
  auto now = t.find(kBase + 65536);
  EXPECT_TRUE(now && now.cached()) << "a cached word was erased";
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(t.erase(now));
  EXPECT_EQ(t.size(), 0u);
}

TEST(LiveBlocks, ThreadsFreeingTheSameBlocksLetExactlyOneWin) {
  LiveBlocks t(kBase, 12);
  constexpr int kBlocks = 512;
  for (int i = 0; i < kBlocks; ++i) ASSERT_TRUE(t.insert(kBase + static_cast<std::uint64_t>(i) * 65536, 32768));
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&] {
      for (int i = 0; i < kBlocks; ++i) {
        auto e = t.find(kBase + static_cast<std::uint64_t>(i) * 65536);
        if (LiveBlocks::to_cached(e)) wins.fetch_add(1);
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(wins.load(), kBlocks);
}

}  // namespace
}  // namespace memd
