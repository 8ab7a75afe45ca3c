// Defragmentation on the host backend (runs in CI): a device fragmented on
// purpose, every byte checked after; remap, pinned/exportable/held
// allocations, pass limits, dry runs, and readers racing the moves.
#include "transfer/defragmenter.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <thread>

#include "transfer/defrag_schedule.hpp"
#include "transfer_test_support.hpp"

namespace memd {
namespace {

using transfer_test::Env;
using transfer_test::pattern;

const DeviceId kDev = DeviceId::host(0);

struct Fragmented {
  std::vector<AllocationRecord> live;
  std::vector<std::vector<std::byte>> bytes;
};

// Allocations of 64 KiB – 1 MiB (below a mapping unit, so freed holes stay
// mapped), every other one freed, survivors filled with random patterns.
Fragmented fragment(Env& env, int count, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<AllocationRecord> all;
  for (int i = 0; i < count; ++i)
    all.push_back(env.alloc(64 * kKiB + rng() % (960 * kKiB), kDev, MemoryType::VRAM));
  Fragmented f;
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (i % 2 == 0) {
      EXPECT_TRUE(env.manager->deallocate(all[i].id));
      continue;
    }
    f.live.push_back(all[i]);
    f.bytes.push_back(env.fill(all[i], seed * 1000 + i));
  }
  return f;
}

void expect_intact(Env& env, const Fragmented& f) {
  for (std::size_t i = 0; i < f.live.size(); ++i) ASSERT_EQ(env.bytes(f.live[i]), f.bytes[i]) << "allocation " << i;
}

PoolStats pool_stats(Env& env) { return (*env.manager->pool(kDev, MemoryType::VRAM))->stats(); }

TEST(Defragmenter, FragmentedDeviceCompactsEveryByteIntactFootprintDown) {
  Env env;
  auto f = fragment(env, 240, 11);
  const auto before = pool_stats(env);
  ASSERT_GT(before.fragmentation, 0.5);
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  std::vector<DefragEvent> events;
  defrag.set_event_hook([&](const DefragEvent& e) { events.push_back(e); });
  DefragOptions o;
  o.device = kDev;
  auto report = defrag.run(o);
  ASSERT_TRUE(report) << report.error().message;
  expect_intact(env, f);
  const auto after = pool_stats(env);
  std::printf("fragmentation %.3f -> %.3f, reserved %llu -> %llu bytes, %llu moves, %llu bytes copied\n",
              before.fragmentation, after.fragmentation, static_cast<unsigned long long>(before.reserved_bytes),
              static_cast<unsigned long long>(after.reserved_bytes), static_cast<unsigned long long>(report->moves),
              static_cast<unsigned long long>(report->bytes_moved));
  EXPECT_LE(after.fragmentation, 0.05);
  EXPECT_LT(after.reserved_bytes, before.reserved_bytes);
  EXPECT_GT(report->moves, 0u);
  EXPECT_GT(report->bytes_moved, 0u);
  EXPECT_EQ(report->skipped, 0u);
  ASSERT_EQ(report->pools.size(), 1u);
  EXPECT_DOUBLE_EQ(report->pools[0].fragmentation_before, before.fragmentation);
  EXPECT_DOUBLE_EQ(report->pools[0].fragmentation_after, after.fragmentation);
  EXPECT_EQ(report->pools[0].reserved_bytes_before, before.reserved_bytes);
  EXPECT_EQ(report->pools[0].reserved_bytes_after, after.reserved_bytes);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].kind, DefragEvent::Kind::Started);
  EXPECT_GT(events[0].planned_moves, 0u);
  EXPECT_EQ(events[1].kind, DefragEvent::Kind::Finished);
  EXPECT_EQ(events[1].report.moves, report->moves);
  // Records follow their blocks.
  for (const auto& r : f.live) EXPECT_EQ(env.manager->get(r.id)->status, MemoryAllocationStatus::Allocated);
  auto v = env.manager->validate();
  EXPECT_TRUE(v) << (v ? "" : v.error().message);
}

TEST(Defragmenter, DryRunMovesNothingAndReturnsThePlan) {
  Env env;
  auto f = fragment(env, 60, 3);
  std::vector<std::uint64_t> addresses;
  for (const auto& r : f.live) addresses.push_back(env.manager->get(r.id)->address);
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  DefragOptions o;
  o.dry_run = true;
  o.max_moves_per_pass = 5;
  auto report = defrag.run(o);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_TRUE(report->dry_run);
  EXPECT_EQ(report->moves, 0u);
  ASSERT_FALSE(report->plan.empty());
  EXPECT_EQ(report->passes, (report->plan.size() + 4) / 5);
  for (std::size_t i = 0; i < f.live.size(); ++i) EXPECT_EQ(env.manager->get(f.live[i].id)->address, addresses[i]);
  expect_intact(env, f);
}

