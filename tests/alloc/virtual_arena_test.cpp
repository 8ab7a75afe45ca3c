// VirtualArena and Footprint, built without a DevicePool: a host:0 backend
// (which enforces whole-unit unmaps and charges mapped bytes against its
// capacity), a real HugeBlocks on the same backend and one PoolCounters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "pieces_test_support.hpp"

namespace memd {
namespace {

using namespace pieces_test;

void expect_consistent(Pieces& p, const char* where) { expect_pieces_agree(p, where); }

std::uint64_t take_ok(Pieces& p, std::uint64_t size) {
  auto r = p.arena->take(size, Arena::kUnit, *p.footprint);
  EXPECT_TRUE(r.has_value()) << size << ": " << (r ? "" : r.error().message);
  return r ? *r : 0;
}

TEST(VirtualArena, ReservationIsCountedAndNothingIsMapped) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->counters.device_calls, 1u);
  EXPECT_EQ(p->counters.map_calls, 0u);
  EXPECT_EQ(p->arena->held_bytes(), 0u);
  EXPECT_EQ(p->arena->busy_bytes(), 0u);
  EXPECT_EQ(p->varena().range().size, 32 * kMiB * VirtualArena::kAddressSpaceFactor);
  EXPECT_EQ(p->arena->regions_held(), 1u);
  EXPECT_EQ(p->arena->region_kind(), "arena");
  std::uint64_t free_bytes = 1, largest = 1;
  p->arena->free_space(free_bytes, largest);
  EXPECT_EQ(free_bytes, 0u);  // nothing mapped is free
  EXPECT_EQ(largest, 0u);
  expect_consistent(*p, "fresh");
}

TEST(VirtualArena, DestructionGivesEverythingBack) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  (void)take_ok(*p, 5 * kMiB);
  auto h = p->huge->take(4 * kMiB, *p->footprint);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(p->physical(), 10 * kMiB);
  p->footprint.reset();
  p->huge.reset();
  EXPECT_EQ(p->physical(), 6 * kMiB);
  p->arena.reset();
  EXPECT_EQ(p->physical(), 0u);
}

TEST(VirtualArena, TakeMapsOnlyThePagesTheBlockNeeds) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  const auto& base = p->varena().range().base;
  // 5 MiB touches three pages: one run of 6 MiB, cut into 2 MiB units.
  const std::uint64_t a = take_ok(*p, 5 * kMiB);
  EXPECT_GE(a, base);
  EXPECT_LT(a, base + 32 * kMiB);
  EXPECT_EQ(p->counters.map_calls, 1u);
  EXPECT_EQ(p->counters.mapped_units, 3u);
  EXPECT_EQ(p->counters.device_calls, 2u);
  EXPECT_EQ(p->arena->held_bytes(), 6 * kMiB);
  EXPECT_EQ(p->arena->busy_bytes(), 6 * kMiB);
  expect_consistent(*p, "5 MiB");

  // A block that fits in mapped pages costs no backend call.
  const std::uint64_t b = take_ok(*p, 512 * 1024);
  EXPECT_EQ(p->counters.map_calls, 1u);
  EXPECT_EQ(p->counters.device_calls, 2u);
  EXPECT_EQ(p->arena->held_bytes(), 6 * kMiB);
  EXPECT_TRUE(p->varena().pages().is_mapped(b / kPage * kPage));
  expect_consistent(*p, "512 KiB in mapped pages");

  // 3 MiB more: at best the free half page plus two new pages.
  (void)take_ok(*p, 3 * kMiB);
  EXPECT_EQ(p->counters.map_calls, 2u);
  EXPECT_EQ(p->arena->held_bytes(), 10 * kMiB);
  expect_consistent(*p, "3 MiB");
  EXPECT_EQ(p->arena->blocks().used_bytes(), 8 * kMiB + 512 * 1024);
}

