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

TEST(PageMap, PlacementQueriesSeeMappedStretchesAndIdlePages) {
  PageMap m(kBase, 256 * kPage, kPage);
  std::vector<PageRun> runs;
  // Map pages 2..5 and 70..71 (across a 64-page word), then free them all.
  m.acquire(kBase + 2 * kPage, 4 * kPage, runs);
  m.acquire(kBase + 70 * kPage, 2 * kPage, runs);
  ASSERT_EQ(runs.size(), 2u);
  for (const auto& r : runs) m.mark_mapped(r);
  m.release(kBase + 2 * kPage, 4 * kPage);
  m.release(kBase + 70 * kPage, 2 * kPage);

  EXPECT_EQ(m.unmapped_pages(kBase + 2 * kPage, 4 * kPage), 0u);
  EXPECT_EQ(m.unmapped_pages(kBase + kPage, 4 * kPage), 1u);
  EXPECT_EQ(m.unmapped_pages(kBase + 2 * kPage + 256, 4 * kPage), 1u) << "a partial last page counts";
  EXPECT_EQ(m.unmapped_pages(kBase, 128 * kPage), 122u);
  EXPECT_EQ(m.unmapped_pages(kBase, 0), 0u);

  std::vector<PageRun> seen;
  m.for_each_mapped_run(kBase, kBase + 256 * kPage, [&](std::uint64_t off, std::uint64_t size) {
    seen.push_back({off, size});
  });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], (PageRun{kBase + 2 * kPage, 4 * kPage}));
  EXPECT_EQ(seen[1], (PageRun{kBase + 70 * kPage, 2 * kPage}));
  // Clipped to the window asked for, which need not be page-aligned.
  seen.clear();
  m.for_each_mapped_run(kBase + 3 * kPage + 512, kBase + 71 * kPage, [&](std::uint64_t off, std::uint64_t size) {
    seen.push_back({off, size});
  });
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], (PageRun{kBase + 3 * kPage + 512, 3 * kPage - 512}));
  EXPECT_EQ(seen[1], (PageRun{kBase + 70 * kPage, kPage}));

  // Idle pages: not mapped and not touched by a live block.
  EXPECT_EQ(m.idle_unmapped_pages(kBase + 6 * kPage, 100), 64u) << "stops at the mapped page 70";
  EXPECT_EQ(m.idle_unmapped_pages(kBase + 6 * kPage, 10), 10u);
  EXPECT_EQ(m.idle_unmapped_pages(kBase + 2 * kPage, 10), 0u) << "page 2 is mapped";
  runs.clear();
  m.acquire(kBase + 10 * kPage + 256, 256, runs);  // a live block on page 10
  ASSERT_EQ(runs.size(), 1u);
  m.mark_mapped(runs[0]);
  EXPECT_EQ(m.idle_unmapped_pages(kBase + 6 * kPage, 100), 4u);
  EXPECT_EQ(m.idle_unmapped_pages(kBase + 250 * kPage, 100), 6u) << "stops at the end of the range";
  EXPECT_EQ(m.idle_unmapped_pages(kBase + 300 * kPage, 100), 0u);
  ASSERT_TRUE(m.validate());
}

}  // namespace
}  // namespace memd

