// Slabs: class rounding, span reuse and release, double-free detection.
#include "core/slab.hpp"

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "core/tlsf.hpp"

namespace memd {
namespace {
struct SpanPool {
  Tlsf tlsf;
  SpanPool() { EXPECT_TRUE(tlsf.add_region(0, 64 << 20)); }
  SlabAllocator::SpanSource source() {
    return [this]() -> std::optional<std::uint64_t> {
      auto b = tlsf.allocate(SlabAllocator::kSpanSize, SlabAllocator::kSpanSize);
      if (!b) return std::nullopt;
      return b->offset;
    };
  }
};

TEST(Slab, RoundsToClassesOf256) {
  EXPECT_EQ(SlabAllocator::class_size(1), 256u);
  EXPECT_EQ(SlabAllocator::class_size(256), 256u);
  EXPECT_EQ(SlabAllocator::class_size(257), 512u);
  EXPECT_EQ(SlabAllocator::class_size(8192), 8192u);
  EXPECT_TRUE(SlabAllocator::is_small(8192));
  EXPECT_FALSE(SlabAllocator::is_small(8193));
}

TEST(Slab, FillsASpanThenTakesAnother) {
  SpanPool p;
  SlabAllocator s;
  auto src = p.source();
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 128; ++i) {  // 64 KiB / 512 B = 128 slots: exactly one span
    auto o = s.allocate(512, src);
    ASSERT_TRUE(o);
    EXPECT_EQ(*o % 512, 0u);
    EXPECT_TRUE(seen.insert(*o).second);
  }
  EXPECT_EQ(s.span_bytes(), SlabAllocator::kSpanSize);
  ASSERT_TRUE(s.allocate(512, src));
  EXPECT_EQ(s.span_bytes(), 2 * SlabAllocator::kSpanSize);
  ASSERT_TRUE(s.validate());
}

TEST(Slab, ReleasesEmptySpansButKeepsOnePerClass) {
  SpanPool p;
  SlabAllocator s;
  auto src = p.source();
  std::vector<std::uint64_t> a;
  for (int i = 0; i < 300; ++i) a.push_back(*s.allocate(1024, src));  // 5 spans of 64
  int released = 0;
  for (auto o : a) {
    auto r = s.free(o);
    ASSERT_EQ(r.outcome, SlabAllocator::FreeOutcome::Freed);
    if (r.released_span) {
      ++released;
      ASSERT_TRUE(p.tlsf.free(*r.released_span));
    }
  }
  EXPECT_EQ(released, 4);
  EXPECT_EQ(s.span_bytes(), SlabAllocator::kSpanSize);
  EXPECT_EQ(s.release_empty_spans().size(), 1u);
  EXPECT_EQ(s.span_bytes(), 0u);
  ASSERT_TRUE(s.validate());
}

TEST(Slab, DetectsDoubleFreeAndForeignPointers) {
  SpanPool p;
  SlabAllocator s;
  auto src = p.source();
  auto o = s.allocate(300, src);
  ASSERT_TRUE(o);
  EXPECT_EQ(s.slot_size(*o), 512u);
  EXPECT_EQ(s.free(*o + 256).outcome, SlabAllocator::FreeOutcome::DoubleFree);  // inside a slot
  EXPECT_EQ(s.free(*o).outcome, SlabAllocator::FreeOutcome::Freed);
  EXPECT_EQ(s.free(*o).outcome, SlabAllocator::FreeOutcome::DoubleFree);
  EXPECT_EQ(s.free(32 << 20).outcome, SlabAllocator::FreeOutcome::NotSlab);
  ASSERT_TRUE(s.validate());
}

TEST(Slab, FailsWhenTheSourceIsDry) {
  SlabAllocator s;
  SlabAllocator::SpanSource dry = [] { return std::optional<std::uint64_t>{}; };
  EXPECT_FALSE(s.allocate(256, dry));
  ASSERT_TRUE(s.validate());
}

TEST(Slab, RandomisedNoOverlap) {
  SpanPool p;
  SlabAllocator s;
  auto src = p.source();
  std::mt19937 rng(7);
  std::map<std::uint64_t, std::uint64_t> live;
  for (int i = 0; i < 50000; ++i) {
    if (live.empty() || rng() % 2) {
      std::uint64_t size = 1 + rng() % SlabAllocator::kMaxSize;
      auto o = s.allocate(size, src);
      ASSERT_TRUE(o);
      auto next = live.lower_bound(*o);
      if (next != live.end()) {
        ASSERT_LE(*o + size, next->first);
      }
      if (next != live.begin()) {
        ASSERT_LE(std::prev(next)->first + std::prev(next)->second, *o);
      }
      live[*o] = SlabAllocator::class_size(size);
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      auto r = s.free(it->first);
      ASSERT_EQ(r.outcome, SlabAllocator::FreeOutcome::Freed);
      if (r.released_span) {
        ASSERT_TRUE(p.tlsf.free(*r.released_span));
      }
      live.erase(it);
    }
  }
  ASSERT_TRUE(s.validate());
}

}  // namespace
}  // namespace memd