TEST(Defragmenter, PassesAreBoundedByMovesAndBytes) {
  Env env;
  auto f = fragment(env, 60, 5);
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  DefragOptions o;
  o.max_moves_per_pass = 3;
  o.max_passes = 2;
  auto report = defrag.run(o);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_LE(report->moves, 6u);
  EXPECT_EQ(report->passes, 2u);
  expect_intact(env, f);

  DefragOptions b;
  b.max_bytes_per_pass = 1 * kMiB;
  b.max_passes = 1;
  auto by_bytes = defrag.run(b);
  ASSERT_TRUE(by_bytes);
  EXPECT_LE(by_bytes->bytes_moved + by_bytes->bytes_remapped, 1 * kMiB);
  EXPECT_GT(by_bytes->moves, 0u);
  expect_intact(env, f);
}

TEST(Defragmenter, PinnedAndExportableNeverMoveHeldIsSkipped) {
  Env env;
  std::vector<AllocationRecord> gaps, keep;
  for (int i = 0; i < 8; ++i) {
    gaps.push_back(env.alloc(256 * kKiB, kDev, MemoryType::VRAM));
    keep.push_back(env.alloc(256 * kKiB, kDev, MemoryType::VRAM, "t", /*pinned=*/i % 4 == 0));
  }
  AllocationRequest ex;
  ex.size_bytes = 256 * kKiB;
  ex.device = kDev;
  ex.exportable = true;
  auto exportable = env.manager->allocate(ex);
  ASSERT_TRUE(exportable);
  for (const auto& g : gaps) ASSERT_TRUE(env.manager->deallocate(g.id));
  // keep[1] is held (as a transfer or an import would hold it).
  auto held = env.manager->hold(keep[1].id);
  ASSERT_TRUE(held);
  std::vector<std::uint64_t> before;
  for (const auto& k : keep) before.push_back(env.manager->get(k.id)->address);
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  auto report = defrag.run({});
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->skipped, 1u);
  EXPECT_GT(report->moves, 0u);
  for (std::size_t i = 0; i < keep.size(); ++i) {
    const auto now = env.manager->get(keep[i].id)->address;
    if (i % 4 == 0 || i == 1) {
      EXPECT_EQ(now, before[i]) << "allocation " << i << " must not move";
    }
  }
  EXPECT_EQ(env.manager->get(exportable->id)->address, exportable->address);
  held->release();
}

TEST(Defragmenter, WholeUnitBlocksRemapBytesIntactOldAddressUnmapped) {
  Env env;
  // Three blocks of whole units; the first two freed and trimmed leave
  // unmapped address space below the third.
  auto a = env.alloc(8 * kMiB, kDev, MemoryType::VRAM);
  auto b = env.alloc(8 * kMiB, kDev, MemoryType::VRAM);
  auto c = env.alloc(8 * kMiB, kDev, MemoryType::VRAM);
  const auto bytes = env.fill(c, 99);
  ASSERT_TRUE(env.manager->deallocate(a.id));
  ASSERT_TRUE(env.manager->deallocate(b.id));
  env.manager->trim();
  const auto old_address = env.manager->get(c.id)->address;
  const auto reserved_before = pool_stats(env).reserved_bytes;
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  auto report = defrag.run({});
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->remaps, 1u);
  EXPECT_EQ(report->bytes_remapped, 8 * kMiB);
  EXPECT_EQ(report->bytes_moved, 0u);
  const auto now = env.manager->get(c.id)->address;
  EXPECT_LT(now, old_address);
  EXPECT_EQ(env.bytes(c), bytes);
  EXPECT_EQ(pool_stats(env).reserved_bytes, reserved_before);  // the same units, elsewhere
  auto v = env.manager->validate();
  EXPECT_TRUE(v) << (v ? "" : v.error().message);
  // Without remap allowed, nothing moves (there is no mapped room).
  auto d = env.alloc(8 * kMiB, kDev, MemoryType::VRAM);
  auto e = env.alloc(8 * kMiB, kDev, MemoryType::VRAM);
  ASSERT_TRUE(env.manager->deallocate(d.id));
  env.manager->trim();
  DefragOptions no_remap;
  no_remap.allow_remap = false;
  auto r2 = defrag.run(no_remap);
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->remaps, 0u);
  (void)e;
}

TEST(Defragmenter, ReadersDuringDefragmentationAlwaysSeeTheirBytes) {
  Env env;
  auto f = fragment(env, 120, 21);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> reads{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t)
    readers.emplace_back([&, t] {
      std::size_t i = static_cast<std::size_t>(t);
      while (!stop.load()) {
        i = (i + 7) % f.live.size();
        auto got = env.engine->read(f.live[i].id, 0, f.live[i].size_bytes);
        if (!got || *got != f.bytes[i]) bad.fetch_add(1);
        reads.fetch_add(1);
      }
    });
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  std::uint64_t moves = 0;
  for (int round = 0; round < 3; ++round) {
    auto report = defrag.run({});
    ASSERT_TRUE(report) << report.error().message;
    moves += report->moves;
  }
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(reads.load(), 0u);
  EXPECT_GT(moves, 0u);
  expect_intact(env, f);
}