TEST(VirtualArena, PlacementPrefersAMappedHoleOverABetterFittingUnmappedOne) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  // Four blocks fill [0, 16 MiB) in address order: a (8 MiB), a separator
  // (2 MiB), b (4 MiB), c (2 MiB).
  std::vector<std::uint64_t> got;
  for (std::uint64_t s : {8 * kMiB, 2 * kMiB, 4 * kMiB, 2 * kMiB}) got.push_back(take_ok(*p, s));
  ASSERT_TRUE(std::is_sorted(got.begin(), got.end()));
  const std::uint64_t a = got[0], b = got[2];
  ASSERT_EQ(b - a, 10 * kMiB);
  // b's hole gets unmapped (an exact fit for 4 MiB, with nothing mapped),
  // a's stays mapped (8 MiB).
  ASSERT_TRUE(p->arena->give_back(b));
  EXPECT_EQ(p->arena->release_free(4 * kMiB), 4 * kMiB);
  ASSERT_TRUE(p->arena->give_back(a));
  EXPECT_FALSE(p->varena().pages().is_mapped(b));
  EXPECT_TRUE(p->varena().pages().is_mapped(a));
  const std::uint64_t calls = p->counters.map_calls;
  expect_consistent(*p, "holes made");

  const std::uint64_t c = take_ok(*p, 4 * kMiB);
  EXPECT_GE(c, a);
  EXPECT_LE(c + 4 * kMiB, a + 8 * kMiB) << "placed outside the mapped hole";
  EXPECT_EQ(p->counters.map_calls, calls);
  expect_consistent(*p, "placed");
}

TEST(VirtualArena, GiveBackAndReleaseReturnTheBlockBytes) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  const std::uint64_t a = take_ok(*p, 1000);  // 1024: whole 256-byte units
  const std::uint64_t b = take_ok(*p, 8 * 1024);
  EXPECT_EQ(p->arena->give_back(a), 1024u);
  EXPECT_EQ(p->arena->give_back(a), std::nullopt);
  EXPECT_EQ(p->arena->release(b), 8 * 1024u);  // below kKeepMin: freed at once
  EXPECT_FALSE(p->arena->is_kept(b));
  EXPECT_EQ(p->arena->release(b), std::nullopt);
  EXPECT_EQ(p->arena->blocks().used_bytes(), 0u);
  EXPECT_EQ(p->arena->busy_bytes(), 0u);
  // Not a block start at all.
  EXPECT_EQ(p->arena->give_back(p->varena().range().base + 12345), std::nullopt);
  EXPECT_EQ(p->arena->release(p->varena().range().base + 12345), std::nullopt);
  // Freed pages stay mapped (slack), and count as free mapped space.
  EXPECT_EQ(p->arena->held_bytes(), kPage);
  std::uint64_t free_bytes = 0, largest = 0;
  p->arena->free_space(free_bytes, largest);
  EXPECT_EQ(free_bytes, kPage);
  EXPECT_EQ(largest, kPage);
  expect_consistent(*p, "all freed");
}

TEST(VirtualArena, ReleaseKeepsTheLastLargeBlockForItsSizeOnly) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->arena->take_kept(kMiB), std::nullopt);  // nothing kept
  const std::uint64_t a = take_ok(*p, kMiB);
  const std::uint64_t b = take_ok(*p, kMiB);
  const std::uint64_t small = take_ok(*p, VirtualArena::kKeepMin - Arena::kUnit);
  const std::uint64_t edge = take_ok(*p, VirtualArena::kKeepMin);
  const std::uint64_t used = p->arena->blocks().used_bytes();
  const std::uint64_t calls = p->counters.device_calls;

  EXPECT_EQ(p->arena->release(a), kMiB);
  EXPECT_TRUE(p->arena->is_kept(a));
  // Kept whole: still a TLSF block, its pages still live.
  EXPECT_EQ(p->arena->blocks().used_bytes(), used);
  EXPECT_EQ(p->arena->release(a), std::nullopt) << "a kept block is freed already";
  expect_consistent(*p, "a kept");

  // The same size gets it back with no TLSF or page-map work.
  EXPECT_EQ(p->arena->take_kept(kMiB), a);
  EXPECT_FALSE(p->arena->is_kept(a));
  EXPECT_EQ(p->arena->blocks().used_bytes(), used);
  EXPECT_EQ(p->counters.device_calls, calls);
  expect_consistent(*p, "a taken back");

  // A second release replaces the kept block (the first goes to TLSF).
  EXPECT_EQ(p->arena->release(a), kMiB);
  EXPECT_EQ(p->arena->release(b), kMiB);
  EXPECT_FALSE(p->arena->is_kept(a));
  EXPECT_TRUE(p->arena->is_kept(b));
  EXPECT_EQ(p->arena->blocks().used_bytes(), used - kMiB);
  EXPECT_EQ(p->arena->blocks().allocated_size(a), std::nullopt);
  expect_consistent(*p, "b kept");

  // Another size flushes it and takes nothing.
  EXPECT_EQ(p->arena->take_kept(kMiB - Arena::kUnit), std::nullopt);
  EXPECT_FALSE(p->arena->is_kept(b));
  EXPECT_EQ(p->arena->blocks().used_bytes(), used - 2 * kMiB);
  EXPECT_EQ(p->arena->take_kept(kMiB), std::nullopt);
  expect_consistent(*p, "b flushed");

  // kKeepMin is the boundary: one unit below is freed, kKeepMin is kept.
  EXPECT_EQ(p->arena->release(small), VirtualArena::kKeepMin - Arena::kUnit);
  EXPECT_FALSE(p->arena->is_kept(small));
  EXPECT_EQ(p->arena->release(edge), VirtualArena::kKeepMin);
  EXPECT_TRUE(p->arena->is_kept(edge));
  p->arena->flush_kept();
  EXPECT_FALSE(p->arena->is_kept(edge));
  EXPECT_EQ(p->arena->blocks().used_bytes(), 0u);
  EXPECT_EQ(p->arena->busy_bytes(), 0u);
  p->arena->flush_kept();  // nothing kept: a no-op
  expect_consistent(*p, "all freed");
}

