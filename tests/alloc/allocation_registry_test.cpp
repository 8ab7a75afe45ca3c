// AllocationRegistry alone (entries with no pool behind them): insert, find,
// get, unlink, duplicate ids, every filter and their AND, newest-first
// listing with ties by id, touch, for_each stopping early, take_all, and
// concurrent insert/find/unlink/list from several threads.
#include "alloc/allocation_registry.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace memd {
namespace {

AllocationRegistry::EntryPtr make_entry(std::string owner, DeviceId device, MemoryType type,
                                        std::vector<std::string> tags = {},
                                        MemoryPriority priority = MemoryPriority::Normal,
                                        Clock::time_point created = Clock::now()) {
  auto e = std::make_shared<AllocationRegistry::Entry>();
  auto& r = e->record;
  r.id = AllocationId::generate();
  r.owner = std::move(owner);
  r.device = device;
  r.memory_type = type;
  r.tags = std::move(tags);
  r.priority = priority;
  r.size_bytes = 4096;
  r.created_at = r.last_used_at = created;
  return e;
}

std::set<AllocationId> ids(const std::vector<AllocationRecord>& records) {
  std::set<AllocationId> out;
  for (const auto& r : records) out.insert(r.id);
  return out;
}

TEST(AllocationRegistry, InsertFindGetUnlink) {
  AllocationRegistry reg;
  auto e = make_entry("alice", DeviceId::host(0), MemoryType::VRAM);
  const AllocationId id = e->record.id;
  ASSERT_TRUE(reg.insert(e));
  EXPECT_EQ(reg.size(), 1u);

  auto dup = std::make_shared<AllocationRegistry::Entry>();
  dup->record.id = id;
  dup->record.owner = "mallory";
  auto refused = reg.insert(dup);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::internal);
  EXPECT_EQ(reg.size(), 1u);

  auto found = reg.find(id);
  ASSERT_TRUE(found);
  EXPECT_EQ(found->get(), e.get());
  auto got = reg.get(id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->owner, "alice") << "a refused duplicate replaced the entry";

  auto unlinked = reg.unlink(id);
  ASSERT_TRUE(unlinked);
  EXPECT_EQ(unlinked->get(), e.get());
  EXPECT_EQ(reg.size(), 0u);
  for (auto code : {reg.find(id) ? ErrorCode::internal : reg.find(id).error().code,
                    reg.get(id) ? ErrorCode::internal : reg.get(id).error().code,
                    reg.unlink(id) ? ErrorCode::internal : reg.unlink(id).error().code})
    EXPECT_EQ(code, ErrorCode::not_found);
}

TEST(AllocationRegistry, ListFiltersNewestFirst) {
  AllocationRegistry reg;
  const auto t0 = Clock::now();
  using std::chrono::seconds;
  auto a = make_entry("alice", DeviceId::host(0), MemoryType::VRAM, {"kv"}, MemoryPriority::Low, t0);
  auto b = make_entry("alice", DeviceId::cpu(), MemoryType::RAM, {"weights", "kv"}, MemoryPriority::High,
                      t0 + seconds(1));
  auto c = make_entry("bob", DeviceId::host(0), MemoryType::VRAM, {}, MemoryPriority::Normal, t0 + seconds(2));
  auto d = make_entry("bob", DeviceId::cpu(), MemoryType::RAM, {"weights"}, MemoryPriority::Critical,
                      t0 + seconds(3));
  d->record.status = MemoryAllocationStatus::Moving;
  for (const auto& e : {a, b, c, d}) ASSERT_TRUE(reg.insert(e));
  const auto A = a->record.id, B = b->record.id, C = c->record.id, D = d->record.id;

  EXPECT_EQ(ids(reg.list({})), (std::set{A, B, C, D}));
  EXPECT_EQ(ids(reg.list({.device = DeviceId::host(0)})), (std::set{A, C}));
  EXPECT_EQ(ids(reg.list({.memory_type = MemoryType::RAM})), (std::set{B, D}));
  EXPECT_EQ(ids(reg.list({.owner = "alice"})), (std::set{A, B}));
  EXPECT_EQ(ids(reg.list({.owner = "carol"})), std::set<AllocationId>{});
  EXPECT_EQ(ids(reg.list({.status = MemoryAllocationStatus::Moving})), (std::set{D}));
  EXPECT_EQ(ids(reg.list({.tag = "kv"})), (std::set{A, B}));
  EXPECT_EQ(ids(reg.list({.below_priority = MemoryPriority::Normal})), (std::set{A}));
  EXPECT_EQ(ids(reg.list({.below_priority = MemoryPriority::Low})), std::set<AllocationId>{});
  EXPECT_EQ(ids(reg.list({.memory_type = MemoryType::RAM, .owner = "bob"})), (std::set{D}));
  EXPECT_EQ(ids(reg.list({.owner = "alice", .tag = "weights"})), (std::set{B}));

  auto all = reg.list({});
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].id, D);
  EXPECT_EQ(all[1].id, C);
  EXPECT_EQ(all[2].id, B);
  EXPECT_EQ(all[3].id, A);

  // Equal creation times: ordered by id, the same on every call.
  AllocationRegistry same;
  std::vector<AllocationId> made;
  for (int i = 0; i < 8; ++i) {
    auto e = make_entry("x", DeviceId::cpu(), MemoryType::RAM, {}, MemoryPriority::Normal, t0);
    made.push_back(e->record.id);
    ASSERT_TRUE(same.insert(e));
  }
  auto listed = same.list({});
  ASSERT_EQ(listed.size(), 8u);
  for (std::size_t i = 1; i < listed.size(); ++i) EXPECT_LT(listed[i - 1].id, listed[i].id);
}

