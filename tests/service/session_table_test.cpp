// SessionTable alone, on a clock the test moves: leases lapse exactly at
// their expiry, renewals extend them and never revive a lapsed one, every
// attached allocation comes back exactly once when its session ends, and
// threads racing attach/detach/renew/close/lapse leave the table consistent.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "service/session_table.hpp"

namespace memd {
namespace {

using std::chrono::seconds;

const SteadyTime t0{std::chrono::hours(1)};

TEST(SessionTable, OpenFindRenewClose) {
  SessionTable table;
  auto s = table.open("alice", seconds(10), t0);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->owner, "alice");
  EXPECT_EQ(s->expires_at, t0 + seconds(10));
  EXPECT_EQ(table.find(s->id)->owner, "alice");

  auto renewed = table.renew(s->id, t0 + seconds(5));
  ASSERT_TRUE(renewed);
  EXPECT_EQ(renewed->expires_at, t0 + seconds(15));

  const auto a = AllocationId::generate(), b = AllocationId::generate();
  ASSERT_TRUE(table.attach(s->id, a, 100, t0 + seconds(6)));
  ASSERT_TRUE(table.attach(s->id, b, 50, t0 + seconds(6)));
  EXPECT_EQ(table.find(s->id)->allocations, 2u);
  EXPECT_EQ(table.find(s->id)->allocated_bytes, 150u);
  ASSERT_TRUE(table.validate());

  auto closed = table.close(s->id);
  ASSERT_TRUE(closed);
  EXPECT_EQ(std::set(closed->allocations.begin(), closed->allocations.end()), (std::set{a, b}));
  auto gone = table.find(s->id);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ErrorCode::not_found);
  EXPECT_NE(gone.error().message.find("was closed"), std::string::npos) << gone.error().message;
  EXPECT_EQ(table.close(s->id).error().code, ErrorCode::not_found);
  EXPECT_EQ(table.size(), 0u);
  ASSERT_TRUE(table.validate());
}

TEST(SessionTable, TtlIsBounded) {
  SessionTable table;
  EXPECT_EQ(table.open("a", seconds(0), t0).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(table.open("a", kMaxSessionTtl + seconds(1), t0).error().code, ErrorCode::invalid_argument);
  EXPECT_TRUE(table.open("a", kMinSessionTtl, t0));
  EXPECT_TRUE(table.open("a", kMaxSessionTtl, t0));
}

TEST(SessionTable, LapseAtExpiryAndNoRevival) {
  SessionTable table;
  auto short_lease = *table.open("alice", seconds(5), t0);
  auto long_lease = *table.open("bob", seconds(10), t0);
  const auto a = AllocationId::generate();
  ASSERT_TRUE(table.attach(short_lease.id, a, 4096, t0));

  EXPECT_TRUE(table.take_lapsed(t0 + seconds(5) - std::chrono::nanoseconds(1)).empty());
  // Lapsed but not swept: it can neither be renewed nor take allocations.
  auto renew = table.renew(short_lease.id, t0 + seconds(5));
  ASSERT_FALSE(renew);
  EXPECT_NE(renew.error().message.find("lapsed"), std::string::npos) << renew.error().message;
  EXPECT_EQ(table.attach(short_lease.id, AllocationId::generate(), 1, t0 + seconds(5)).error().code,
            ErrorCode::not_found);

  auto lapsed = table.take_lapsed(t0 + seconds(5));
  ASSERT_EQ(lapsed.size(), 1u);
  EXPECT_EQ(lapsed[0].session.id, short_lease.id);
  EXPECT_EQ(lapsed[0].allocations, std::vector{a});
  EXPECT_TRUE(table.find(long_lease.id));
  auto gone = table.find(short_lease.id);
  ASSERT_FALSE(gone);
  EXPECT_NE(gone.error().message.find("lapsed"), std::string::npos) << gone.error().message;
  EXPECT_TRUE(table.take_lapsed(t0 + seconds(6)).empty()) << "a session lapsed twice";
  ASSERT_TRUE(table.validate());
}

TEST(SessionTable, DetachedAllocationsLeaveTheirSession) {
  SessionTable table;
  auto s = *table.open("alice", seconds(60), t0);
  const auto a = AllocationId::generate(), b = AllocationId::generate();
  ASSERT_TRUE(table.attach(s.id, a, 10, t0));
  ASSERT_TRUE(table.attach(s.id, b, 20, t0));
  table.detach(a);
  table.detach(a);                          // twice: nothing more
  table.detach(AllocationId::generate());   // never attached: nothing
  EXPECT_EQ(table.find(s.id)->allocations, 1u);
  EXPECT_EQ(table.find(s.id)->allocated_bytes, 20u);
  ASSERT_TRUE(table.validate());
  EXPECT_EQ(table.close(s.id)->allocations, std::vector{b});
}

TEST(SessionTable, SessionsAreBoundedPerOwnerAndInAll) {
  SessionTable table(SessionLimits{.per_owner = 2, .total = 3, .remembered = 2});
  ASSERT_TRUE(table.open("alice", seconds(60), t0));
  auto second = table.open("alice", seconds(60), t0);
  ASSERT_TRUE(second);
  auto third = table.open("alice", seconds(60), t0);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, ErrorCode::quota_exceeded);
  ASSERT_TRUE(table.open("bob", seconds(60), t0));
  EXPECT_EQ(table.open("carol", seconds(60), t0).error().code, ErrorCode::quota_exceeded);
  // Closing one frees its place.
  ASSERT_TRUE(table.close(second->id));
  EXPECT_TRUE(table.open("alice", seconds(60), t0));
  ASSERT_TRUE(table.validate());
}

