// Sessions through MemoryService on a clock the test moves: a lapsed lease
// frees what was allocated in it (and nothing else), so does closing; a
// heartbeat keeps it; another owner's session is refused even to the admin;
// a dead session is reported on the next request naming it. With the real
// reaper thread (label `concurrency`) a lapse is released without any
// request, and allocations racing their session's end leak nothing.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using std::chrono::seconds;

class SessionsTest : public ::testing::Test {
 protected:
  void make(std::chrono::milliseconds sweep) {
    ServiceOptions options;
    options.backends.host_device_sizes = {64 * kMiB};
    options.backends.enable_cuda = false;
    options.session_sweep_interval = sweep;
    options.clock = [this] { return SteadyTime{std::chrono::seconds(now_.load())}; };
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
  }
  void SetUp() override { make(std::chrono::milliseconds(0)); }

  Result<AllocationRecord> allocate(const Caller& who, std::uint64_t bytes = 4096) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = DeviceId::host(0);
    return service_->allocate(who, r);
  }
  Caller in(const Caller& who, const SessionId& id) {
    Caller c = who;
    c.session = id;
    return c;
  }
  bool exists(const AllocationId& id) { return static_cast<bool>(service_->allocation(admin_, id)); }
  void advance(std::int64_t s) { now_ += s; }

  std::atomic<std::int64_t> now_{10'000};
  std::unique_ptr<MemoryService> service_;
  const Caller alice_ = Caller::as("alice");
  const Caller mallory_ = Caller::as("mallory");
  const Caller admin_ = Caller{"ops", true, std::nullopt};
};

TEST_F(SessionsTest, ALapsedSessionReleasesItsAllocationsAndOnlyThose) {
  auto session = service_->open_session(alice_, seconds(10));
  ASSERT_TRUE(session) << session.error().message;
  EXPECT_EQ(session->owner, "alice");
  EXPECT_EQ(session->ttl, seconds(10));
  const Caller worker = in(alice_, session->id);
  auto a = allocate(worker), b = allocate(worker, kMiB);
  auto outside = allocate(alice_);
  ASSERT_TRUE(a && b && outside);
  EXPECT_EQ(service_->sessions(alice_)->at(0).allocated_bytes, 4096 + kMiB);

  advance(9);
  EXPECT_EQ(service_->sweep_sessions(), 0u) << "lapsed a second early";
  EXPECT_TRUE(exists(a->id));
  advance(1);
  EXPECT_EQ(service_->sweep_sessions(), 1u);
  EXPECT_FALSE(exists(a->id));
  EXPECT_FALSE(exists(b->id));
  EXPECT_TRUE(exists(outside->id)) << "an allocation made outside the session was released";
  EXPECT_EQ(service_->usage().by_owner["alice"].allocations, 1u);
  // The worker's next request says why.
  auto late = allocate(worker);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, ErrorCode::not_found);
  EXPECT_NE(late.error().message.find("lapsed"), std::string::npos) << late.error().message;
  EXPECT_TRUE(service_->sessions(alice_)->empty());
  ASSERT_TRUE(service_->validate());
}

TEST_F(SessionsTest, ALapsedSessionIsEndedByTheFirstRequestNamingIt) {
  auto session = *service_->open_session(alice_, seconds(5));
  auto a = allocate(in(alice_, session.id));
  ASSERT_TRUE(a);
  advance(5);  // no sweep ran
  auto status = service_->allocations(in(alice_, session.id), {});
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code, ErrorCode::not_found);
  EXPECT_FALSE(exists(a->id)) << "told the lease lapsed, but its memory is still held";
}

TEST_F(SessionsTest, HeartbeatsKeepASessionAlive) {
  auto session = *service_->open_session(alice_, seconds(10));
  auto a = allocate(in(alice_, session.id));
  for (int i = 0; i < 5; ++i) {
    advance(8);
    auto renewed = service_->heartbeat_session(alice_, session.id);
    ASSERT_TRUE(renewed) << renewed.error().message;
    EXPECT_EQ(service_->sweep_sessions(), 0u);
  }
  EXPECT_TRUE(exists(a->id)) << "40 s into a 10 s lease renewed every 8 s";
  advance(10);
  EXPECT_EQ(service_->sweep_sessions(), 1u);
  EXPECT_FALSE(exists(a->id));
  // Too late to renew.
  auto late = service_->heartbeat_session(alice_, session.id);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, ErrorCode::not_found);
}