TEST(AllocationRegistry, TouchForEachTakeAll) {
  AllocationRegistry reg;
  const auto old = Clock::now() - std::chrono::hours(1);
  auto e = make_entry("t", DeviceId::cpu(), MemoryType::RAM, {}, MemoryPriority::Normal, old);
  ASSERT_TRUE(reg.insert(e));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(reg.insert(make_entry("t", DeviceId::cpu(), MemoryType::RAM)));
  reg.touch(*e);
  auto got = reg.get(e->record.id);
  ASSERT_TRUE(got);
  EXPECT_GT(got->last_used_at, old);
  EXPECT_EQ(got->created_at, old);

  int visited = 0;
  reg.for_each([&](const AllocationRegistry::Entry&) { return ++visited < 2; });
  EXPECT_EQ(visited, 2) << "for_each went on after false";
  visited = 0;
  reg.for_each([&](const AllocationRegistry::Entry&) { return ++visited, true; });
  EXPECT_EQ(visited, 5);

  auto taken = reg.take_all();
  EXPECT_EQ(taken.size(), 5u);
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_TRUE(reg.list({}).empty());
}

// Threads insert, look up and unlink their own entries while another lists
// and walks: every entry is found by its inserter until it unlinks it, never
// after, and the registry ends empty.
TEST(AllocationRegistry, ConcurrentInsertUnlink) {
  AllocationRegistry reg;
  constexpr int kThreads = 4, kRounds = 2000;
  std::atomic<bool> done{false};
  std::atomic<int> problems{0};
  std::thread lister([&] {
    while (!done.load()) {
      for (const auto& r : reg.list({.owner = "w1"}))
        if (r.owner != "w1") ++problems;
      reg.for_each([&](const AllocationRegistry::Entry& e) {
        if (e.record.size_bytes != 4096) ++problems;
        return true;
      });
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t)
    workers.emplace_back([&, t] {
      const std::string owner = "w" + std::to_string(t);
      std::vector<AllocationRegistry::EntryPtr> mine;
      for (int i = 0; i < kRounds; ++i) {
        auto e = make_entry(owner, DeviceId::cpu(), MemoryType::RAM);
        if (!reg.insert(e)) ++problems;
        mine.push_back(e);
        if (i % 3 == 2) {
          // Unlink two of the three just made, keep one for the end.
          for (int k = 0; k < 2; ++k) {
            auto victim = mine.back();
            mine.pop_back();
            auto got = reg.get(victim->record.id);
            if (!got || got->owner != owner) ++problems;
            auto u = reg.unlink(victim->record.id);
            if (!u || u->get() != victim.get()) ++problems;
            if (reg.find(victim->record.id)) ++problems;
          }
        }
      }
      for (const auto& e : mine)
        if (!reg.unlink(e->record.id)) ++problems;
    });
  for (auto& w : workers) w.join();
  done.store(true);
  lister.join();
  EXPECT_EQ(problems.load(), 0);
  EXPECT_EQ(reg.size(), 0u);
}

}  // namespace
}  // namespace memd