TEST(VirtualArena, ReleaseFreeGivesWholeUnitsBackFromTheTop) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 3; ++i) got.push_back(take_ok(*p, kPage));  // one unit each
  std::sort(got.begin(), got.end());
  EXPECT_EQ(p->counters.mapped_units, 3u);
  EXPECT_EQ(p->arena->release_free(kPage), 0u) << "nothing is free";
  for (auto a : got) ASSERT_TRUE(p->arena->give_back(a));
  EXPECT_EQ(p->arena->release_free(0), 0u);

  // One unit asked for: the highest goes.
  EXPECT_EQ(p->arena->release_free(1), kPage);
  EXPECT_EQ(p->counters.unmap_calls, 1u);
  EXPECT_EQ(p->counters.unmapped_units, 1u);
  EXPECT_FALSE(p->varena().pages().is_mapped(got[2]));
  EXPECT_TRUE(p->varena().pages().is_mapped(got[1]));
  EXPECT_TRUE(p->varena().pages().is_mapped(got[0]));
  expect_consistent(*p, "top unit released");

  // The two adjacent units left go in one call.
  EXPECT_EQ(p->arena->release_free(100 * kMiB), 2 * kPage);
  EXPECT_EQ(p->counters.unmap_calls, 2u);
  EXPECT_EQ(p->counters.unmapped_units, 3u);
  EXPECT_EQ(p->arena->held_bytes(), 0u);
  EXPECT_EQ(p->physical(), 0u);
  expect_consistent(*p, "all released");
}

TEST(VirtualArena, ReleaseFreeNeverCutsAUnitThatHoldsALiveBlock) {
  auto options = unit_options(32 * kMiB);
  options.map_unit_min = options.map_unit_max = 4 * kMiB;
  auto p = virtual_pieces(64 * kMiB, options);
  ASSERT_TRUE(p);
  const std::uint64_t a = take_ok(*p, 8 * kMiB);  // one run, two 4 MiB units
  EXPECT_EQ(p->counters.map_calls, 1u);
  EXPECT_EQ(p->counters.mapped_units, 2u);
  const std::uint64_t b = take_ok(*p, 2 * kMiB);  // a unit of its own
  EXPECT_EQ(p->counters.map_calls, 2u);
  EXPECT_EQ(p->counters.mapped_units, 3u);
  ASSERT_TRUE(p->arena->give_back(a));
  // A small block in a's mapped hole pins the unit it lands in.
  const std::uint64_t c = take_ok(*p, kMiB);
  EXPECT_EQ(p->counters.map_calls, 2u);
  ASSERT_GE(c, a);
  ASSERT_LT(c, a + 8 * kMiB);
  EXPECT_EQ(p->arena->release_free(100 * kMiB), 4 * kMiB) << "only the unit without c can go";
  EXPECT_EQ(p->counters.unmap_calls, 1u);
  EXPECT_EQ(p->counters.unmapped_units, 1u);
  EXPECT_TRUE(p->varena().pages().is_mapped(c / kPage * kPage));
  EXPECT_TRUE(p->varena().pages().is_mapped(b));
  EXPECT_EQ(p->arena->held_bytes(), 6 * kMiB);
  expect_consistent(*p, "one unit of a released");
  ASSERT_TRUE(p->arena->give_back(c));
  EXPECT_EQ(p->arena->release_free(1), 4 * kMiB);
  EXPECT_EQ(p->arena->release_free(100 * kMiB), 0u) << "b is live";
  EXPECT_EQ(p->arena->held_bytes(), 2 * kMiB);
  expect_consistent(*p, "b alone");
}

