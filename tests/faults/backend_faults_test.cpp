// Faults injected into the backend under a whole MemoryService (issue 17
// item 3): each scenario runs at >= 20 random points of observed progress
// (the Nth map, the Nth copy chunk, the Nth callback), drawn from one seed
// printed by any failure, and after each checks that the failed operation
// got the code a real driver failure gives, that what it made is released
// (device counters back at the baseline), that every other allocation's
// bytes are intact, that validate() passes and that the service still
// serves.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <stdexcept>

#include "fault_test_support.hpp"

namespace memd::faults {
namespace {

constexpr int kPoints = 20;  // injection points each scenario must reach

// --- the fault backend itself ----------------------------------------------

TEST(FaultPlanTest, FailsExactlyTheNthCallOrEveryCallFromIt) {
  FaultPlan plan;
  plan.arm({FaultOp::copy, 3, false});
  std::vector<bool> fails;
  for (int i = 0; i < 6; ++i) fails.push_back(plan.should_fail(FaultOp::copy));
  EXPECT_EQ(fails, (std::vector<bool>{false, false, true, false, false, false}));
  EXPECT_FALSE(plan.should_fail(FaultOp::map)) << "other operations are not armed";
  plan.arm({FaultOp::map, 2, true});  // counted from now: the map calls so far were 1
  std::vector<bool> maps;
  for (int i = 0; i < 4; ++i) maps.push_back(plan.should_fail(FaultOp::map));
  EXPECT_EQ(maps, (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(plan.calls(FaultOp::copy), 6u);
  EXPECT_EQ(plan.calls(FaultOp::map), 5u);
  EXPECT_EQ(plan.injected(FaultOp::copy), 1u);
  EXPECT_EQ(plan.injected(FaultOp::map), 3u);
  EXPECT_EQ(plan.injected_total(), 4u);
  plan.disarm(FaultOp::map);
  EXPECT_FALSE(plan.should_fail(FaultOp::map));
}

TEST(FaultPlanTest, ParsesRulesAndRefusesHostileOnes) {
  auto rules = parse_fault_rules("map:17,copy:5+");
  ASSERT_TRUE(rules) << rules.error().message;
  ASSERT_EQ(rules->size(), 2u);
  EXPECT_EQ((*rules)[0].op, FaultOp::map);
  EXPECT_EQ((*rules)[0].nth, 17u);
  EXPECT_FALSE((*rules)[0].and_after);
  EXPECT_EQ((*rules)[1].op, FaultOp::copy);
  EXPECT_EQ((*rules)[1].nth, 5u);
  EXPECT_TRUE((*rules)[1].and_after);
  for (const char* bad : {"", "map", "map:", "map:0", "map:-1", "map:x", "map:3++", "mapp:3", "map:3,", ":3",
                          "map:99999999999999999999999"}) {
    auto r = parse_fault_rules(bad);
    ASSERT_FALSE(r) << "'" << bad << "' was accepted";
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << bad;
  }
  for (std::size_t i = 0; i < kFaultOpCount; ++i) {
    const auto op = static_cast<FaultOp>(i);
    EXPECT_EQ(parse_fault_op(to_string(op)), op);
  }
}

TEST(FaultPlanTest, InjectedErrorsAreTheDriversCodesAndChangeNothing) {
  FaultService env;
  Bystanders by(env);
  const auto base = env.all_counters();
  env.service->manager().trim();
  env.plan->arm({FaultOp::reserve, 1, true});
  env.plan->arm({FaultOp::map, 1, true});
  env.plan->arm({FaultOp::allocate, 1, true});
  env.plan->arm({FaultOp::allocate_shareable, 1, true});
  // Past what the trimmed pools have mapped: every way to get memory fails.
  for (auto [bytes, device, type] : {std::tuple{24 * kMiB, env.dev0, MemoryType::VRAM},
                                     std::tuple{256 * kMiB, DeviceId::cpu(), MemoryType::RAM}}) {
    auto r = env.allocate(bytes, device, type);
    ASSERT_FALSE(r) << device.to_string();
    EXPECT_EQ(r.error().code, ErrorCode::out_of_memory) << r.error().message;
  }
  AllocationRequest exportable;
  exportable.size_bytes = kMiB;
  exportable.device = env.dev1;
  exportable.exportable = true;
  auto e = env.service->allocate(env.alice, exportable);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, ErrorCode::out_of_memory) << e.error().message;
  EXPECT_NE(e.error().message.find("injected fault"), std::string::npos) << e.error().message;
  EXPECT_GE(env.plan->injected_total(), 3u);
  env.plan->disarm_all();
  EXPECT_EQ(env.all_counters(), base);
  by.expect_intact(env);
  env.expect_serving();
}

// --- the device running out ---------------------------------------------------

// A run of allocations (what a worker asks for a batch of tensors): from
// the Nth map on, the device has no more physical memory. Allocations are
// each their own: those made before stay, with their bytes; the one that
// failed says out_of_memory and holds nothing.
TEST(DeviceRunsOutTest, InTheMiddleOfARunOfAllocations) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  FaultService env;
  Bystanders by(env);
  const auto base = env.all_counters();
  int fired = 0, tries = 0;
  for (; fired < kPoints && tries < 100; ++tries) {
    env.service->manager().trim();  // nothing mapped is left to reuse: allocations map
    const std::uint64_t nth = 1 + rng() % 8;
    SCOPED_TRACE("point " + std::to_string(tries) + ": map " + std::to_string(nth) + "+");
    env.plan->arm({FaultOp::map, nth, true});
    std::vector<Known> made;
    std::optional<Error> failed;
    for (int k = 0; k < 12 && !failed; ++k) {
      const std::uint64_t bytes = 64 * kKiB + rng() % (3 * kMiB);
      const DeviceId device = rng() % 2 ? env.dev0 : env.dev1;
      auto r = env.allocate(bytes, device);
      if (!r) {
        failed = r.error();
        break;
      }
      made.push_back({*r, pattern(bytes, rng())});
      ASSERT_TRUE(env.service->write(env.alice, r->id, 0, made.back().bytes));  // writes never map
    }
    env.plan->disarm(FaultOp::map);
    if (failed) {
      ++fired;
      EXPECT_EQ(failed->code, ErrorCode::out_of_memory) << failed->message;
    }
    for (const auto& k : made) EXPECT_TRUE(env.intact(k)) << "an allocation made before the device ran out";
    for (const auto& k : made) env.free(k.record.id);
    EXPECT_EQ(env.all_counters(), base);
    by.expect_intact(env);
    env.expect_serving();
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(fired, kPoints) << "the device ran out at only " << fired << " of " << tries << " points";
}

// One map failing (a transient shortfall) is what the reclaim ladder is
// for: trim and retry, and the allocation succeeds.
TEST(DeviceRunsOutTest, OneFailedMapIsRetriedByTheReclaimLadder) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  FaultService env;
  Bystanders by(env);
  const auto base = env.all_counters();
  int fired = 0;
  for (int point = 0; point < kPoints; ++point) {
    env.service->manager().trim();
    const std::uint64_t nth = 1 + rng() % 4;
    env.plan->arm({FaultOp::map, nth, false});
    const auto injected = env.plan->injected(FaultOp::map);
    std::vector<Known> made;
    for (int k = 0; k < 6; ++k) {
      auto k2 = env.known(256 * kKiB + rng() % (2 * kMiB), rng() % 2 ? env.dev0 : env.dev1, rng());
      made.push_back(k2);
    }
    env.plan->disarm(FaultOp::map);
    if (env.plan->injected(FaultOp::map) > injected) ++fired;
    for (const auto& k : made) EXPECT_TRUE(env.intact(k));
    for (const auto& k : made) env.free(k.record.id);
    EXPECT_EQ(env.all_counters(), base);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(fired, kPoints * 3 / 4);
  // Most failed maps are answered by the ladder's trim and retry (a pool
  // may also absorb one itself, trying a smaller run).
  EXPECT_GT(env.service->manager().reclaim_counts().trim_retries, 0u);
  by.expect_intact(env);
  env.expect_serving();
}

// A batch of moves to a device that runs out partway: each member ends on
// its own (transfer_engine.hpp: "a member that fails undoes nothing"). A
// completed member lives on the new device with its bytes; a failed one
// is still where it was, with its bytes, and says out_of_memory; the
// target blocks of failed members are given back.
TEST(DeviceRunsOutTest, InTheMiddleOfABatchOfMoves) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  FaultService env;
  Bystanders by(env);
  const auto base = env.all_counters();
  int fired = 0, tries = 0;
  for (; fired < kPoints && tries < 60; ++tries) {
    std::vector<Known> members;
    for (int k = 0; k < 6; ++k) members.push_back(env.known(512 * kKiB + rng() % (2 * kMiB), env.dev0, rng()));
    env.service->manager().trim();
    const std::uint64_t nth = 1 + rng() % 6;
    SCOPED_TRACE("point " + std::to_string(tries) + ": map " + std::to_string(nth) + "+");
    std::vector<TransferSpec> specs;
    for (const auto& m : members) {
      TransferSpec s;
      s.source = m.record.id;
      s.to_device = env.dev1;
      specs.push_back(s);
    }
    env.plan->arm({FaultOp::map, nth, true});
    auto batch = env.service->transfer_batch(env.alice, specs);
    ASSERT_TRUE(batch) << batch.error().message;
    BatchReport report;
    ASSERT_TRUE(wait_until([&] {
      auto b = env.service->batch_status(env.alice, batch->id);
      if (!b) return false;
      report = *b;
      return std::all_of(b->transfers.begin(), b->transfers.end(), [](const auto& t) { return t.finished(); });
    }));
    env.plan->disarm(FaultOp::map);
    ASSERT_EQ(report.transfers.size(), members.size());
    std::size_t failed = 0;
    for (std::size_t i = 0; i < members.size(); ++i) {
      const auto& t = report.transfers[i];
      auto now = env.service->allocation(env.alice, members[i].record.id);
      ASSERT_TRUE(now) << now.error().message;
      if (t.status == MemoryTransferStatus::Completed) {
        EXPECT_EQ(now->device, env.dev1);
      } else {
        ++failed;
        EXPECT_EQ(t.status, MemoryTransferStatus::Failed);
        ASSERT_TRUE(t.error.has_value());
        EXPECT_EQ(t.error->code, ErrorCode::out_of_memory) << t.error->message;
        EXPECT_EQ(now->device, env.dev0) << "a failed move left its allocation elsewhere";
      }
      EXPECT_TRUE(env.intact(members[i])) << "member " << i << " (" << to_string(t.status) << ")";
    }
    EXPECT_EQ(report.failed.size(), failed);
    if (failed > 0) {
      ++fired;
      EXPECT_EQ(report.status, MemoryTransferStatus::Failed);
    }
    for (const auto& m : members) env.free(m.record.id);
    EXPECT_EQ(env.all_counters(), base);
    by.expect_intact(env);
    env.expect_serving();
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(fired, kPoints) << "only " << fired << " of " << tries << " batches met the shortfall";
}

// --- copies failing -------------------------------------------------------------

// A transfer whose Nth chunk fails: it ends Failed with backend_error, the
// source is untouched, and the destination holds exactly the chunks that
// landed before it (nothing is written after the failure) and its old
// bytes past them.
TEST(CopyFailsTest, AtTheNthChunkOfATransferOrMemoryCopy) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  FaultService env;
  Bystanders by(env);
  const std::uint64_t chunk = 256 * kKiB, bytes = 16 * chunk;
  auto src = env.known(bytes, env.dev0, 11);
  auto dst = env.known(bytes, env.dev1, 12);
  const auto base = env.all_counters();
  int fired = 0;
  for (int point = 0; point < 2 * kPoints; ++point) {
    const bool synchronous = point % 2 == 1;  // memory_copy on the caller's thread, else a transfer
    const std::uint64_t nth = 1 + rng() % 16;
    SCOPED_TRACE("point " + std::to_string(point) + (synchronous ? " memory_copy" : " transfer") + ": copy " +
                 std::to_string(nth));
    dst.bytes = pattern(bytes, rng());
    ASSERT_TRUE(env.service->write(env.alice, dst.record.id, 0, dst.bytes));
    TransferSpec spec;
    spec.source = src.record.id;
    spec.destination = dst.record.id;
    env.plan->arm({FaultOp::copy, nth, false});
    std::optional<Error> error;
    if (synchronous) {
      auto r = env.service->copy(env.alice, spec);
      if (!r) error = r.error();
    } else {
      auto t = env.service->transfer(env.alice, spec);
      ASSERT_TRUE(t) << t.error().message;
      TransferReport report;
      ASSERT_TRUE(wait_until([&] {
        auto s = env.service->transfer_status(env.alice, t->id);
        if (s) report = *s;
        return s && s->finished();
      }));
      if (report.status != MemoryTransferStatus::Completed) {
        EXPECT_EQ(report.status, MemoryTransferStatus::Failed);
        ASSERT_TRUE(report.error.has_value());
        error = *report.error;
        EXPECT_EQ(report.bytes_done, (nth - 1) * chunk) << "progress counts the chunks that landed";
      }
    }
    env.plan->disarm(FaultOp::copy);
    ASSERT_TRUE(error.has_value()) << "the " << nth << "th chunk's failure went unnoticed";
    ++fired;
    EXPECT_EQ(error->code, ErrorCode::backend_error) << error->message;
    EXPECT_TRUE(env.intact(src)) << "the source changed";
    auto got = env.read(dst.record.id, bytes);
    ASSERT_EQ(got.size(), bytes);
    const std::uint64_t landed = (nth - 1) * chunk;
    EXPECT_TRUE(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(landed), src.bytes.begin()))
        << "the chunks before the failure did not land";
    EXPECT_TRUE(std::equal(got.begin() + static_cast<std::ptrdiff_t>(landed), got.end(),
                           dst.bytes.begin() + static_cast<std::ptrdiff_t>(landed)))
        << "bytes past the failed chunk were written";
    EXPECT_EQ(env.all_counters(), base);
    by.expect_intact(env);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(fired, kPoints);
  env.expect_serving();
}

// A move whose Nth chunk (or the event after it) fails: the allocation
// stays where it was, whole, and the block reserved on the other device
// goes back.
TEST(CopyFailsTest, AtTheNthChunkOfAMove) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  FaultService env;
  Bystanders by(env);
  const std::uint64_t chunk = 256 * kKiB, bytes = 12 * chunk;
  const auto base = env.all_counters();
  int fired = 0;
  for (int point = 0; point < kPoints + 4; ++point) {
    auto moving = env.known(bytes, env.dev0, rng());
    const auto with_moving = env.all_counters();
    const FaultOp op = point % 3 == 2 ? FaultOp::wait : FaultOp::copy;
    const std::uint64_t nth = 1 + rng() % 12;
    SCOPED_TRACE("point " + std::to_string(point) + ": " + std::string(to_string(op)) + " " + std::to_string(nth));
    TransferSpec spec;
    spec.source = moving.record.id;
    spec.to_device = env.dev1;
    env.plan->arm({op, nth, false});
    auto t = env.service->transfer(env.alice, spec);
    ASSERT_TRUE(t) << t.error().message;
    TransferReport report;
    ASSERT_TRUE(wait_until([&] {
      auto s = env.service->transfer_status(env.alice, t->id);
      if (s) report = *s;
      return s && s->finished();
    }));
    env.plan->disarm(op);
    auto now = env.service->allocation(env.alice, moving.record.id);
    ASSERT_TRUE(now);
    if (report.status == MemoryTransferStatus::Completed) {
      EXPECT_EQ(now->device, env.dev1);
    } else {
      ++fired;
      EXPECT_EQ(report.status, MemoryTransferStatus::Failed);
      ASSERT_TRUE(report.error.has_value());
      EXPECT_EQ(report.error->code, ErrorCode::backend_error) << report.error->message;
      EXPECT_EQ(now->device, env.dev0);
      EXPECT_EQ(env.all_counters(), with_moving) << "the failed move's target was not given back";
    }
    EXPECT_TRUE(env.intact(moving)) << "the moved allocation's bytes";
    env.free(moving.record.id);
    EXPECT_EQ(env.all_counters(), base);
    by.expect_intact(env);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(fired, kPoints);
  env.expect_serving();
}

// Defragmentation whose copies (or the waits on them) fail at random
// points: every allocation keeps its bytes, whether its move landed or
// was given up, and the pool stays valid.
TEST(CopyFailsTest, DuringDefragmentation) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  FaultService env;
  Bystanders by(env);
  const auto base = env.all_counters();
  int fired = 0, moved = 0;
  for (int point = 0; point < kPoints + 4; ++point) {
    // Holes: many blocks, every other one freed.
    std::vector<Known> blocks;
    for (int k = 0; k < 24; ++k) blocks.push_back(env.known(128 * kKiB + rng() % (768 * kKiB), env.dev0, rng()));
    std::vector<Known> kept;
    for (std::size_t k = 0; k < blocks.size(); ++k) {
      if (rng() % 2) env.free(blocks[k].record.id);
      else kept.push_back(blocks[k]);
    }
    const FaultOp op = point % 4 == 3 ? FaultOp::wait : FaultOp::copy;
    const std::uint64_t nth = 1 + rng() % 6;
    SCOPED_TRACE("point " + std::to_string(point) + ": " + std::string(to_string(op)) + " " + std::to_string(nth));
    const auto injected = env.plan->injected(op);
    env.plan->arm({op, nth, false});
    DefragOptions options;
    options.device = env.dev0;
    options.allow_remap = point % 2 == 0;
    auto report = env.service->defragment(env.admin, options);
    env.plan->disarm(op);
    if (env.plan->injected(op) > injected) ++fired;
    if (!report) EXPECT_NE(report.error().code, ErrorCode::internal) << report.error().message;
    else moved += static_cast<int>(report->moves);
    auto v = env.service->validate();
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
    for (const auto& k : kept) EXPECT_TRUE(env.intact(k)) << "a defragmented allocation lost its bytes";
    for (const auto& k : kept) env.free(k.record.id);
    EXPECT_EQ(env.all_counters(), base);
    by.expect_intact(env);
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_GE(fired, kPoints * 3 / 4) << "faults fired at " << fired << " points";
  EXPECT_GT(moved, 0) << "defragmentation never moved anything: the scenario tests nothing";
  env.expect_serving();
}

// --- reclaim callbacks that fail ------------------------------------------------

// A device full of a cache's allocations; an allocation that needs room
// climbs the ladder, and a reclaim callback fails on the way: it throws,
// claims bytes it did not free, or frees nothing. The allocation gets a
// clean out_of_memory (nothing charged, nothing leaked) — or, when an
// honest callback comes after one that throws or frees nothing, the room
// it makes.
TEST(ReclaimFailsTest, ACallbackThatThrowsLiesOrFreesNothing) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  FaultService env({.host_device_sizes = {32 * kMiB, 32 * kMiB}});
  Bystanders by(env);
  const Caller cache = Caller::as("cache");
  std::vector<AllocationId> victims;
  auto fill = [&] {
    for (;;) {
      auto r = env.allocate(4 * kMiB, env.dev0, MemoryType::VRAM, &cache);
      if (!r) break;
      victims.push_back(r->id);
    }
  };
  enum class Mode { Throw, Lie, Nothing };
  Mode mode = Mode::Throw;
  bool honest = false;
  int calls = 0;
  auto& manager = env.service->manager();
  const auto failing = manager.add_reclaim_callback([&](DeviceId, MemoryType, std::uint64_t needed) -> std::uint64_t {
    ++calls;
    switch (mode) {
      case Mode::Throw: throw std::runtime_error("reclaim callback failed");
      case Mode::Lie: return needed * 2;
      case Mode::Nothing: return 0;
    }
    return 0;
  });
  const auto freeing = manager.add_reclaim_callback([&](DeviceId device, MemoryType, std::uint64_t needed) -> std::uint64_t {
    std::uint64_t freed = 0;
    while (honest && device == env.dev0 && !victims.empty() && freed < needed) {
      const auto id = victims.back();
      victims.pop_back();
      auto r = env.service->deallocate(env.admin, id);
      if (r) freed += r->size_bytes;
    }
    return freed;
  });
  fill();
  ASSERT_FALSE(victims.empty());
  for (int point = 0; point < kPoints + 4; ++point) {
    mode = static_cast<Mode>(point % 3);  // each kind at a third of the points
    honest = rng() % 2 == 0;
    SCOPED_TRACE("point " + std::to_string(point) + ": mode " + std::to_string(static_cast<int>(mode)) +
                 (honest ? ", an honest callback after it" : ""));
    const auto before = env.counters(env.dev0);
    const auto usage_before = manager.usage_by_owner()["alice"];
    const int calls_before = calls;
    const std::uint64_t bytes = 5 * kMiB + rng() % (3 * kMiB);
    auto r = env.allocate(bytes, env.dev0);
    EXPECT_GT(calls, calls_before) << "the allocation did not need the callbacks";
    // A callback that claims it freed enough ends the climb's calls (the
    // ladder calls callbacks until they report `needed`): the honest one
    // after it is never asked, and the allocation fails cleanly.
    if (honest && mode != Mode::Lie) {
      ASSERT_TRUE(r) << "a failing callback kept the next one from making room: " << r.error().message;
      auto k = Known{*r, pattern(bytes, rng())};
      ASSERT_TRUE(env.service->write(env.alice, r->id, 0, k.bytes));
      EXPECT_TRUE(env.intact(k));
      env.free(r->id);
      honest = false;
      fill();  // the cache takes the room back
    } else {
      ASSERT_FALSE(r);
      EXPECT_EQ(r.error().code, ErrorCode::out_of_memory) << r.error().message;
      EXPECT_EQ(env.counters(env.dev0), before) << "the failed allocation holds memory";
      EXPECT_EQ(manager.usage_by_owner()["alice"], usage_before) << "the failed allocation is still charged";
    }
    auto v = env.service->validate();
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
    by.expect_intact(env);
    if (::testing::Test::HasFailure()) break;
  }
  manager.remove_reclaim_callback(failing);
  manager.remove_reclaim_callback(freeing);
  for (const auto& id : victims) env.free(id);
  env.expect_serving();
}

}  // namespace
}  // namespace memd::faults