TEST(SessionTable, TakeOwnerEndsOnlyThatOwnersSessions) {
  SessionTable table;
  auto a1 = *table.open("host-a", seconds(60), t0);
  auto a2 = *table.open("host-a", seconds(60), t0);
  auto b = *table.open("host-b", seconds(60), t0);
  const auto ended = table.take_owner("host-a");
  std::set<SessionId> ids;
  for (const auto& e : ended) ids.insert(e.session.id);
  EXPECT_EQ(ids, (std::set{a1.id, a2.id}));
  EXPECT_TRUE(table.find(b.id));
  EXPECT_EQ(table.list(std::nullopt).size(), 1u);
}

TEST(SessionTable, ListsByOwnerSoonestFirstAndForgetsOldEndings) {
  SessionTable table(SessionLimits{.remembered = 1});
  auto late = *table.open("alice", seconds(30), t0);
  auto soon = *table.open("alice", seconds(10), t0);
  ASSERT_TRUE(table.open("bob", seconds(20), t0));
  auto mine = table.list(std::string("alice"));
  ASSERT_EQ(mine.size(), 2u);
  EXPECT_EQ(mine[0].id, soon.id);
  EXPECT_EQ(mine[1].id, late.id);
  EXPECT_EQ(table.list(std::nullopt).size(), 3u);
  ASSERT_TRUE(table.close(late.id));
  ASSERT_TRUE(table.close(soon.id));  // remembered: 1, so `late` is forgotten
  EXPECT_NE(table.find(soon.id).error().message.find("was closed"), std::string::npos);
  EXPECT_NE(table.find(late.id).error().message.find("never opened"), std::string::npos);
  ASSERT_TRUE(table.validate());
}

// Threads attach and detach allocations and renew while another closes and
// sweeps: every allocation attached is afterwards either detached by its
// thread or handed out by exactly one ended session, never both, never lost.
TEST(SessionTable, RacingEndsHandEachAllocationOutOnce) {
  SessionTable table;
  std::vector<SessionId> sessions;
  for (int i = 0; i < 8; ++i) sessions.push_back(table.open("w" + std::to_string(i % 3), seconds(60), t0)->id);
  constexpr int kThreads = 4, kPerThread = 2000;
  std::vector<std::vector<AllocationId>> attached(kThreads), detached(kThreads);
  std::atomic<bool> go{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t)
    workers.emplace_back([&, t] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < kPerThread; ++i) {
        const auto id = AllocationId::generate();
        const auto& s = sessions[static_cast<std::size_t>((t + i) % sessions.size())];
        if (table.attach(s, id, 1, t0 + seconds(1))) {
          attached[t].push_back(id);
          if (i % 3 == 0) {
            table.detach(id);
            detached[t].push_back(id);
          }
        }
        if (i % 50 == 0) (void)table.renew(s, t0 + seconds(1));
      }
    });
  std::vector<EndedSession> ended;
  std::thread ender([&] {
    while (!go) std::this_thread::yield();
    for (std::size_t k = 0; k < sessions.size(); ++k) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      if (k % 2 == 0) {
        if (auto e = table.close(sessions[k])) ended.push_back(std::move(*e));
      } else {
        for (auto& e : table.take_owner("w" + std::to_string(k % 3))) ended.push_back(std::move(e));
      }
      ASSERT_TRUE(table.validate());
    }
  });
  go = true;
  for (auto& w : workers) w.join();
  ender.join();
  for (auto& e : table.take_lapsed(t0 + seconds(3600))) ended.push_back(std::move(e));

  std::multiset<AllocationId> handed_out;
  for (const auto& e : ended) handed_out.insert(e.allocations.begin(), e.allocations.end());
  std::set<AllocationId> gone_by_detach;
  for (const auto& d : detached) gone_by_detach.insert(d.begin(), d.end());
  std::size_t total = 0;
  for (const auto& list : attached)
    for (const auto& id : list) {
      ++total;
      const auto n = handed_out.count(id);
      if (gone_by_detach.contains(id)) EXPECT_LE(n, 1u) << "handed out twice";
      else EXPECT_EQ(n, 1u) << "an attached allocation was lost or handed out twice";
    }
  EXPECT_GT(total, 0u);
  EXPECT_EQ(table.size(), 0u);
  ASSERT_TRUE(table.validate());
}

}  // namespace
}  // namespace memd