TEST(VirtualArena, OverCapacityTakeIsOutOfMemoryAndChangesNothing) {
  auto p = virtual_pieces(64 * kMiB, unit_options(16 * kMiB));
  ASSERT_TRUE(p);
  auto r = p->arena->take(16 * kMiB + Arena::kUnit, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(p->counters.map_calls, 0u);
  expect_consistent(*p, "refused");
  const std::uint64_t a = take_ok(*p, 10 * kMiB);
  const std::uint64_t calls = p->counters.device_calls;
  r = p->arena->take(8 * kMiB, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(p->counters.device_calls, calls);
  EXPECT_EQ(p->arena->blocks().used_bytes(), 10 * kMiB);
  expect_consistent(*p, "refused with a live block");
  // The whole rest still fits.
  (void)take_ok(*p, 6 * kMiB);
  ASSERT_TRUE(p->arena->give_back(a));
  expect_consistent(*p, "full");
}

// The capacity bounds physical bytes, not addresses: a live block in the
// middle of a range the size of the capacity splits its free addresses, and
// a block that physical memory could hold must still find a range (repeated
// jittered replays were refused this way while half the capacity was free).
TEST(VirtualArena, FragmentedAddressesDoNotRefuseWhatTheCapacityHolds) {
  auto p = virtual_pieces(64 * kMiB, unit_options(16 * kMiB));
  ASSERT_TRUE(p);
  const std::uint64_t a = take_ok(*p, 6 * kMiB);
  const std::uint64_t b = take_ok(*p, 2 * kMiB);
  const std::uint64_t c = take_ok(*p, 6 * kMiB);
  ASSERT_TRUE(p->arena->give_back(a));
  ASSERT_TRUE(p->arena->give_back(c));
  EXPECT_GT(p->arena->release_free(~std::uint64_t{0} / 2), 0u);
  const std::uint64_t d = take_ok(*p, 12 * kMiB);
  EXPECT_LE(p->arena->held_bytes(), 16 * kMiB);
  // ... and the capacity still refuses what would exceed it.
  auto e = p->arena->take(4 * kMiB, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, ErrorCode::out_of_memory);
  EXPECT_NE(e.error().message.find("capacity"), std::string::npos) << e.error().message;
  ASSERT_TRUE(p->arena->give_back(b));
  ASSERT_TRUE(p->arena->give_back(d));
  expect_consistent(*p, "after");
}

TEST(VirtualArena, FailingMapRollsBack) {
  // The address space is 32 MiB, the device only 4 MiB.
  auto p = virtual_pieces(4 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  auto r = p->arena->take(8 * kMiB, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(p->arena->blocks().used_bytes(), 0u);
  EXPECT_EQ(p->arena->busy_bytes(), 0u);
  EXPECT_EQ(p->arena->held_bytes(), 0u);
  EXPECT_EQ(p->varena().pages().live_bytes(), 0u);
  EXPECT_EQ(p->counters.mapped_units, 0u);
  expect_consistent(*p, "refused");
  // What fits the device still maps.
  (void)take_ok(*p, 4 * kMiB);
  EXPECT_EQ(p->physical(), 4 * kMiB);
  expect_consistent(*p, "4 MiB");
}

// Found by this test (session 6): a take whose map failed kept the peak of
// busy bytes it had noted for the block, inflating the retention budget as
// if the block had lived.
TEST(VirtualArena, FailingMapLeavesThePeakAlone) {
  auto p = virtual_pieces(4 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  (void)take_ok(*p, kMiB);
  ASSERT_EQ(p->footprint->state().peak_busy, kPage);
  ASSERT_FALSE(p->arena->take(8 * kMiB, Arena::kUnit, *p->footprint).has_value());
  EXPECT_EQ(p->footprint->state().peak_busy, kPage);
}

// Pages 0 unmapped, 1 mapped and free, 2 unmapped, 3 live, on a device of
// four pages of which someone else holds one: a 3-page block has one spot,
// needing two runs, and only the first can be mapped. Returns the four page
// addresses, or an empty vector.
std::vector<std::uint64_t> two_run_setup(Pieces& p, std::optional<Segment>& other) {
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 4; ++i) got.push_back(take_ok(p, kPage));
  std::sort(got.begin(), got.end());
  if (!p.arena->give_back(got[0]) || !p.arena->give_back(got[2])) return {};
  EXPECT_EQ(p.arena->release_free(100 * kMiB), 2 * kPage);
  if (!p.arena->give_back(got[1])) return {};
  expect_consistent(p, "set up");
  auto held = p.backend->allocate(kHost0, MemoryType::VRAM, kPage);
  EXPECT_TRUE(held.has_value());
  if (!held) return {};
  other = *held;
  return got;
}

// The second map fails: the first run is unmapped again (whole units) and
// the block forgotten.
TEST(VirtualArena, FailingSecondRunUnmapsTheFirst) {
  auto p = virtual_pieces(8 * kMiB, unit_options(8 * kMiB));
  ASSERT_TRUE(p);
  std::optional<Segment> other;
  const auto got = two_run_setup(*p, other);
  ASSERT_EQ(got.size(), 4u);

  const std::uint64_t maps = p->counters.map_calls, mapped = p->counters.mapped_units,
                      unmapped = p->counters.unmapped_units;
  auto r = p->arena->take(3 * kPage, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(p->counters.map_calls, maps + 2);
  EXPECT_EQ(p->counters.mapped_units, mapped + 1);
  EXPECT_EQ(p->counters.unmapped_units, unmapped + 1);
  EXPECT_EQ(p->arena->held_bytes(), 2 * kPage);
  EXPECT_FALSE(p->varena().pages().is_mapped(got[0]));
  EXPECT_TRUE(p->varena().pages().is_mapped(got[1]));
  EXPECT_FALSE(p->varena().pages().is_mapped(got[2]));
  EXPECT_EQ(p->arena->blocks().used_bytes(), kPage);
  EXPECT_EQ(p->physical(), 3 * kPage);  // two arena pages and the other holder's
  auto valid = p->arena->validate();
  EXPECT_TRUE(valid.has_value()) << (valid ? "" : valid.error().message);

  ASSERT_TRUE(p->backend->free(*other));
  const std::uint64_t c = take_ok(*p, 3 * kPage);
  EXPECT_EQ(c, got[0]);
  expect_consistent(*p, "fits once the device has room");
}

// Found by this test (session 6): the unmaps that undo a failed take's
// earlier runs counted units and device calls but not unmap_calls.
TEST(VirtualArena, RollbackUnmapsAreCountedAsUnmapCalls) {
  auto p = virtual_pieces(8 * kMiB, unit_options(8 * kMiB));
  ASSERT_TRUE(p);
  std::optional<Segment> other;
  const auto got = two_run_setup(*p, other);
  ASSERT_EQ(got.size(), 4u);
  const std::uint64_t unmaps = p->counters.unmap_calls, unmapped = p->counters.unmapped_units;
  ASSERT_FALSE(p->arena->take(3 * kPage, Arena::kUnit, *p->footprint).has_value());
  ASSERT_EQ(p->counters.unmapped_units, unmapped + 1);  // the rollback did unmap
  EXPECT_EQ(p->counters.unmap_calls, unmaps + 1);
  ASSERT_TRUE(p->backend->free(*other));
}

TEST(Footprint, ReservedBusyAllowedAndPeak) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  Footprint& f = *p->footprint;
  EXPECT_EQ(f.reserved(), 0u);
  EXPECT_EQ(f.busy(), 0u);
  EXPECT_EQ(f.allowed(), 2 * kPage);  // retain_min_pages
  EXPECT_EQ(f.page(), kPage);

  (void)take_ok(*p, kMiB);  // one page busy; take() notes the peak
  EXPECT_EQ(f.reserved(), kPage);
  EXPECT_EQ(f.busy(), kPage);
  EXPECT_EQ(f.state().peak_busy, kPage);
  EXPECT_EQ(f.allowed(), 3 * kPage);
  EXPECT_EQ(f.allowed(10 * kMiB), 12 * kMiB + 2 * kPage);
  f.note_busy(10 * kMiB);
  EXPECT_EQ(f.state().peak_busy, 12 * kMiB);
  f.note_busy();  // never lowers the peak
  EXPECT_EQ(f.state().peak_busy, 12 * kMiB);
  // peak 12 MiB + 3 % (0.36 MiB -> a page) beats busy + 2 pages.
  EXPECT_EQ(f.allowed(), 14 * kMiB);

  // Huge ranges count: in use as busy and reserved, cached as reserved.
  auto h = p->huge->take(4 * kMiB, f);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(f.reserved(), kPage + 4 * kMiB);
  EXPECT_EQ(f.busy(), kPage + 4 * kMiB);
  ASSERT_TRUE(p->huge->release(*h));
  EXPECT_EQ(f.reserved(), kPage + 4 * kMiB);
  EXPECT_EQ(f.busy(), kPage);
  expect_consistent(*p, "huge cached");
}

TEST(Footprint, ReleaseSlackFlushesTheKeptBlockThenHugeCacheThenArenaFromTheTop) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  Footprint& f = *p->footprint;
  EXPECT_EQ(f.release_slack(kPage), 0u) << "nothing to give";
  const std::uint64_t a = take_ok(*p, kPage);
  const std::uint64_t b = take_ok(*p, kPage);
  ASSERT_EQ(p->arena->release(b), kPage);
  ASSERT_TRUE(p->arena->is_kept(b));
  auto h = p->huge->take(4 * kMiB, f);
  ASSERT_TRUE(h.has_value());
  ASSERT_TRUE(p->huge->release(*h));
  expect_consistent(*p, "set up");

  // The cached range goes first, and alone when it is enough; the kept
  // block is flushed regardless.
  EXPECT_EQ(f.release_slack(1), 4 * kMiB);
  EXPECT_EQ(p->huge->cached_bytes(), 0u);
  EXPECT_FALSE(p->arena->is_kept(b));
  EXPECT_EQ(p->arena->held_bytes(), 2 * kPage);
  EXPECT_EQ(p->counters.unmap_calls, 0u);
  expect_consistent(*p, "cache released");

  // Then free arena pages: b's, now that it is no longer kept.
  EXPECT_EQ(f.release_slack(1), kPage);
  EXPECT_FALSE(p->varena().pages().is_mapped(b));
  EXPECT_TRUE(p->varena().pages().is_mapped(a));
  EXPECT_EQ(p->counters.unmap_calls, 1u);
  EXPECT_EQ(p->counters.unmapped_units, 1u);
  EXPECT_EQ(f.release_slack(100 * kMiB), 0u) << "a is live";
  expect_consistent(*p, "arena released");
}

TEST(Footprint, ReleaseSlackTakesCacheAndArenaTogetherWhenOneIsNotEnough) {
  auto p = virtual_pieces(64 * kMiB, unit_options(32 * kMiB));
  ASSERT_TRUE(p);
  Footprint& f = *p->footprint;
  std::vector<std::uint64_t> got;
  for (int i = 0; i < 3; ++i) got.push_back(take_ok(*p, kPage));
  for (auto a : got) ASSERT_TRUE(p->arena->give_back(a));
  auto h = p->huge->take(2 * kMiB, f);
  ASSERT_TRUE(h.has_value());
  ASSERT_TRUE(p->huge->release(*h));
  EXPECT_EQ(f.release_slack(2 * kMiB + 1), 2 * kMiB + kPage);
  EXPECT_EQ(p->arena->held_bytes(), 2 * kPage);
  EXPECT_EQ(p->huge->ranges(), 0u);
  expect_consistent(*p, "both");
}

// A seeded mix of every call, checked after each step.
TEST(VirtualArena, RandomMixStaysConsistent) {
  auto p = virtual_pieces(64 * kMiB, unit_options(48 * kMiB));
  ASSERT_TRUE(p);
  std::mt19937_64 rng(1234);
  std::vector<std::uint64_t> live;
  for (int step = 0; step < 400; ++step) {
    const auto op = rng() % 10;
    if (op < 5) {
      const std::uint64_t size = 256 + rng() % (op == 0 ? 6 * kMiB : 200 * 1024);
      if (auto kept = p->arena->take_kept(retention::round_up(size, Arena::kUnit))) {
        live.push_back(*kept);
      } else if (auto r = p->arena->take(size, Arena::kUnit, *p->footprint)) {
        live.push_back(*r);
      } else {
        EXPECT_EQ(r.error().code, ErrorCode::out_of_memory) << r.error().message;
      }
    } else if (op < 9 && !live.empty()) {
      const std::size_t i = rng() % live.size();
      const auto freed = op < 7 ? p->arena->release(live[i]) : p->arena->give_back(live[i]);
      EXPECT_TRUE(freed.has_value()) << step;
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      (void)p->footprint->release_slack(rng() % (8 * kMiB));
    }
    expect_consistent(*p, "step");
    if (HasFailure()) {
      ADD_FAILURE() << "at step " << step;
      break;
    }
  }
}

}  // namespace
}  // namespace memd