TEST_F(SessionsTest, CloseReleasesWhatIsStillInTheSession) {
  auto session = *service_->open_session(alice_, std::nullopt);
  EXPECT_EQ(session.ttl, kDefaultSessionTtl);
  const Caller worker = in(alice_, session.id);
  auto kept = allocate(worker), freed_first = allocate(worker);
  ASSERT_TRUE(service_->deallocate(worker, freed_first->id));
  EXPECT_EQ(service_->sessions(alice_)->at(0).allocations, 1u) << "a freed allocation stayed in its session";
  auto closed = service_->close_session(alice_, session.id);
  ASSERT_TRUE(closed) << closed.error().message;
  ASSERT_EQ(closed->released.size(), 1u);
  EXPECT_EQ(closed->released[0].id, kept->id);
  EXPECT_EQ(closed->released_bytes, 4096u);
  EXPECT_FALSE(exists(kept->id));
  auto again = service_->close_session(alice_, session.id);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message.find("was closed"), std::string::npos) << again.error().message;
  ASSERT_TRUE(service_->validate());
}

TEST_F(SessionsTest, AnotherOwnersSessionIsRefused) {
  auto session = *service_->open_session(alice_, seconds(60));
  auto stolen = allocate(in(mallory_, session.id));
  ASSERT_FALSE(stolen);
  EXPECT_EQ(stolen.error().code, ErrorCode::permission_denied);
  // Even the admin does not work in someone else's session...
  EXPECT_EQ(allocate(in(admin_, session.id)).error().code, ErrorCode::permission_denied);
  // ...nor may mallory renew or close it; the admin may.
  EXPECT_EQ(service_->heartbeat_session(mallory_, session.id).error().code, ErrorCode::permission_denied);
  EXPECT_EQ(service_->close_session(mallory_, session.id).error().code, ErrorCode::permission_denied);
  EXPECT_TRUE(service_->sessions(mallory_)->empty());
  EXPECT_EQ(service_->sessions(admin_)->size(), 1u);
  EXPECT_TRUE(service_->heartbeat_session(admin_, session.id));
  EXPECT_TRUE(service_->close_session(admin_, session.id));
}

TEST_F(SessionsTest, UnknownSessionsAndBadTtlsAreClearErrors) {
  auto unknown = allocate(in(alice_, SessionId::generate()));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);
  EXPECT_NE(unknown.error().message.find("never opened"), std::string::npos) << unknown.error().message;
  EXPECT_EQ(service_->open_session(alice_, seconds(0)).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(service_->open_session(Caller::as("bad\u202eowner"), seconds(5)).error().code,
            ErrorCode::invalid_argument);
}

TEST_F(SessionsTest, AHostsExitEndsItsSessions) {
  auto session = *service_->open_session(Caller::host("stdio-1"), seconds(60));
  auto a = allocate(in(Caller::host("stdio-1"), session.id));
  ASSERT_TRUE(a);
  EXPECT_EQ(service_->release_owner("stdio-1").size(), 1u);
  EXPECT_TRUE(service_->sessions(admin_)->empty());
  ASSERT_TRUE(service_->validate());
}

// The daemon's reaper thread, on the fake clock: moving time past a lease is
// enough for its allocations to go, with no request at all.
TEST_F(SessionsTest, TheReaperReleasesALapsedLeaseOnItsOwn) {
  make(std::chrono::milliseconds(5));
  auto session = *service_->open_session(alice_, seconds(3));
  auto a = allocate(in(alice_, session.id));
  ASSERT_TRUE(a);
  advance(3);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (exists(a->id) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_FALSE(exists(a->id)) << "the reaper did not release a lapsed lease within 5 s";
  ASSERT_TRUE(service_->validate());
}

// Workers allocate in sessions while they are closed and lapse: whatever
// each allocation's fate, none is left behind once every session has ended.
TEST_F(SessionsTest, AllocationsRacingTheirSessionsEndLeakNothing) {
  make(std::chrono::milliseconds(1));
  std::vector<SessionId> sessions;
  for (int i = 0; i < 6; ++i) sessions.push_back(service_->open_session(alice_, seconds(30))->id);
  std::atomic<bool> stop{false};
  std::atomic<int> made{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t)
    workers.emplace_back([&, t] {
      for (int i = 0; !stop; ++i) {
        const auto& s = sessions[static_cast<std::size_t>((t + i) % sessions.size())];
        if (auto r = allocate(in(alice_, s), 4096 * static_cast<std::uint64_t>(1 + i % 4))) ++made;
        if (i % 7 == 0) (void)service_->heartbeat_session(alice_, s);
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (std::size_t k = 0; k < sessions.size(); k += 2) (void)service_->close_session(alice_, sessions[k]);
  advance(31);  // the rest lapse; the reaper races the workers
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop = true;
  for (auto& w : workers) w.join();
  service_->sweep_sessions();
  EXPECT_GT(made.load(), 0);
  EXPECT_FALSE(service_->usage().by_owner.contains("alice")) << "allocations outlived their sessions";
  EXPECT_TRUE(service_->sessions(admin_)->empty());
  ASSERT_TRUE(service_->validate());
}

}  // namespace
}  // namespace memd
