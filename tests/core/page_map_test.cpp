// PageMap: which pages need mapping, which are slack, and the counters.
#include "core/page_map.hpp"

#include <gtest/gtest.h>

namespace memd {
namespace {

constexpr std::uint64_t kPage = 2 << 20;
constexpr std::uint64_t kBase = 1ull << 40;

TEST(PageMap, AcquireAsksForUnmappedPagesInRuns) {
  PageMap m(kBase, 16 * kPage, kPage);
  std::vector<PageRun> runs;
  m.acquire(kBase + 100 * 256, 3 * kPage, runs);  // touches pages 0..3
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0], (PageRun{kBase, 4 * kPage}));
  m.mark_mapped(runs[0]);
  EXPECT_EQ(m.mapped_bytes(), 4 * kPage);
  EXPECT_EQ(m.busy_bytes(), 4 * kPage);
  runs.clear();
  m.acquire(kBase + 3 * kPage + kPage / 2, 256, runs);  // same last page: nothing to map
  EXPECT_TRUE(runs.empty());
  ASSERT_TRUE(m.validate());
}

TEST(PageMap, ReleasedPagesBecomeSlackAndAreCollectedFromTheTop) {
  PageMap m(kBase, 16 * kPage, kPage);
  std::vector<PageRun> runs;
  m.acquire(kBase, 2 * kPage, runs);
  m.acquire(kBase + 2 * kPage, 6 * kPage, runs);
  ASSERT_EQ(runs.size(), 1u);
  m.mark_mapped(runs[0]);
  m.release(kBase + 2 * kPage, 6 * kPage);  // pages 2..7 become free
  EXPECT_EQ(m.free_mapped_bytes(), 6 * kPage);
  std::vector<PageRun> out;
  m.collect_free(3 * kPage, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], (PageRun{kBase + 5 * kPage, 3 * kPage}));
  m.mark_unmapped(out[0]);
  EXPECT_EQ(m.mapped_bytes(), 5 * kPage);
  EXPECT_EQ(m.free_mapped_bytes(), 3 * kPage);
  ASSERT_TRUE(m.validate());
}

TEST(PageMap, SharedPageStaysBusyUntilBothBlocksGo) {
  PageMap m(kBase, 4 * kPage, kPage);
  std::vector<PageRun> runs;
  m.acquire(kBase, 1024, runs);
  m.acquire(kBase + 4096, 1024, runs);
  ASSERT_EQ(runs.size(), 1u);
  m.mark_mapped(runs[0]);
  m.release(kBase, 1024);
  EXPECT_EQ(m.busy_bytes(), kPage);
  EXPECT_EQ(m.live_bytes(), 1024u);
  m.release(kBase + 4096, 1024);
  EXPECT_EQ(m.busy_bytes(), 0u);
  EXPECT_EQ(m.free_mapped_bytes(), kPage);
  ASSERT_TRUE(m.validate());
}

}  // namespace
}  // namespace memd

namespace memd {
namespace {

TEST(PageMap, InteriorPagesOfALargeBlockMapAndFreeAsRuns) {
  PageMap m(kBase, 200 * kPage, kPage);
  std::vector<PageRun> runs;
  // Map pages 10..19 first so the big block finds a mapped island.
  m.acquire(kBase + 10 * kPage, 10 * kPage, runs);
  ASSERT_EQ(runs.size(), 1u);
  m.mark_mapped(runs[0]);
  m.release(kBase + 10 * kPage, 10 * kPage);
  EXPECT_EQ(m.free_mapped_bytes(), 10 * kPage);
  runs.clear();
  m.acquire(kBase + kPage / 2, 150 * kPage, runs);  // pages 0..150, partial at both ends
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], (PageRun{kBase, 10 * kPage}));
  EXPECT_EQ(runs[1], (PageRun{kBase + 20 * kPage, 131 * kPage}));
  for (const auto& r : runs) m.mark_mapped(r);
  EXPECT_EQ(m.busy_bytes(), 151 * kPage);
  EXPECT_EQ(m.free_mapped_bytes(), 0u);
  EXPECT_EQ(m.live_bytes(), 150 * kPage);
  ASSERT_TRUE(m.validate()) << m.validate().error().message;
  // A small neighbour shares the last page.
  runs.clear();
  m.acquire(kBase + 150 * kPage + kPage / 2, 256, runs);
  EXPECT_TRUE(runs.empty());
  m.release(kBase + kPage / 2, 150 * kPage);
  EXPECT_EQ(m.busy_bytes(), kPage);
  EXPECT_EQ(m.free_mapped_bytes(), 150 * kPage);
  ASSERT_TRUE(m.validate()) << m.validate().error().message;
}

}  // namespace
}  // namespace memd