namespace memd {
namespace {

// Walks of mapped runs and free-page collection stop at the highest mapped
// page, and that bound comes down when the top is unmapped (a wrong bound
// would hide mapped pages from placement, or slack from release).
TEST(PageMap, MappedRunsAndSlackAreFoundBelowAMovingTopBound) {
  PageMap m(kBase, 4096 * kPage, kPage);  // 64 words of pages
  auto runs_in_all = [&] {
    std::vector<PageRun> out;
    m.for_each_mapped_run(kBase, kBase + 4096 * kPage, [&](std::uint64_t a, std::uint64_t n) {
      out.push_back({a, n});
    });
    return out;
  };
  m.mark_mapped({kBase + 3 * kPage, 2 * kPage});
  m.mark_mapped({kBase + 2000 * kPage, kPage});  // word 31
  m.mark_mapped({kBase + 4095 * kPage, kPage});  // the very last page
  EXPECT_EQ(runs_in_all(), (std::vector<PageRun>{{kBase + 3 * kPage, 2 * kPage},
                                                 {kBase + 2000 * kPage, kPage},
                                                 {kBase + 4095 * kPage, kPage}}));
  EXPECT_TRUE(m.validate().has_value());
  m.mark_unmapped({kBase + 4095 * kPage, kPage});
  EXPECT_EQ(runs_in_all().size(), 2u);
  std::vector<PageRun> slack;
  m.collect_free(~std::uint64_t{0}, slack);
  EXPECT_EQ(slack, (std::vector<PageRun>{{kBase + 2000 * kPage, kPage}, {kBase + 3 * kPage, 2 * kPage}}));
  m.mark_unmapped({kBase + 2000 * kPage, kPage});
  EXPECT_EQ(runs_in_all(), (std::vector<PageRun>{{kBase + 3 * kPage, 2 * kPage}}));
  m.mark_mapped({kBase + 64 * kPage, kPage});  // first page of word 1, above the bound again
  EXPECT_EQ(runs_in_all().back(), (PageRun{kBase + 64 * kPage, kPage}));
  m.mark_unmapped({kBase + 3 * kPage, 2 * kPage});
  m.mark_unmapped({kBase + 64 * kPage, kPage});
  EXPECT_TRUE(runs_in_all().empty());
  EXPECT_TRUE(m.validate().has_value());
}

// Units (one per mark_mapped) are found whole from any page inside them,
// across 64-page words and gaps; free_unit_bytes counts only wholly free ones
// and stops early; cutting a unit in two is caught by validate().
TEST(PageMap, UnitsAreFoundWholeAcrossWordsAndGaps) {
  PageMap m(kBase, 256 * kPage, kPage);
  auto at = [](std::uint64_t page) { return kBase + page * kPage; };
  m.mark_mapped({at(60), 10 * kPage});  // crosses words 0 and 1
  m.mark_mapped({at(70), 2 * kPage});   // adjacent: a unit of its own
  m.mark_mapped({at(130), kPage});      // after a gap
  m.mark_mapped({at(131), 69 * kPage}); // crosses words 2 and 3
  ASSERT_TRUE(m.validate());
  using Units = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  auto units = [&](std::uint64_t lo, std::uint64_t hi) {
    Units out;
    m.for_each_unit(lo, hi,
                    [&](std::uint64_t o, std::uint64_t n) { out.emplace_back((o - kBase) / kPage, n / kPage); });
    return out;
  };
  EXPECT_EQ(units(kBase, at(256)), (Units{{60, 10}, {70, 2}, {130, 1}, {131, 69}}));
  EXPECT_EQ(units(at(65), at(71)), (Units{{60, 10}, {70, 2}})) << "overlapping units, whole";
  EXPECT_EQ(units(at(80), at(100)), Units{}) << "the gap holds none";
  EXPECT_EQ(units(at(199), at(199) + 1), (Units{{131, 69}}));

  EXPECT_EQ(m.free_unit_bytes(at(65), kPage), 10 * kPage);
  EXPECT_EQ(m.free_unit_bytes(at(69), 2 * kPage), 12 * kPage);
  EXPECT_EQ(m.free_unit_bytes(at(59), 3 * kPage), 10 * kPage) << "from an unmapped page";
  EXPECT_EQ(m.free_unit_bytes(at(120), 12 * kPage), 70 * kPage) << "into a unit that runs on past the range";
  EXPECT_EQ(m.free_unit_bytes(at(80), 10 * kPage), 0u);
  std::vector<PageRun> runs;
  m.acquire(at(135), 256, runs);
  EXPECT_TRUE(runs.empty());
  EXPECT_EQ(m.free_unit_bytes(at(100), 40 * kPage), kPage) << "one live block keeps its whole unit";
  m.release(at(135), 256);
  EXPECT_EQ(m.free_unit_bytes(at(100), 40 * kPage), 70 * kPage);

  m.mark_unmapped({at(70), 2 * kPage});
  EXPECT_EQ(units(kBase, at(256)), (Units{{60, 10}, {130, 1}, {131, 69}}));
  ASSERT_TRUE(m.validate());
  m.mark_unmapped({at(60), kPage});  // cuts through a unit: page 61 now starts none
  EXPECT_FALSE(m.validate());
}

}  // namespace
}  // namespace memd
