// StreamReuse, built without a DevicePool, over host:0's real streams and
// events. A thin wrapper backend can hold events back (query says "not yet"
// until the test lets them go) or refuse to record, so which batches are
// complete is decided by the test, never by timing.
#include "alloc/stream_reuse.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "backends/forwarding_backend.hpp"
#include "pieces_test_support.hpp"

namespace memd {
namespace {

using namespace pieces_test;

class GatedBackend final : public ForwardingBackend {
 public:
  explicit GatedBackend(std::unique_ptr<Backend> inner) : ForwardingBackend(std::move(inner)) {}

  bool hold_new_events = false;  // events recorded now report incomplete until waited on
  bool refuse_records = false;
  int records = 0, destroys = 0, waits = 0, syncs = 0;

  Result<Event> record(const Stream& s) override {
    ++records;
    if (refuse_records) return fail(ErrorCode::backend_error, "record refused by the test");
    auto e = inner_->record(s);
    if (e && hold_new_events) held_.insert(e->handle);
    return e;
  }
  Result<bool> query(const Event& e) override {
    if (held_.contains(e.handle)) return false;
    return inner_->query(e);
  }
  Result<void> wait(const Event& e) override {
    ++waits;
    held_.erase(e.handle);
    return inner_->wait(e);
  }
  Result<void> destroy_event(const Event& e) override {
    ++destroys;
    held_.erase(e.handle);
    return inner_->destroy_event(e);
  }
  Result<void> synchronize(const Stream& s) override {
    ++syncs;
    return inner_->synchronize(s);
  }

 private:
  std::set<std::uint64_t> held_;
};

struct Env {
  GatedBackend backend{host_backend(64 * kMiB)};
  PoolCounters counters;
  std::vector<std::uint64_t> released;
  std::unique_ptr<StreamReuse> reuse;
  Stream s1, s2;

