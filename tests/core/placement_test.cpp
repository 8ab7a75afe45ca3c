// Placement over mapped pages: fewest pages to map, then fewest free units
// pinned, then best fit; and the edges (nothing fits, alignment, budget).
#include "core/placement.hpp"

#include <gtest/gtest.h>

namespace memd {
namespace {

constexpr std::uint64_t kPage = 2 << 20;
constexpr std::uint64_t kBase = 1ull << 40;

// A TLSF over 64 pages with its page map, driven the way the pool drives
// them; units are mapped explicitly first (map), blocks then taken in order.
struct Arena {
  Tlsf tlsf{256};
  PageMap pages{kBase, 64 * kPage, kPage};

  Arena() { EXPECT_TRUE(tlsf.add_region(kBase, 64 * kPage)); }

  std::uint64_t take(std::uint64_t bytes) {
    auto b = tlsf.allocate(bytes);
    EXPECT_TRUE(b);
    std::vector<PageRun> runs;
    pages.acquire(b->offset, b->size, runs);
    for (const auto& r : runs) pages.mark_mapped(r);
    return b->offset;
  }
  void give(std::uint64_t offset) {
    auto f = tlsf.free(offset);
    ASSERT_TRUE(f);
    pages.release(offset, f->size);
  }
  void unit(std::uint64_t first_page, std::uint64_t n) { pages.mark_mapped({kBase + first_page * kPage, n * kPage}); }
  void unmap(std::uint64_t first_page, std::uint64_t n) {
    pages.mark_unmapped({kBase + first_page * kPage, n * kPage});
  }
  std::uint64_t page_of(std::uint64_t offset) const { return (offset - kBase) / kPage; }
};

TEST(Placement, PrefersAMappedHoleOverGoodFitsUnmappedOne) {
  Arena a;
  // [A 4 pages][B 1][C 2][D 1][tail]; units as mapped.
  a.unit(0, 4), a.unit(4, 1), a.unit(5, 2), a.unit(7, 1);
  auto A = a.take(4 * kPage), B = a.take(kPage), C = a.take(2 * kPage), D = a.take(kPage);
  a.give(A);
  a.give(C);
  a.unmap(5, 2);  // C's hole unmapped; A's hole still mapped
  // Good fit for 2 pages is C's hole (exact), which needs 2 pages mapped.
  auto gf = a.tlsf.allocate(2 * kPage);
  ASSERT_TRUE(gf);
  EXPECT_EQ(gf->offset, C);
  ASSERT_TRUE(a.tlsf.free(gf->offset));
  auto p = place_over_mapped(a.tlsf, a.pages, 2 * kPage, 256);
  ASSERT_TRUE(p);
  EXPECT_EQ(a.pages.unmapped_pages(p->offset, p->size), 0u);
  EXPECT_GE(p->offset, A);
  EXPECT_LE(p->offset + p->size, A + 4 * kPage);
  EXPECT_TRUE(a.tlsf.validate());
  (void)B, (void)D;
}

TEST(Placement, AmongFreeSpotsItAvoidsPinningAWhollyFreeUnit) {
  Arena a;
  // [P 1][Q 3] one unit; [S 1]; [R 2] a unit of its own; [T 1].
  a.unit(0, 4), a.unit(4, 1), a.unit(5, 2), a.unit(7, 1);
  auto P = a.take(kPage), Q = a.take(3 * kPage), S = a.take(kPage), R = a.take(2 * kPage), T = a.take(kPage);
  a.give(Q);  // 3 free pages in a unit P keeps busy: placing there pins nothing new
  a.give(R);  // 2 free pages filling a unit: placing there pins it
  EXPECT_EQ(a.pages.free_unit_bytes(Q, 2 * kPage), 0u);
  EXPECT_EQ(a.pages.free_unit_bytes(R, 2 * kPage), 2 * kPage);
  // Both need nothing mapped and R is the exact fit, but R would pin its unit.
  auto p = place_over_mapped(a.tlsf, a.pages, 2 * kPage, 256);
  ASSERT_TRUE(p);
  EXPECT_GE(p->offset, Q);
  EXPECT_LE(p->offset + p->size, Q + 3 * kPage);
  EXPECT_TRUE(a.tlsf.validate());
  (void)P, (void)S, (void)T;
}

TEST(Placement, HonoursAlignmentAndSaysWhenNothingFits) {
  Arena a;
  a.unit(0, 1);
  auto X = a.take(kPage / 2);
  auto p = place_over_mapped(a.tlsf, a.pages, 64 * 1024, 64 * 1024);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->offset % (64 * 1024), 0u);
  EXPECT_EQ(a.pages.unmapped_pages(p->offset, p->size), 0u) << "the rest of page 0 was mapped";
  EXPECT_FALSE(place_over_mapped(a.tlsf, a.pages, 64 * kPage, 256)) << "larger than the arena";
  EXPECT_TRUE(a.tlsf.validate());
  (void)X;
}

}  // namespace
}  // namespace memd
