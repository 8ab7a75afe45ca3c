// ExportTable alone: who an export is for and who may import it (the admin
// too must be named), the bounds, release and its memory, imports held by
// connections until they close, frees deferred while importers remain, and
// threads racing import, close and free leaving every freed allocation
// reported exactly once.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "service/export_table.hpp"

namespace memd {
namespace {

using Owners = std::vector<std::string>;

const std::chrono::system_clock::time_point t0{std::chrono::hours(500'000)};

template <typename T>
ErrorCode code_of(const Result<T>& r) {
  return r ? ErrorCode::internal : r.error().code;
}

bool mentions(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

TEST(ExportTable, AddFindListAndRelease) {
  ExportTable table;
  const auto a = AllocationId::generate();
  auto e = table.add(a, "alice", {"carol", "bob", "carol"}, t0);
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_FALSE(e->id.guid().is_nil());
  EXPECT_EQ(e->allocation, a);
  EXPECT_EQ(e->owner, "alice");
  EXPECT_EQ(e->for_owners, (Owners{"bob", "carol"}));  // sorted, duplicate dropped
  EXPECT_EQ(e->created_at, t0);
  EXPECT_FALSE(e->released);
  EXPECT_EQ(e->importers, 0u);
  ASSERT_TRUE(table.validate());

  EXPECT_EQ(table.find(e->id)->for_owners, e->for_owners);
  EXPECT_TRUE(table.held(a));
  EXPECT_EQ(table.importers(a), 0u);
  ASSERT_EQ(table.exports_of(a).size(), 1u);
  EXPECT_EQ(table.list(std::nullopt).size(), 1u);
  EXPECT_EQ(table.list("alice").size(), 1u);
  EXPECT_TRUE(table.list("bob").empty());  // list() is by exporter
  EXPECT_EQ(table.counts(), (ExportCounts{.exports = 1, .held_allocations = 1}));

  auto second = table.add(a, "alice", {"dave"}, t0 + std::chrono::seconds(1));
  ASSERT_TRUE(second);
  auto of_a = table.exports_of(a);
  ASSERT_EQ(of_a.size(), 2u);
  EXPECT_EQ(of_a[0].id, e->id);  // oldest first
  EXPECT_EQ(of_a[1].id, second->id);

  auto released = table.release(e->id);
  ASSERT_TRUE(released) << released.error().message;
  EXPECT_TRUE(released->released);
  EXPECT_EQ(code_of(table.find(e->id)), ErrorCode::not_found);
  EXPECT_EQ(table.exports_of(a).size(), 1u);
  ASSERT_TRUE(table.release(second->id));
  // Nothing holds the allocation any more: the table forgets it.
  EXPECT_FALSE(table.held(a));
  EXPECT_EQ(table.counts(), ExportCounts{});
  ASSERT_TRUE(table.validate());
}

TEST(ExportTable, ForOwnersAreCheckedByTheOwnerRule) {
  ExportTable table;
  const auto a = AllocationId::generate();
  auto none = table.add(a, "alice", {});
  EXPECT_EQ(code_of(none), ErrorCode::invalid_argument);
  EXPECT_TRUE(mentions(none.error().message, "at least one")) << none.error().message;

  Owners many;
  for (int i = 0; i < 65; ++i) many.push_back("w" + std::to_string(i));
  auto too_many = table.add(a, "alice", many);
  EXPECT_EQ(code_of(too_many), ErrorCode::invalid_argument);
  EXPECT_TRUE(mentions(too_many.error().message, "64")) << too_many.error().message;
  many.pop_back();
  EXPECT_TRUE(table.add(a, "alice", many));
  // 64 names of one owner are one owner.
  auto same = table.add(a, "alice", Owners(64, "bob"));
  ASSERT_TRUE(same);
  EXPECT_EQ(same->for_owners, Owners{"bob"});

  for (const std::string& bad : {std::string(), std::string("a\nb"), std::string(129, 'x'), std::string("\xff"),
                                std::string("ev\xe2\x80\xaeil")}) {
    auto r = table.add(a, "alice", {"bob", bad});
    ASSERT_EQ(code_of(r), ErrorCode::invalid_argument) << bad;
    EXPECT_TRUE(mentions(r.error().message, "forOwners[1]")) << r.error().message;
  }
  EXPECT_EQ(code_of(table.add(a, "al\nice", {"bob"})), ErrorCode::invalid_argument);
  // The allocation keeps the owner it was first exported under.
  EXPECT_EQ(code_of(table.add(a, "mallory", {"bob"})), ErrorCode::internal);
  ASSERT_TRUE(table.validate());
}

TEST(ExportTable, LiveExportsAreBoundedPerAllocationAndInAll) {
  ExportTable table;
  const auto a = AllocationId::generate();
  std::vector<ExportId> ids;
  for (int i = 0; i < 16; ++i) {
    auto e = table.add(a, "alice", {"bob"});
    ASSERT_TRUE(e) << i;
    ids.push_back(e->id);
  }
  auto over = table.add(a, "alice", {"bob"});
  ASSERT_EQ(code_of(over), ErrorCode::quota_exceeded);
  EXPECT_TRUE(mentions(over.error().message, "16 live exports")) << over.error().message;
  // Another allocation is not affected; releasing one makes room.
  EXPECT_TRUE(table.add(AllocationId::generate(), "alice", {"bob"}));
  ASSERT_TRUE(table.release(ids[3]));
  EXPECT_TRUE(table.add(a, "alice", {"bob"}));

  ExportTable small(ExportLimits{.per_allocation = 16, .total = 3});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(small.add(AllocationId::generate(), "alice", {"bob"}));
  auto full = small.add(AllocationId::generate(), "alice", {"bob"});
  ASSERT_EQ(code_of(full), ErrorCode::quota_exceeded);
  EXPECT_TRUE(mentions(full.error().message, "3 live exports")) << full.error().message;
  ASSERT_TRUE(table.validate());
  ASSERT_TRUE(small.validate());
  EXPECT_EQ(ExportLimits{}.total, 65'536u);
}

TEST(ExportTable, ASecondReleaseSaysItWasReleasedAndUnknownIdsNeverExisted) {
  ExportTable table(ExportLimits{.remembered = 2});
  const auto a = AllocationId::generate();
  auto e = *table.add(a, "alice", {"bob"});
  ASSERT_TRUE(table.release(e.id));
  auto again = table.release(e.id);
  ASSERT_EQ(code_of(again), ErrorCode::not_found);
  EXPECT_TRUE(mentions(again.error().message, "already released")) << again.error().message;

  auto unknown = table.release(ExportId::generate());
  ASSERT_EQ(code_of(unknown), ErrorCode::not_found);
  EXPECT_TRUE(mentions(unknown.error().message, "never made")) << unknown.error().message;
  EXPECT_EQ(code_of(table.release(ExportId{})), ErrorCode::not_found);
  EXPECT_EQ(code_of(table.import(ExportId::generate(), "bob", false, 1)), ErrorCode::not_found);

  // The memory of released ids is bounded: the oldest is forgotten first.
  ASSERT_TRUE(table.release(table.add(a, "alice", {"bob"})->id));
  ASSERT_TRUE(table.release(table.add(a, "alice", {"bob"})->id));
  auto forgotten = table.release(e.id);
  ASSERT_EQ(code_of(forgotten), ErrorCode::not_found);
  EXPECT_TRUE(mentions(forgotten.error().message, "long ago")) << forgotten.error().message;
  ASSERT_TRUE(table.validate());

  EXPECT_TRUE(ExportId::parse(e.id.to_string()));
  auto bad = ExportId::parse("not-a-guid\n");
  ASSERT_FALSE(bad);
  EXPECT_FALSE(mentions(bad.error().message, "not-a-guid"));  // never echoed
}

TEST(ExportTable, OnlyTheNamedOwnersMayImportTheAdminIncluded) {
  ExportTable table;
  const auto a = AllocationId::generate();
  auto e = *table.add(a, "alice", {"bob", "carol"});

  auto bob = table.import(e.id, "bob", false, 7);
  ASSERT_TRUE(bob) << bob.error().message;
  EXPECT_EQ(bob->export_id, e.id);
  EXPECT_EQ(bob->allocation, a);
  EXPECT_EQ(bob->owner, "alice");
  EXPECT_EQ(bob->importer, "bob");
  EXPECT_EQ(bob->connection, 7u);
  EXPECT_EQ(bob->imports, 1u);

  auto mallory = table.import(e.id, "mallory", false, 8);
  ASSERT_EQ(code_of(mallory), ErrorCode::permission_denied);
  EXPECT_TRUE(mentions(mallory.error().message, "'mallory'")) << mallory.error().message;
  // The refusal does not tell an outsider who shares the memory.
  EXPECT_FALSE(mentions(mallory.error().message, "carol")) << mallory.error().message;
  EXPECT_FALSE(mentions(mallory.error().message, "bob")) << mallory.error().message;

  auto admin = table.import(e.id, "ops", true, 9);
  ASSERT_EQ(code_of(admin), ErrorCode::permission_denied);
  EXPECT_TRUE(mentions(admin.error().message, "admin")) << admin.error().message;
  // Nor may the exporter, unless it named itself.
  EXPECT_EQ(code_of(table.import(e.id, "alice", false, 10)), ErrorCode::permission_denied);
  auto self = *table.add(a, "alice", {"alice", "ops"});
  EXPECT_TRUE(table.import(self.id, "alice", false, 10));
  EXPECT_TRUE(table.import(self.id, "ops", true, 9));
  // Names are compared exactly.
  EXPECT_EQ(code_of(table.import(e.id, "Bob", false, 11)), ErrorCode::permission_denied);
  EXPECT_EQ(code_of(table.import(e.id, "bob ", false, 11)), ErrorCode::permission_denied);

  EXPECT_EQ(table.importers(a), 3u);  // connections 7, 9, 10
  EXPECT_EQ(table.find(e.id)->importers, 1u);
  EXPECT_EQ(table.find(self.id)->importers, 2u);
  EXPECT_EQ(table.counts().imports, 3u);
  ASSERT_TRUE(table.validate());
}

TEST(ExportTable, AReleasedExportTakesNoNewImportsButKeepsItsImporters) {
  ExportTable table;
  const auto a = AllocationId::generate();
  auto e = *table.add(a, "alice", {"bob"});
  ASSERT_TRUE(table.import(e.id, "bob", false, 1));
  auto released = table.release(e.id);
  ASSERT_TRUE(released);
  EXPECT_EQ(released->importers, 1u);

  auto late = table.import(e.id, "bob", false, 2);
  ASSERT_EQ(code_of(late), ErrorCode::not_found);
  EXPECT_TRUE(mentions(late.error().message, "released")) << late.error().message;
  EXPECT_TRUE(table.held(a));  // connection 1 still maps it
  EXPECT_EQ(table.importers(a), 1u);
  ASSERT_TRUE(table.validate());

  // Not being freed: the last close frees nothing, and the table forgets it.
  EXPECT_TRUE(table.connection_closed(1).empty());
  EXPECT_FALSE(table.held(a));
  EXPECT_EQ(table.counts(), ExportCounts{});
  ASSERT_TRUE(table.validate());
}

TEST(ExportTable, AFreeWaitsForTheLastImporterToClose) {
  ExportTable table;
  const auto a = AllocationId::generate(), b = AllocationId::generate();
  auto ea = *table.add(a, "alice", {"bob"});
  auto eb = *table.add(b, "alice", {"bob"});
  ASSERT_TRUE(table.import(ea.id, "bob", false, 1));
  ASSERT_TRUE(table.import(ea.id, "bob", false, 2));
  ASSERT_TRUE(table.import(eb.id, "bob", false, 2));

  auto released = table.release_allocation(a);
  ASSERT_EQ(released.size(), 1u);
  EXPECT_EQ(released[0].id, ea.id);
  EXPECT_TRUE(released[0].released);
  EXPECT_TRUE(table.release_allocation(a).empty());
  EXPECT_TRUE(table.mark_freeing(a));  // importers remain: defer the free
  EXPECT_EQ(table.counts().freeing, 1u);
  auto again = table.add(a, "alice", {"bob"});
  EXPECT_EQ(code_of(again), ErrorCode::conflict);
  auto late = table.import(ea.id, "bob", false, 3);
  ASSERT_EQ(code_of(late), ErrorCode::not_found);
  EXPECT_TRUE(mentions(late.error().message, "when its allocation was freed")) << late.error().message;
  ASSERT_TRUE(table.validate());

  EXPECT_TRUE(table.connection_closed(1).empty());  // connection 2 still holds a
  EXPECT_TRUE(table.held(a));
  EXPECT_EQ(table.connection_closed(2), std::vector{a});  // b was not freed: not reported
  EXPECT_FALSE(table.held(a));
  EXPECT_TRUE(table.held(b));  // its export is live
  EXPECT_EQ(table.importers(b), 0u);
  EXPECT_TRUE(table.connection_closed(2).empty());  // a second close is nothing
  EXPECT_FALSE(table.mark_freeing(a));
  EXPECT_EQ(table.counts(), (ExportCounts{.exports = 1, .held_allocations = 1}));
  ASSERT_TRUE(table.validate());
}

TEST(ExportTable, FreeingAnUnimportedAllocationIsImmediateAndEndsItsExports) {
  ExportTable table;
  const auto a = AllocationId::generate();
  EXPECT_FALSE(table.mark_freeing(a));  // never exported
  auto e = *table.add(a, "alice", {"bob"});
  // mark_freeing without release_allocation first still ends the export.
  EXPECT_FALSE(table.mark_freeing(a));
  EXPECT_EQ(code_of(table.import(e.id, "bob", false, 1)), ErrorCode::not_found);
  EXPECT_EQ(code_of(table.release(e.id)), ErrorCode::not_found);
  EXPECT_FALSE(table.held(a));
  EXPECT_EQ(table.counts(), ExportCounts{});
  ASSERT_TRUE(table.validate());
}

TEST(ExportTable, OneConnectionMayHoldSeveralImportsOfOneAllocation) {
  ExportTable table;
  const auto a = AllocationId::generate();
  auto first = *table.add(a, "alice", {"bob"});
  auto second = *table.add(a, "alice", {"bob", "carol"});
  EXPECT_EQ(table.import(first.id, "bob", false, 5)->imports, 1u);
  EXPECT_EQ(table.import(first.id, "bob", false, 5)->imports, 2u);
  EXPECT_EQ(table.import(second.id, "bob", false, 5)->imports, 3u);
  ASSERT_TRUE(table.import(second.id, "carol", false, 6));
  EXPECT_EQ(table.importers(a), 2u);  // connections, not imports
  EXPECT_EQ(table.find(first.id)->importers, 1u);
  EXPECT_EQ(table.find(second.id)->importers, 2u);
  EXPECT_EQ(table.counts(),
            (ExportCounts{.exports = 2, .imports = 4, .connections = 2, .held_allocations = 1}));
  ASSERT_TRUE(table.validate());

  ASSERT_EQ(table.release_allocation(a).size(), 2u);
  EXPECT_TRUE(table.mark_freeing(a));
  EXPECT_TRUE(table.connection_closed(6).empty());
  EXPECT_EQ(table.importers(a), 1u);
  EXPECT_EQ(table.connection_closed(5), std::vector{a});  // all three at once
  EXPECT_EQ(table.counts(), ExportCounts{});
  EXPECT_TRUE(table.connection_closed(12345).empty());  // never imported
  ASSERT_TRUE(table.validate());
}

// Threads race imports and closes on their own connections while another
// frees the allocations: every allocation must be reported freeable exactly
// once — by mark_freeing() returning false, or by the close that dropped its
// last importer — and the table must end empty.
TEST(ExportTable, ConcurrentImportsClosesAndFreesReportEachFreeOnce) {
  ExportTable table;
  constexpr int kAllocations = 200;
  std::vector<AllocationId> allocations;
  std::vector<ExportId> exports;
  for (int i = 0; i < kAllocations; ++i) {
    allocations.push_back(AllocationId::generate());
    exports.push_back(table.add(allocations.back(), "alice", {"bob"})->id);
  }
  std::mutex mu;
  std::map<AllocationId, int> reported;
  auto report = [&](const std::vector<AllocationId>& freed) {
    std::lock_guard lock(mu);
    for (const auto& a : freed) ++reported[a];
  };

  std::atomic<std::uint64_t> next_connection{1};
  std::atomic<bool> done{false};
  std::atomic<int> imported{0};
  std::vector<std::thread> importers;
  for (int t = 0; t < 6; ++t)
    importers.emplace_back([&, t] {
      std::uint64_t round = 0;
      while (!done.load()) {
        const auto connection = next_connection.fetch_add(1);
        for (int k = 0; k < 5; ++k) {
          const auto& id = exports[(t * 37 + round * 11 + k * 53) % kAllocations];
          if (table.import(id, "bob", false, connection)) imported.fetch_add(1);
          // The same import twice on one connection, sometimes.
          if (k == 2) (void)table.import(id, "bob", false, connection);
        }
        report(table.connection_closed(connection));
        ++round;
      }
    });
  // Holders: connections that stay open until after every free.
  std::vector<std::uint64_t> holders;
  for (int i = 0; i < kAllocations; i += 3) {
    holders.push_back(next_connection.fetch_add(1));
    ASSERT_TRUE(table.import(exports[i], "bob", false, holders.back()));
  }

  while (imported.load() < 1000) std::this_thread::yield();
  for (const auto& a : allocations) {
    table.release_allocation(a);
    if (!table.mark_freeing(a)) report({a});
    std::this_thread::yield();
  }
  done = true;
  for (auto& t : importers) t.join();
  ASSERT_TRUE(table.validate());
  EXPECT_EQ(table.counts().freeing, holders.size());
  for (auto h : holders) report(table.connection_closed(h));

  ASSERT_EQ(reported.size(), allocations.size());
  for (const auto& [a, times] : reported) EXPECT_EQ(times, 1) << a.to_string();
  EXPECT_EQ(table.counts(), ExportCounts{});
  ASSERT_TRUE(table.validate());
}

}  // namespace
}  // namespace memd
