// SegmentArena, built without a DevicePool: whole host:0 segments as TLSF
// regions, the pool capacity checked against the footprint (huge ranges
// included), out of memory returned once.
#include <gtest/gtest.h>

#include <cstdint>

#include "pieces_test_support.hpp"

namespace memd {
namespace {

using namespace pieces_test;

PoolOptions segment_options(std::uint64_t capacity) {
  PoolOptions options = unit_options(capacity);
  options.mode = PoolMode::Segments;
  options.segment_size = 4 * kMiB;
  return options;
}

void expect_consistent(Pieces& p, const char* where) {
  expect_pieces_agree(p, where);
  EXPECT_EQ(p.arena->busy_bytes(), 0u) << where;
}

std::uint64_t take_ok(Pieces& p, std::uint64_t size, std::uint64_t alignment = Arena::kUnit) {
  auto r = p.arena->take(size, alignment, *p.footprint);
  EXPECT_TRUE(r.has_value()) << size << ": " << (r ? "" : r.error().message);
  return r ? *r : 0;
}

TEST(SegmentArena, GrowsBySegmentSize) {
  auto p = segment_pieces(64 * kMiB, segment_options(0));
  ASSERT_TRUE(p);
  EXPECT_EQ(p->arena->regions_held(), 0u);
  EXPECT_EQ(p->arena->region_kind(), "segment");
  const std::uint64_t a = take_ok(*p, kMiB);
  EXPECT_EQ(p->counters.device_calls, 1u);
  EXPECT_EQ(p->arena->regions_held(), 1u);
  EXPECT_EQ(p->arena->held_bytes(), 4 * kMiB);
  EXPECT_EQ(p->arena->blocks().allocated_size(a), kMiB);
  expect_consistent(*p, "one segment");

  // Fits the first segment: no backend call.
  (void)take_ok(*p, kMiB);
  EXPECT_EQ(p->counters.device_calls, 1u);
  EXPECT_EQ(p->arena->regions_held(), 1u);

  // 3 MiB does not fit the 2 MiB left: a second segment of segment_size.
  (void)take_ok(*p, 3 * kMiB);
  EXPECT_EQ(p->counters.device_calls, 2u);
  EXPECT_EQ(p->arena->regions_held(), 2u);
  EXPECT_EQ(p->arena->held_bytes(), 8 * kMiB);
  expect_consistent(*p, "two segments");

  // Larger than a segment: a segment of its own size, whole pages (the
  // request plus its alignment).
  (void)take_ok(*p, 10 * kMiB);
  EXPECT_EQ(p->arena->regions_held(), 3u);
  EXPECT_EQ(p->arena->held_bytes(), 8 * kMiB + 12 * kMiB);
  EXPECT_EQ(p->arena->region_backed_bytes(12345), 12345u);
  expect_consistent(*p, "big segment");

  // Alignment is honoured (a span's 64 KiB).
  const std::uint64_t s = take_ok(*p, 64 * 1024, 64 * 1024);
  EXPECT_EQ(s % (64 * 1024), 0u);
  expect_consistent(*p, "aligned");
}

TEST(SegmentArena, CapacityRefusalIsOutOfMemoryWithNoBackendCall) {
  auto p = segment_pieces(64 * kMiB, segment_options(12 * kMiB));
  ASSERT_TRUE(p);
  (void)take_ok(*p, kMiB);
  (void)take_ok(*p, 3 * kMiB + 512 * 1024);  // does not fit the 3 MiB left
  ASSERT_EQ(p->arena->held_bytes(), 8 * kMiB);
  const std::uint64_t calls = p->counters.device_calls;
  // 6 MiB needs an 8 MiB segment: 16 MiB would pass the 12 MiB capacity.
  auto r = p->arena->take(6 * kMiB, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(p->counters.device_calls, calls) << "refused before asking the backend, and not retried";
  EXPECT_EQ(p->arena->regions_held(), 2u);
  EXPECT_EQ(p->arena->held_bytes(), 8 * kMiB);
  expect_consistent(*p, "refused");
  // Exactly at the capacity is allowed.
  (void)take_ok(*p, 4 * kMiB - Arena::kUnit);
  EXPECT_EQ(p->arena->held_bytes(), 12 * kMiB);
  expect_consistent(*p, "at capacity");
}

TEST(SegmentArena, CapacityCountsHugeRanges) {
  auto options = segment_options(12 * kMiB);
  auto p = segment_pieces(64 * kMiB, options);
  ASSERT_TRUE(p);
  auto h = p->huge->take(8 * kMiB, *p->footprint);
  ASSERT_TRUE(h.has_value());
  (void)take_ok(*p, kMiB);  // 8 + 4 = 12
  auto r = p->arena->take(4 * kMiB, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::out_of_memory);
  ASSERT_TRUE(p->huge->release(*h));  // cached: still held
  r = p->arena->take(4 * kMiB, Arena::kUnit, *p->footprint);
  EXPECT_FALSE(r.has_value());
  expect_consistent(*p, "huge cached");
}

TEST(SegmentArena, DeviceRefusalIsReturnedOnce) {
  auto p = segment_pieces(8 * kMiB, segment_options(0));  // no pool capacity: the device's
  ASSERT_TRUE(p);
  (void)take_ok(*p, 3 * kMiB);
  (void)take_ok(*p, 3 * kMiB);
  ASSERT_EQ(p->physical(), 8 * kMiB);
  const std::uint64_t calls = p->counters.device_calls;
  auto r = p->arena->take(3 * kMiB, Arena::kUnit, *p->footprint);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, ErrorCode::out_of_memory);
  EXPECT_EQ(p->counters.device_calls, calls + 1);
  EXPECT_EQ(p->arena->regions_held(), 2u);
  expect_consistent(*p, "device full");
}

TEST(SegmentArena, ReleaseEmptyGivesBackOnlyWhollyEmptySegments) {
  auto p = segment_pieces(64 * kMiB, segment_options(0));
  ASSERT_TRUE(p);
  const std::uint64_t a = take_ok(*p, 3 * kMiB);  // segment 1
  const std::uint64_t b = take_ok(*p, 3 * kMiB);  // segment 2
  const std::uint64_t c = take_ok(*p, 512 * 1024);  // segment 1 or 2
  EXPECT_EQ(p->arena->regions_held(), 2u);
  EXPECT_EQ(p->arena->release_empty(), 0u);
  EXPECT_EQ(p->arena->release_free(100 * kMiB), 0u) << "segments go whole or not at all";

  // release is give_back: nothing is kept.
  EXPECT_EQ(p->arena->release(a), 3 * kMiB);
  EXPECT_FALSE(p->arena->is_kept(a));
  EXPECT_EQ(p->arena->take_kept(3 * kMiB), std::nullopt);
  EXPECT_EQ(p->arena->release(a), std::nullopt);
  EXPECT_EQ(p->arena->give_back(b), 3 * kMiB);
  // One segment still holds c.
  const std::uint64_t calls = p->counters.device_calls;
  EXPECT_EQ(p->arena->release_empty(), 4 * kMiB);
  EXPECT_EQ(p->counters.device_calls, calls + 1);
  EXPECT_EQ(p->arena->regions_held(), 1u);
  EXPECT_EQ(p->arena->held_bytes(), 4 * kMiB);
  EXPECT_EQ(p->arena->blocks().allocated_size(c), 512 * 1024u);
  expect_consistent(*p, "one empty segment released");
  EXPECT_EQ(p->arena->release_empty(), 0u);

  ASSERT_TRUE(p->arena->give_back(c));
  EXPECT_EQ(p->arena->release_empty(), 4 * kMiB);
  EXPECT_EQ(p->arena->regions_held(), 0u);
  EXPECT_EQ(p->physical(), 0u);
  expect_consistent(*p, "all released");
  // And it grows again.
  (void)take_ok(*p, kMiB);
  EXPECT_EQ(p->arena->regions_held(), 1u);
  expect_consistent(*p, "grown again");
}

TEST(SegmentArena, FreeSpaceIsTheTlsfFreeBytes) {
  auto p = segment_pieces(64 * kMiB, segment_options(0));
  ASSERT_TRUE(p);
  std::uint64_t free_bytes = 1, largest = 1;
  p->arena->free_space(free_bytes, largest);
  EXPECT_EQ(free_bytes, 0u);
  EXPECT_EQ(largest, 0u);
  (void)take_ok(*p, kMiB);
  (void)take_ok(*p, 3 * kMiB + 512 * 1024);  // second segment
  p->arena->free_space(free_bytes, largest);
  EXPECT_EQ(free_bytes, 3 * kMiB + 512 * 1024);
  EXPECT_EQ(largest, 3 * kMiB);
}

TEST(SegmentArena, DestructionFreesEverySegment) {
  auto p = segment_pieces(64 * kMiB, segment_options(0));
  ASSERT_TRUE(p);
  (void)take_ok(*p, kMiB);
  (void)take_ok(*p, 5 * kMiB);
  EXPECT_EQ(p->physical(), 10 * kMiB);
  p->footprint.reset();
  p->arena.reset();
  EXPECT_EQ(p->physical(), 0u);
}

}  // namespace
}  // namespace memd