// Copies settle in batches whose writers wait at the gates: writers racing
// the moves (each write a whole new pattern) must find their last write in
// place afterwards, and frees racing them must cost nothing else.
TEST(Defragmenter, WritersAndFreesRacingBatchedMovesLoseNothing) {
  Env env;
  auto f = fragment(env, 160, 31);
  const std::size_t writers = 2;
  std::vector<std::vector<std::byte>> last(f.bytes);
  // Bytes, not vector<bool>: each writer owns its indices, and packed bits
  // would put two writers' flags in one word (a data race).
  std::vector<std::uint8_t> freed(f.live.size(), 0);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> failed{0};
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < writers; ++t)
    threads.emplace_back([&, t] {
      // Writer t owns the allocations i with i % writers == t; every tenth it
      // touches is freed instead of written.
      std::uint64_t round = 0;
      while (!stop.load()) {
        for (std::size_t i = t; i < f.live.size() && !stop.load(); i += writers) {
          if (freed[i]) continue;
          if (++round % 10 == 0) {
            if (!env.manager->deallocate(f.live[i].id)) failed.fetch_add(1);
            freed[i] = 1;
            continue;
          }
          auto bytes = pattern(f.live[i].size_bytes, 7000 + round * 131 + i);
          if (!env.engine->write(f.live[i].id, 0, bytes)) failed.fetch_add(1);
          last[i] = std::move(bytes);
        }
      }
    });
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  std::uint64_t moves = 0;
  for (int round = 0; round < 4; ++round) {
    auto report = defrag.run({});
    ASSERT_TRUE(report) << report.error().message;
    moves += report->moves;
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0u);
  EXPECT_GT(moves, 0u);
  for (std::size_t i = 0; i < f.live.size(); ++i)
    if (!freed[i]) {
      ASSERT_EQ(env.bytes(f.live[i]), last[i]) << "allocation " << i;
    }
  EXPECT_TRUE(env.manager->validate());
}

// A batch never blocks on a moved block's io lock (a reader holding it may
// be a transfer waiting for another gate the batch holds): it tries for a
// while, then leaves that block where it was, bytes intact, and lands the rest.
TEST(Defragmenter, ABlockWhoseReaderStaysIsLeftWhereItWas) {
  Env env;
  auto f = fragment(env, 60, 41);
  auto plan = [&] {
    DefragOptions o;
    o.dry_run = true;
    Defragmenter dry(*env.manager, env.engine->stream_pool());
    auto r = dry.run(o);
    EXPECT_TRUE(r);
    return r ? r->plan : std::vector<DefragPlannedMove>{};
  }();
  auto first_copy = std::find_if(plan.begin(), plan.end(),
                                 [](const DefragPlannedMove& m) { return m.move.kind == DefragMoveKind::Copy; });
  ASSERT_NE(first_copy, plan.end());
  // The reader's io lock alone (its hold given back, so the planner and
  // reserve_relocation take the block: only the switch finds it locked).
  auto reader = env.manager->hold(first_copy->id);
  ASSERT_TRUE(reader);
  auto& entry = reader->entry();
  void* const before = entry.ptr;
  entry.io.lock_shared();
  reader->release();
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  DefragOptions o;
  o.max_passes = 1;
  auto report = defrag.run(o);
  entry.io.unlock_shared();
  void* const after = entry.ptr;
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_GT(report->moves, 0u);
  EXPECT_GE(report->skipped, 1u);
  EXPECT_EQ(after, before) << "the read-locked block stays where it was";
  expect_intact(env, f);
  EXPECT_TRUE(env.manager->validate());
}

TEST(Defragmenter, RefusesBadOptions) {
  Env env;
  Defragmenter defrag(*env.manager, env.engine->stream_pool());
  DefragOptions o;
  o.max_passes = 0;
  EXPECT_EQ(defrag.run(o).error().code, ErrorCode::invalid_argument);
  o = {};
  o.max_moves_per_pass = 0;
  EXPECT_EQ(defrag.run(o).error().code, ErrorCode::invalid_argument);
  o = {};
  o.max_bytes_per_pass = 0;
  EXPECT_EQ(defrag.run(o).error().code, ErrorCode::invalid_argument);
  o = {};
  o.device = DeviceId::host(7);
  EXPECT_EQ(defrag.run(o).error().code, ErrorCode::not_found);
}

TEST(DefragSchedule, ThresholdAndIdleTime) {
  using namespace std::chrono_literals;
  EXPECT_FALSE(should_defragment(0.29, 60s));
  EXPECT_FALSE(should_defragment(0.5, 29s));
  EXPECT_TRUE(should_defragment(0.3, 30s));
  EXPECT_FALSE(should_defragment(std::nan(""), 60s));
  EXPECT_FALSE(should_defragment(0.9, -1s));
  EXPECT_TRUE(should_defragment(0.1, 1s, {0.05, 1s}));
}

}  // namespace
}  // namespace memd
