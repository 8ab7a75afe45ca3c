// LiveSlots: slot starts by class, the tail that holds no slot, interior and
// foreign addresses, double set/clear, closed spans, and concurrent bit
// changes in one word from several threads.
#include "core/live_slots.hpp"
#include "memd/size.hpp"

#include <gtest/gtest.h>

#include <bit>
#include <thread>
#include <vector>

namespace memd {
namespace {

constexpr std::uint64_t kBase = std::uint64_t{1} << 40;
constexpr std::uint64_t kSpan = SlabAllocator::kSpanSize;

TEST(LiveSlots, SlotStartsFollowTheClassAndTheTailHoldsNone) {
  LiveSlots t(kBase, 4 * kGiB);
  const std::uint64_t span = kBase + 3 * kGiB + 5 * kSpan;  // a chunk other than the first
  EXPECT_EQ(t.slot_size(span), 0u) << "no span opened yet";
  t.open_span(span, 768);
  EXPECT_EQ(t.slot_size(span), 768u);
  EXPECT_EQ(t.slot_size(span + 768), 768u);
  EXPECT_EQ(t.slot_size(span + 84 * 768), 768u);  // last whole slot: 85 slots of 768 fit 65280 bytes
  EXPECT_EQ(t.slot_size(span + 85 * 768), 0u) << "the 256-byte tail is no slot";
  EXPECT_EQ(t.slot_size(span + 256), 0u) << "interior pointer";
  EXPECT_EQ(t.slot_size(span + 1), 0u);
  EXPECT_EQ(t.slot_size(span + kSpan), 0u) << "next span not open";
  EXPECT_EQ(t.slot_size(kBase - kSpan), 0u) << "below the range";
  EXPECT_EQ(t.slot_size(kBase + 4 * kGiB), 0u) << "past the range";
  EXPECT_FALSE(t.set_live(span + 85 * 768));
  EXPECT_FALSE(t.set_live(kBase + 4 * kGiB));
}

TEST(LiveSlots, EverySlotOfEveryClassIsOneBitOfItsOwn) {
  LiveSlots t(kBase, kGiB);
  for (std::uint64_t size = SlabAllocator::kClassStep; size <= SlabAllocator::kMaxSize;
       size += SlabAllocator::kClassStep) {
    const std::uint64_t span = kBase + (size / SlabAllocator::kClassStep) * kSpan;
    t.open_span(span, size);
    const std::uint64_t slots = kSpan / size;
    for (std::uint64_t k = 0; k < slots; ++k)
      ASSERT_TRUE(t.set_live(span + k * size)) << "slot " << k << " of class " << size;
    std::uint64_t bits = 0;
    for (auto w : t.live_bits(span)) bits += static_cast<std::uint64_t>(std::popcount(w));
    EXPECT_EQ(bits, slots) << "class " << size << ": two slots share a bit";
  }
}

TEST(LiveSlots, AnUnalignedBaseStillIndexesWholeSpans) {
  const std::uint64_t base = kBase + 12 * 1024;  // 4 KiB-granular arena
  LiveSlots t(base, 256 * kMiB);
  const std::uint64_t span = kBase + kSpan;  // spans are 64 KiB-aligned in absolute terms
  t.open_span(span, 512);
  for (std::uint64_t k = 0; k < kSpan / 512; ++k) ASSERT_TRUE(t.set_live(span + k * 512)) << k;
  EXPECT_EQ(t.slot_size(span + kSpan), 0u) << "the next span is another entry";
  std::uint64_t bits = 0;
  for (auto w : t.live_bits(span)) bits += static_cast<std::uint64_t>(std::popcount(w));
  EXPECT_EQ(bits, kSpan / 512);
}

TEST(LiveSlots, SetAndClearReportTheOldState) {
  LiveSlots t(kBase, kGiB);
  t.open_span(kBase, 256);
  auto slot = t.find(kBase + 200 * 256);  // word 3 of the bitmap
  ASSERT_TRUE(slot);
  EXPECT_EQ(slot.size(), 256u);
  EXPECT_FALSE(LiveSlots::clear_live(slot)) << "never set: a double free";
  EXPECT_TRUE(LiveSlots::set_live(slot));
  EXPECT_FALSE(LiveSlots::set_live(slot)) << "set twice";
  EXPECT_TRUE(t.is_live(kBase + 200 * 256));
  EXPECT_FALSE(t.is_live(kBase + 199 * 256));
  EXPECT_EQ(t.live_bits(kBase)[3], std::uint64_t{1} << (200 - 192));
  EXPECT_TRUE(LiveSlots::clear_live(slot));
  EXPECT_FALSE(LiveSlots::clear_live(slot)) << "cleared twice";
  EXPECT_EQ(t.live_bits(kBase)[3], 0u);
}

TEST(LiveSlots, ClosedSpanHasNoSlotsAndReopensClean) {
  LiveSlots t(kBase, kGiB);
  t.open_span(kBase + kSpan, 512);
  ASSERT_TRUE(t.set_live(kBase + kSpan + 512));
  ASSERT_TRUE(LiveSlots::clear_live(t.find(kBase + kSpan + 512)));
  t.close_span(kBase + kSpan);
  EXPECT_EQ(t.slot_size(kBase + kSpan + 512), 0u);
  EXPECT_FALSE(t.set_live(kBase + kSpan + 512));
  t.open_span(kBase + kSpan, 1024);
  EXPECT_EQ(t.slot_size(kBase + kSpan + 512), 0u) << "512 is inside a 1 KiB slot now";
  EXPECT_EQ(t.slot_size(kBase + kSpan + 1024), 1024u);
  EXPECT_FALSE(t.is_live(kBase + kSpan + 1024));
}

// Each span has an "opened" bit that a lookup reads before the entry (so
// frees of large blocks do not fault in entry pages): spans on either side of
// a 64-span word boundary and the last span of a chunk are told apart.
TEST(LiveSlots, OpenedBitsSeparateNeighbouringSpans) {
  LiveSlots t(kBase, 2 * kGiB);
  const std::uint64_t spans_per_chunk = kGiB / kSpan;
  for (std::uint64_t i : {std::uint64_t{63}, spans_per_chunk - 1}) {
    const std::uint64_t at = kBase + i * kSpan;
    t.open_span(at, 256);
    EXPECT_EQ(t.slot_size(at), 256u) << "span " << i;
    EXPECT_EQ(t.slot_size(at - kSpan), 0u) << "span " << i - 1 << " never opened";
    EXPECT_EQ(t.slot_size(at + kSpan), 0u) << "span " << i + 1 << " never opened";
    EXPECT_FALSE(t.set_live(at + kSpan));
  }
  t.open_span(kBase + 64 * kSpan, 512);
  EXPECT_EQ(t.slot_size(kBase + 63 * kSpan + 512), 256u);
  EXPECT_EQ(t.slot_size(kBase + 64 * kSpan + 512), 512u);
}

TEST(LiveSlots, ThreadsFlippingBitsOfOneWordLoseNone) {
  LiveSlots t(kBase, kGiB);
  t.open_span(kBase, 256);
  constexpr int kThreads = 4, kRounds = 20000;
  std::vector<std::thread> threads;
  std::vector<int> errors(kThreads, 0);
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      // Thread i owns slots i, i+4, ... of the first word: every set and
      // clear must see its own previous state despite the others.
      for (int r = 0; r < kRounds; ++r)
        for (int k = i; k < 64; k += kThreads) {
          auto s = t.find(kBase + static_cast<std::uint64_t>(k) * 256);
          if (!LiveSlots::set_live(s)) ++errors[static_cast<std::size_t>(i)];
          if (!LiveSlots::clear_live(s)) ++errors[static_cast<std::size_t>(i)];
        }
    });
  for (auto& th : threads) th.join();
  for (int e : errors) EXPECT_EQ(e, 0);
  EXPECT_EQ(t.live_bits(kBase)[0], 0u);
}

}  // namespace
}  // namespace memd