  explicit Env(std::uint64_t batch) {
    reuse = std::make_unique<StreamReuse>(backend, batch, counters,
                                          [this](std::uint64_t address) { released.push_back(address); },
                                          /*home=*/false);
    s1 = *backend.create_stream(kHost0);
    s2 = *backend.create_stream(kHost0);
  }
  ~Env() {
    reuse->abandon();
    (void)backend.destroy_stream(s1);
    (void)backend.destroy_stream(s2);
  }
  void expect_valid(const char* where) {
    auto v = reuse->validate();
    EXPECT_TRUE(v.has_value()) << where << ": " << (v ? "" : v.error().message);
  }
  std::vector<std::uint64_t> released_sorted() {
    auto r = released;
    std::sort(r.begin(), r.end());
    return r;
  }
};

TEST(StreamReuse, SameStreamExactSizeNewestFirst) {
  Env env(/*batch=*/8);
  auto& r = *env.reuse;
  EXPECT_FALSE(r.any());
  EXPECT_EQ(r.pending_count(), 0u);
  EXPECT_FALSE(r.is_pending(0x1000));
  r.add(env.s1, 0x1000, 256);
  r.add(env.s1, 0x2000, 256);
  r.add(env.s1, 0x3000, 512);
  EXPECT_TRUE(r.any());
  EXPECT_EQ(r.pending_count(), 3u);
  EXPECT_TRUE(r.is_pending(0x1000));
  EXPECT_TRUE(r.is_pending(0x3000));
  EXPECT_FALSE(r.is_pending(0x4000));
  env.expect_valid("three pending");

  EXPECT_EQ(r.reuse(env.s2, 256), std::nullopt) << "never across streams";
  EXPECT_EQ(r.reuse(env.s1, 1024), std::nullopt) << "exact sizes only";
  EXPECT_EQ(r.reuse(env.s1, 257), std::nullopt);
  EXPECT_EQ(r.reuse(env.s1, 256), 0x2000u);
  EXPECT_FALSE(r.is_pending(0x2000));
  EXPECT_EQ(r.pending_count(), 2u);
  EXPECT_EQ(r.reuse(env.s1, 256), 0x1000u);
  EXPECT_EQ(r.reuse(env.s1, 256), std::nullopt);
  EXPECT_EQ(r.reuse(env.s1, 512), 0x3000u);
  EXPECT_EQ(r.pending_count(), 0u);
  EXPECT_TRUE(env.released.empty()) << "reused blocks are never released";
  EXPECT_EQ(env.counters.device_calls, 0u) << "no batch was full: no event";
  env.expect_valid("all reused");
}

TEST(StreamReuse, ReuseTakesOpenBlocksThenNewestBatchFirst) {
  Env env(/*batch=*/2);
  auto& r = *env.reuse;
  env.backend.hold_new_events = true;
  r.add(env.s1, 0x1000, 256);
  r.add(env.s1, 0x2000, 256);  // batch 1
  r.add(env.s1, 0x3000, 256);
  r.add(env.s1, 0x4000, 256);  // batch 2
  r.add(env.s1, 0x5000, 256);  // open
  EXPECT_EQ(env.counters.device_calls, 2u);
  for (std::uint64_t want : {0x5000u, 0x4000u, 0x3000u, 0x2000u, 0x1000u}) EXPECT_EQ(r.reuse(env.s1, 256), want);
  EXPECT_EQ(r.pending_count(), 0u);
  env.expect_valid("all reused");
  // The emptied batches still hold their events: drained, they release nothing.
  r.drain(/*wait=*/true);
  EXPECT_TRUE(env.released.empty());
  EXPECT_FALSE(r.any_fenced());
  EXPECT_EQ(env.backend.destroys, env.backend.records);
}

TEST(StreamReuse, BatchesFenceEveryBatchFreesPerStream) {
  Env env(/*batch=*/3);
  auto& r = *env.reuse;
  r.add(env.s1, 0x1000, 256);
  r.add(env.s1, 0x2000, 256);
  EXPECT_EQ(env.counters.device_calls, 0u);
  EXPECT_FALSE(r.any_fenced());
  r.add(env.s1, 0x3000, 256);
  EXPECT_EQ(env.counters.device_calls, 1u);
  EXPECT_EQ(env.backend.records, 1);
  EXPECT_TRUE(r.any_fenced());
  // Another stream counts its own frees.
  r.add(env.s2, 0x10000, 256);
  r.add(env.s2, 0x20000, 256);
  EXPECT_EQ(env.counters.device_calls, 1u);
  r.add(env.s2, 0x30000, 256);
  EXPECT_EQ(env.counters.device_calls, 2u);
  for (std::uint64_t a = 0x4000; a < 0x4000 + 3 * 0x1000; a += 0x1000) r.add(env.s1, a, 512);
  EXPECT_EQ(env.counters.device_calls, 3u);
  EXPECT_EQ(r.pending_count(), 9u);
  EXPECT_TRUE(env.released.empty());
  env.expect_valid("three batches");
}

TEST(StreamReuse, DrainWithoutWaitReleasesOnlyCompletedBatches) {
  Env env(/*batch=*/2);
  auto& r = *env.reuse;
  r.add(env.s1, 0x1000, 256);
  r.add(env.s1, 0x2000, 256);  // s1 batch 1: completes
  ASSERT_TRUE(env.backend.synchronize(env.s1));
  env.backend.hold_new_events = true;
  r.add(env.s1, 0x3000, 256);
  r.add(env.s1, 0x4000, 256);  // s1 batch 2: held
  env.backend.hold_new_events = false;
  r.add(env.s1, 0x5000, 256);  // open
  r.add(env.s2, 0x10000, 256);
  r.add(env.s2, 0x20000, 256);  // s2 batch: completes, behind nothing of s1
  ASSERT_TRUE(env.backend.synchronize(env.s2));
  const std::uint64_t calls = env.counters.device_calls;

  r.drain(/*wait=*/false);
  EXPECT_EQ(env.released_sorted(), (std::vector<std::uint64_t>{0x1000, 0x2000, 0x10000, 0x20000}));
  EXPECT_EQ(env.counters.device_calls, calls) << "no fence without wait";
  EXPECT_TRUE(r.any_fenced());
  EXPECT_EQ(r.pending_count(), 3u);
  EXPECT_FALSE(r.is_pending(0x1000));
  EXPECT_TRUE(r.is_pending(0x3000));
  EXPECT_TRUE(r.is_pending(0x5000));
  env.expect_valid("partly drained");
  r.drain(/*wait=*/false);
  EXPECT_EQ(env.released.size(), 4u) << "the held batch is still not complete";

  // With wait: the open block is fenced too, and everything goes.
  r.drain(/*wait=*/true);
  EXPECT_EQ(env.counters.device_calls, calls + 1);
  EXPECT_EQ(env.released_sorted(),
            (std::vector<std::uint64_t>{0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x10000, 0x20000}));
  EXPECT_EQ(r.pending_count(), 0u);
  EXPECT_FALSE(r.any_fenced());
  EXPECT_EQ(env.backend.destroys, env.backend.records) << "every event destroyed";
  env.expect_valid("drained");
  r.drain(/*wait=*/true);  // nothing left: no fence, nothing released
  EXPECT_EQ(env.counters.device_calls, calls + 1);
  EXPECT_EQ(env.released.size(), 7u);
}

TEST(StreamReuse, ReusedBlockOfAFencedBatchIsNotReleasedWithIt) {
  Env env(/*batch=*/2);
  auto& r = *env.reuse;
  r.add(env.s1, 0x1000, 256);
  r.add(env.s1, 0x2000, 256);
  EXPECT_EQ(r.reuse(env.s1, 256), 0x2000u);
  ASSERT_TRUE(env.backend.synchronize(env.s1));
  r.drain(/*wait=*/false);
  EXPECT_EQ(env.released, (std::vector<std::uint64_t>{0x1000}));
  EXPECT_EQ(r.pending_count(), 0u);
  env.expect_valid("drained");
}

TEST(StreamReuse, RefusedRecordSynchronizesAndReleasesAtOnce) {
  Env env(/*batch=*/2);
  auto& r = *env.reuse;
  env.backend.refuse_records = true;
  r.add(env.s1, 0x1000, 256);
  r.add(env.s1, 0x2000, 256);
  EXPECT_EQ(env.backend.syncs, 1);
  EXPECT_EQ(env.released_sorted(), (std::vector<std::uint64_t>{0x1000, 0x2000}));
  EXPECT_EQ(r.pending_count(), 0u);
  EXPECT_FALSE(r.any_fenced());
  env.expect_valid("released at once");
}

TEST(StreamReuse, DrainWaitFencesOpenBlocksOfEveryStream) {
  Env env(/*batch=*/64);
  auto& r = *env.reuse;
  r.add(env.s1, 0x1000, 256);
  r.add(env.s2, 0x2000, 256);
  (void)r.reuse(env.s1, 4096);  // a stream known without pending blocks: no fence
  EXPECT_EQ(env.counters.device_calls, 0u);
  r.drain(/*wait=*/false);
  EXPECT_TRUE(env.released.empty()) << "open blocks have no event yet";
  r.drain(/*wait=*/true);
  EXPECT_EQ(env.counters.device_calls, 2u);
  EXPECT_EQ(env.released_sorted(), (std::vector<std::uint64_t>{0x1000, 0x2000}));
  EXPECT_EQ(env.backend.destroys, env.backend.records);
  env.expect_valid("drained");
}

TEST(StreamReuse, DrainWaitsForRealStreamWork) {
  Env env(/*batch=*/1);
  auto& r = *env.reuse;
  // Work queued on the stream before the free: its event completes after it.
  std::vector<unsigned char> dst(4 * kMiB), src(4 * kMiB, 7);
  ASSERT_TRUE(env.backend.copy(dst.data(), src.data(), src.size(), env.s1));
  r.add(env.s1, 0x1000, 256);
  r.drain(/*wait=*/true);
  EXPECT_EQ(env.released, (std::vector<std::uint64_t>{0x1000}));
  EXPECT_EQ(dst.back(), 7) << "the copy before the fence has completed";
}

TEST(StreamReuse, AbandonWaitsAndDestroysEventsReleasingNothing) {
  Env env(/*batch=*/2);
  auto& r = *env.reuse;
  env.backend.hold_new_events = true;
  r.add(env.s1, 0x1000, 256);
  r.add(env.s1, 0x2000, 256);
  r.add(env.s2, 0x3000, 256);
  r.add(env.s2, 0x4000, 256);
  r.add(env.s2, 0x5000, 256);  // open
  ASSERT_EQ(env.backend.records, 2);
  r.abandon();
  EXPECT_TRUE(env.released.empty());
  EXPECT_EQ(env.backend.waits, 2);
  EXPECT_EQ(env.backend.destroys, 2);
  EXPECT_FALSE(r.any());
  EXPECT_FALSE(r.any_fenced());
  r.drain(/*wait=*/true);  // nothing left to fence or release
  EXPECT_TRUE(env.released.empty());
  EXPECT_EQ(env.backend.records, 2);
}

}  // namespace
}  // namespace memd
