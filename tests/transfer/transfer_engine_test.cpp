// TransferEngine on host devices: every transfer kind and path (the staged
// pipeline and the device path too, with host:N counted as device memory),
// progress read part-way, cancel between chunks, batches with a failing
// member, a free during a transfer (no other allocation's bytes change), a
// move that keeps its id and bytes (and a write during it is not lost), and
// the refusals a caller can fix.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "transfer_test_support.hpp"

namespace memd {
namespace {

using transfer_test::Env;
using transfer_test::pattern;
using transfer_test::wait_until;

TransferOptions small_chunks(bool stage_host_devices) {
  TransferOptions o;
  o.workers = 3;
  o.copy.chunk_bytes = kMiB;  // several windows and a ring that wraps
  o.copy.window_chunks = 4;
  o.copy.staging_buffers = 3;
  o.copy.stage_host_devices = stage_host_devices;
  o.host_copy_threads = 2;
  return o;
}

struct Place {
  DeviceId device;
  MemoryType type;
};

struct KindCase {
  const char* name;
  Place from, to;
  bool stage_host_devices;
  CopyPath path;
};

class TransferKinds : public ::testing::TestWithParam<KindCase> {};

// Copies at odd offsets and sizes: the destination holds the source's
// bytes exactly where asked, and nothing else of it changed.
TEST_P(TransferKinds, CopiesExactlyTheRangeAsked) {
  const auto& c = GetParam();
  Env env(small_chunks(c.stage_host_devices));
  const std::uint64_t size = 9 * kMiB + 12345;
  auto src = env.alloc(size, c.from.device, c.from.type);
  auto dst = env.alloc(size + 3 * kMiB, c.to.device, c.to.type);
  ASSERT_FALSE(::testing::Test::HasFailure());
  auto src_bytes = env.fill(src, 1);
  auto dst_bytes = env.fill(dst, 2);
  for (auto [so, dof, n] : {std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>{0, 0, size},
                            {777, 3 * kMiB - 5, size - 777}, {kMiB + 1, 1, 4 * kMiB + 3}, {size - 1, 0, 1}}) {
    TransferSpec spec;
    spec.source = src.id;
    spec.destination = dst.id;
    spec.source_offset = so;
    spec.destination_offset = dof;
    spec.size = n;
    auto submitted = env.engine->submit("t", spec);
    ASSERT_TRUE(submitted) << submitted.error().message;
    EXPECT_EQ(submitted->status, MemoryTransferStatus::Pending);
    auto done = env.finished(submitted->id);
    ASSERT_EQ(done.status, MemoryTransferStatus::Completed) << (done.error ? done.error->message : "");
    EXPECT_EQ(done.bytes_done, n);
    ASSERT_TRUE(done.path);
    EXPECT_EQ(*done.path, c.path) << to_string(*done.path);
    std::memcpy(dst_bytes.data() + dof, src_bytes.data() + so, n);
    EXPECT_TRUE(env.bytes(dst) == dst_bytes) << "offsets " << so << " → " << dof << ", " << n << " bytes";
    EXPECT_TRUE(env.bytes(src) == src_bytes) << "the source changed";
  }
  EXPECT_EQ(env.engine->staging().buffers_in_use, 0u);
}

const DeviceId H0 = DeviceId::host(0), H1 = DeviceId::host(1), CPU = DeviceId::cpu();
constexpr auto V = MemoryType::VRAM, R = MemoryType::RAM, S = MemoryType::SharedMemory;

INSTANTIATE_TEST_SUITE_P(
    Host, TransferKinds,
    ::testing::Values(
        KindCase{"RamToHostDevice", {CPU, R}, {H0, V}, false, CopyPath::HostMemcpy},
        KindCase{"HostDeviceToRam", {H0, V}, {CPU, R}, false, CopyPath::HostMemcpy},
        KindCase{"HostDeviceToHostDevice", {H0, V}, {H1, V}, false, CopyPath::HostMemcpy},
        KindCase{"WithinOneDevice", {H0, V}, {H0, V}, false, CopyPath::HostMemcpy},
        KindCase{"SharedToHostDevice", {CPU, S}, {H1, V}, false, CopyPath::HostMemcpy},
        KindCase{"RamToRam", {CPU, R}, {CPU, R}, false, CopyPath::HostMemcpy},
        // host:N as device memory: the paths a GPU takes.
        KindCase{"PageableToDeviceStaged", {CPU, R}, {H0, V}, true, CopyPath::Staged},
        KindCase{"DeviceToPageableStaged", {H1, V}, {CPU, R}, true, CopyPath::Staged},
        KindCase{"DeviceToDevice", {H0, V}, {H1, V}, true, CopyPath::DeviceAsync},
        KindCase{"PinnedToDevice", {CPU, S}, {H0, V}, true, CopyPath::DeviceAsync},
        KindCase{"DeviceToPinned", {H0, V}, {CPU, S}, true, CopyPath::DeviceAsync}),
    [](const auto& param_info) { return std::string(param_info.param.name); });

TransferSpec whole(const AllocationRecord& from, const AllocationRecord& to, std::uint64_t rate = 0) {
  TransferSpec s;
  s.source = from.id;
  s.destination = to.id;
  s.max_bytes_per_second = rate;
  return s;
}

// A paced transfer read part-way shows progress between 0 and the total;
// a cancel stops it at a chunk boundary: the prefix landed, nothing after it.
TEST(TransferEngine, ProgressPartWayAndCancelBetweenChunks) {
  Env env(small_chunks(false));
  const std::uint64_t size = 32 * kMiB;
  auto src = env.alloc(size, H0, V);
  auto dst = env.alloc(size, H1, V);
  auto src_bytes = env.fill(src, 3);
  auto dst_bytes = env.fill(dst, 4);
  auto t = env.engine->submit("t", whole(src, dst, 16 * kMiB));  // ~2 s
  ASSERT_TRUE(t) << t.error().message;
  TransferReport mid;
  ASSERT_TRUE(wait_until([&] {
    auto s = env.engine->status(t->id);
    if (s) mid = *s;
    return s && s->bytes_done > 0;
  }));
  EXPECT_EQ(mid.status, MemoryTransferStatus::InProgress);
  EXPECT_GT(mid.bytes_done, 0u);
  EXPECT_LT(mid.bytes_done, size);
  EXPECT_TRUE(mid.started_at.has_value());
  EXPECT_FALSE(mid.finished_at.has_value());
  EXPECT_GT(mid.rate(std::chrono::system_clock::now()), 0.0);
  auto cancelled = env.engine->cancel(t->id);
  ASSERT_TRUE(cancelled) << cancelled.error().message;
  auto end = env.finished(t->id);
  EXPECT_EQ(end.status, MemoryTransferStatus::Cancelled);
  ASSERT_TRUE(end.error);
  EXPECT_NE(end.error->message.find("cancelled after"), std::string::npos) << end.error->message;
  ASSERT_LT(end.bytes_done, size);
  ASSERT_EQ(end.bytes_done % kMiB, 0u) << "a stop lands on a chunk boundary";
  std::memcpy(dst_bytes.data(), src_bytes.data(), end.bytes_done);
  EXPECT_TRUE(env.bytes(dst) == dst_bytes) << "bytes after the cancel point changed";
  // Cancelling a finished transfer is a conflict; an unknown id not_found.
  auto again = env.engine->cancel(t->id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::conflict);
  auto unknown = env.engine->status(TransferId::generate());
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ErrorCode::not_found);
}

TEST(TransferEngine, APendingTransferCancelsAtOnce) {
  TransferOptions o = small_chunks(false);
  o.workers = 1;
  Env env(o);
  auto a = env.alloc(8 * kMiB, H0, V);
  auto b = env.alloc(8 * kMiB, H1, V);
  auto slow = env.engine->submit("t", whole(a, b, 4 * kMiB));  // keeps the one worker busy
  auto queued = env.engine->submit("t", whole(b, a));
  ASSERT_TRUE(slow && queued);
  auto c = env.engine->cancel(queued->id);
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->status, MemoryTransferStatus::Cancelled);
  EXPECT_EQ(c->bytes_done, 0u);
  ASSERT_TRUE(env.engine->cancel(slow->id));
  EXPECT_EQ(env.finished(slow->id).status, MemoryTransferStatus::Cancelled);
}

// Frees during a transfer: the freed allocation reads Freeing until the
// chunks in flight drain, the transfer ends Failed with the reason, and no
// other allocation's bytes change, including ones allocated meanwhile.
TEST(TransferEngine, AFreeDuringATransferChangesNoOtherBytes) {
  for (bool free_destination : {true, false}) {
    Env env(small_chunks(false));
    const std::uint64_t size = 24 * kMiB;
    auto src = env.alloc(size, H0, V);
    auto dst = env.alloc(size, H0, V);
    std::vector<AllocationRecord> others;
    std::vector<std::vector<std::byte>> other_bytes;
    for (int k = 0; k < 4; ++k) {
      others.push_back(env.alloc((k + 1) * 3 * kMiB + 100, H0, V));
      other_bytes.push_back(env.fill(others.back(), 100 + k));
    }
    auto src_bytes = env.fill(src, 5);
    env.fill(dst, 6);
    auto t = env.engine->submit("t", whole(src, dst, 12 * kMiB));
    ASSERT_TRUE(t);
    ASSERT_TRUE(wait_until([&] { return env.engine->status(t->id)->bytes_done >= 2 * kMiB; }));
    const auto& victim = free_destination ? dst : src;
    auto freed = env.manager->deallocate(victim.id);
    ASSERT_TRUE(freed) << freed.error().message;
    EXPECT_EQ(freed->status, MemoryAllocationStatus::Freeing);
    // Byte access and new transfers are refused at once; a second free too.
    auto read = env.engine->read(victim.id, 0, 16);
    ASSERT_FALSE(read);
    EXPECT_EQ(read.error().code, ErrorCode::not_found);
    auto twice = env.manager->deallocate(victim.id);
    ASSERT_FALSE(twice);
    EXPECT_EQ(twice.error().code, ErrorCode::not_found);
    // Memory allocated while the copy drains gets fresh bytes of its own.
    for (int k = 0; k < 3; ++k) {
      others.push_back(env.alloc(5 * kMiB + 7 * k, H0, V));
      other_bytes.push_back(env.fill(others.back(), 200 + k));
    }
    auto end = env.finished(t->id);
    EXPECT_EQ(end.status, MemoryTransferStatus::Failed);
    ASSERT_TRUE(end.error);
    EXPECT_EQ(end.error->code, ErrorCode::conflict);
    EXPECT_NE(end.error->message.find("was freed during the copy"), std::string::npos) << end.error->message;
    EXPECT_LT(end.bytes_done, size);
    // The allocation is gone once the transfer let go.
    ASSERT_TRUE(wait_until([&] { return !env.manager->get(victim.id); }));
    for (std::size_t k = 0; k < others.size(); ++k)
      EXPECT_TRUE(env.bytes(others[k]) == other_bytes[k]) << "allocation " << k << " changed";
    if (free_destination) {
      EXPECT_TRUE(env.bytes(src) == src_bytes);
    }
    auto v = env.manager->validate();
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
  }
}

// A batch runs its members concurrently; one that fails (its destination
// freed mid-way) leaves the others completed, and the batch reports Failed
// with the list.
TEST(TransferEngine, ABatchWithAFailingMemberKeepsTheOthers) {
  Env env(small_chunks(false));
  std::vector<AllocationRecord> src, dst;
  std::vector<std::vector<std::byte>> bytes;
  std::vector<TransferSpec> specs;
  for (int k = 0; k < 4; ++k) {
    src.push_back(env.alloc(6 * kMiB + k, k % 2 ? H0 : CPU, k % 2 ? V : R));
    dst.push_back(env.alloc(6 * kMiB + k, H1, V));
    bytes.push_back(env.fill(src.back(), 10 + k));
    specs.push_back(whole(src.back(), dst.back(), k == 2 ? 3 * kMiB : 0));  // member 2 is slow
  }
  auto batch = env.engine->submit_batch("t", specs);
  ASSERT_TRUE(batch) << batch.error().message;
  ASSERT_EQ(batch->transfers.size(), 4u);
  const TransferId slow = batch->transfers[2].id;
  ASSERT_TRUE(wait_until([&] { return env.engine->status(slow)->bytes_done > 0; }));
  ASSERT_TRUE(env.manager->deallocate(dst[2].id));
  BatchReport end;
  ASSERT_TRUE(wait_until([&] {
    end = *env.engine->batch(batch->id);
    return end.status != MemoryTransferStatus::InProgress && end.status != MemoryTransferStatus::Pending;
  }));
  EXPECT_EQ(end.status, MemoryTransferStatus::Failed);
  ASSERT_EQ(end.failed.size(), 1u);
  EXPECT_EQ(end.failed[0], slow);
  for (int k : {0, 1, 3}) {
    EXPECT_EQ(end.transfers[k].status, MemoryTransferStatus::Completed);
    EXPECT_TRUE(env.bytes(dst[k]) == bytes[k]) << "member " << k;
  }
  EXPECT_LT(end.bytes_done, end.size_bytes);
}

TEST(TransferEngine, ABatchWithAnImpossibleMemberIsRefusedWhole) {
  Env env(small_chunks(false));
  auto a = env.alloc(kMiB, H0, V);
  auto small = env.alloc(kMiB / 2, H1, V);
  auto b = env.alloc(kMiB, H1, V);
  auto refused = env.engine->submit_batch("t", {whole(a, b), whole(a, small)});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::out_of_range);
  EXPECT_NE(refused.error().message.find("transfers[1]"), std::string::npos) << refused.error().message;
  EXPECT_EQ(env.engine->stats().submitted, 0u);
  auto empty = env.engine->submit_batch("t", {});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, ErrorCode::invalid_argument);
}

TEST(TransferEngine, RefusalsACallerCanFix) {
  Env env(small_chunks(false));
  auto a = env.alloc(kMiB, H0, V);
  auto b = env.alloc(kMiB / 2, H1, V);
  auto code = [&](TransferSpec s) {
    auto r = env.engine->submit("t", s);
    return r ? std::optional<ErrorCode>{} : std::optional{r.error().code};
  };
  EXPECT_EQ(code(whole(a, b)), ErrorCode::out_of_range);  // into a smaller allocation
  TransferSpec s = whole(b, a);
  s.source_offset = kMiB / 2 + 1;
  EXPECT_EQ(code(s), ErrorCode::out_of_range);
  s = whole(b, a);
  s.destination_offset = kMiB - 10;
  EXPECT_EQ(code(s), ErrorCode::out_of_range);
  s = whole(b, a);
  s.size = std::uint64_t{1} << 62;
  EXPECT_EQ(code(s), ErrorCode::out_of_range);
  s = whole(b, a);
  s.source_offset = kMiB / 2;  // nothing left to copy
  EXPECT_EQ(code(s), ErrorCode::invalid_argument);
  s = whole(a, b);
  s.source = AllocationId::generate();
  EXPECT_EQ(code(s), ErrorCode::not_found);
  s = whole(a, b);
  s.destination = AllocationId::generate();
  EXPECT_EQ(code(s), ErrorCode::not_found);
  // Nothing ran, nothing leaked a hold: both free at once.
  EXPECT_EQ(env.manager->deallocate(a.id)->status, MemoryAllocationStatus::Freed);
  EXPECT_EQ(env.manager->deallocate(b.id)->status, MemoryAllocationStatus::Freed);
}

// A move re-homes the allocation under the same id with the same bytes; a
// write issued during the move waits for it and lands in the new home.
TEST(TransferEngine, AMoveKeepsItsIdAndBytesAndLosesNoWrite) {
  for (bool stage : {false, true}) {
    Env env(small_chunks(stage));
    const std::uint64_t size = 12 * kMiB + 5;
    auto rec = env.alloc(size, H0, V);
    auto bytes = env.fill(rec, 7);
    TransferSpec move;
    move.source = rec.id;
    move.to_device = CPU;
    move.to_type = R;
    move.max_bytes_per_second = 24 * kMiB;
    auto t = env.engine->submit("t", move);
    ASSERT_TRUE(t) << t.error().message;
    EXPECT_EQ(t->kind, TransferKind::Move);
    ASSERT_TRUE(wait_until([&] { return env.engine->status(t->id)->bytes_done > 0; }));
    EXPECT_EQ(env.manager->get(rec.id)->status, MemoryAllocationStatus::Moving);
    // Reads go on from the old home meanwhile.
    auto during = env.engine->read(rec.id, 0, size);
    ASSERT_TRUE(during);
    EXPECT_TRUE(*during == bytes);
    const auto patch = pattern(4096, 8);
    ASSERT_TRUE(env.engine->write(rec.id, size - 5000, patch));  // waits for the move
    std::copy(patch.begin(), patch.end(), bytes.begin() + static_cast<std::ptrdiff_t>(size - 5000));
    auto done = env.finished(t->id);
    ASSERT_EQ(done.status, MemoryTransferStatus::Completed) << (done.error ? done.error->message : "");
    auto after = env.manager->get(rec.id);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->device, CPU);
    EXPECT_EQ(after->memory_type, R);
    EXPECT_EQ(after->status, MemoryAllocationStatus::Allocated);
    EXPECT_TRUE(env.bytes(*after) == bytes) << "bytes differ after the move (stage " << stage << ")";
    // And back to a device, unpaced.
    move.to_device = H1;
    move.to_type = V;
    move.max_bytes_per_second = 0;
    auto back = env.engine->submit("t", move);
    ASSERT_TRUE(back);
    EXPECT_EQ(env.finished(back->id).status, MemoryTransferStatus::Completed);
    EXPECT_EQ(env.manager->get(rec.id)->device, H1);
    EXPECT_TRUE(env.bytes(rec) == bytes);
    const auto usage = env.manager->requested_by_device();
    EXPECT_EQ(usage.count(CPU) ? usage.at(CPU) : 0, 0u) << "the quota stayed on the old device";
    EXPECT_EQ(usage.at(H1), size);
  }
}

TEST(TransferEngine, MovesThatCannotBe) {
  Env env(small_chunks(false));
  auto pinned = env.alloc(kMiB, H0, V, "t", /*pinned=*/true);
  auto plain = env.alloc(kMiB, H0, V);
  TransferSpec m;
  m.source = pinned.id;
  m.to_device = H1;
  m.to_type = V;
  auto r = env.engine->submit("t", m);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::conflict);
  m.source = plain.id;
  m.to_device = H0;
  r = env.engine->submit("t", m);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::conflict);  // already there
  m.to_device = H1;
  m.size = 10;
  r = env.engine->submit("t", m);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  // Freed during a move: it ends Failed, the allocation is not moved, and
  // its memory goes back.
  m.size.reset();
  m.max_bytes_per_second = 2 * kMiB;
  auto slow_src = env.alloc(8 * kMiB, H0, V);
  m.source = slow_src.id;
  auto t = env.engine->submit("t", m);
  ASSERT_TRUE(t);
  ASSERT_TRUE(wait_until([&] { return env.engine->status(t->id)->bytes_done > 0; }));
  ASSERT_TRUE(env.manager->deallocate(slow_src.id));
  auto end = env.finished(t->id);
  EXPECT_EQ(end.status, MemoryTransferStatus::Failed);
  ASSERT_TRUE(wait_until([&] { return !env.manager->get(slow_src.id); }));
  EXPECT_EQ(env.manager->requested_by_device().at(H0), 2 * kMiB);  // pinned + plain
}

// memory_copy: synchronous, bounds-checked, and memmove's meaning for
// overlapping ranges of one allocation (host memory, and device memory
// through the bounce buffer).
TEST(TransferEngine, CopyHandlesOverlapsBothWays) {
  for (bool stage : {false, true}) {
    Env env(small_chunks(stage));
    const std::uint64_t size = 7 * kMiB + 3;
    auto rec = env.alloc(size, H0, V);
    for (auto [from, to, n] : {std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>{0, 100, 5 * kMiB},
                               {3 * kMiB, 1, 4 * kMiB}, {10, 10 + kMiB + 1, 3 * kMiB}, {kMiB, 0, kMiB}}) {
      auto model = env.fill(rec, from + to);
      TransferSpec s;
      s.source = rec.id;
      s.destination = rec.id;
      s.source_offset = from;
      s.destination_offset = to;
      s.size = n;
      auto c = env.engine->copy(s);
      ASSERT_TRUE(c) << c.error().message;
      EXPECT_EQ(c->bytes, n);
      std::memmove(model.data() + to, model.data() + from, n);
      EXPECT_TRUE(env.bytes(rec) == model) << from << " → " << to << " (" << n << " bytes), stage " << stage;
    }
    TransferSpec bad;
    bad.source = rec.id;
    bad.destination = rec.id;
    bad.destination_offset = 1;
    auto r = env.engine->copy(bad);  // the whole allocation one byte on: past the end
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::out_of_range);
  }
}

TEST(TransferEngine, CompletionHookSeesEveryEndOnce) {
  TransferOptions o = small_chunks(false);
  std::atomic<int> completed{0}, other{0};
  Env env(o);
  env.engine->set_completion_hook([&](const TransferReport& r) {
    (r.status == MemoryTransferStatus::Completed ? completed : other).fetch_add(1);
  });
  auto a = env.alloc(2 * kMiB, H0, V);
  auto b = env.alloc(2 * kMiB, H1, V);
  std::vector<TransferId> ids;
  // Twenty into one destination: writers of one allocation take turns.
  for (int k = 0; k < 20; ++k) ids.push_back(env.engine->submit("t", whole(a, b))->id);
  for (const auto& id : ids) env.finished(id);
  EXPECT_EQ(completed.load(), 20);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(env.engine->stats().completed, 20u);
}

// /metrics' transfer duration histogram: every finished transfer and every
// memory_copy call is counted once, with a time, and nothing else is.
TEST(TransferEngine, StatsTimeEveryFinishedTransferAndCopy) {
  Env env(small_chunks(false));
  auto a = env.alloc(2 * kMiB, H0, V);
  auto b = env.alloc(2 * kMiB, H1, V);
  EXPECT_EQ(env.engine->stats().timed, 0u);
  auto id = env.engine->submit("t", whole(a, b));
  ASSERT_TRUE(id);
  env.finished(id->id);
  ASSERT_TRUE(env.engine->copy(whole(b, a)));
  TransferSpec bad = whole(a, b);
  bad.destination_offset = 1;  // refused before it starts: not a copy that ran
  EXPECT_FALSE(env.engine->copy(bad));
  const auto stats = env.engine->stats();
  EXPECT_EQ(stats.completed, 1u);
  EXPECT_EQ(stats.copies, 1u);
  EXPECT_EQ(stats.timed, 2u);
  EXPECT_GT(stats.duration_ns, 0u);  // 4 MiB moved: never instant
}

// Many threads submitting, cancelling, freeing and reading at once: every
// transfer ends, no hold is left (every allocation frees at once after), and
// validate() holds. Under TSan this is the engine's race test.
TEST(TransferEngine, ConcurrentSubmitCancelFree) {
  Env env(small_chunks(false));
  std::vector<AllocationRecord> pool;
  for (int k = 0; k < 8; ++k) pool.push_back(env.alloc(kMiB, k % 2 ? H0 : H1, V));
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<TransferId> ids;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const auto& a = pool[(t + i) % pool.size()];
        const auto& b = pool[(t + 3 * i + 1) % pool.size()];
        auto r = env.engine->submit("t", whole(a, b));
        if (!r) continue;
        if (i % 3 == 0) (void)env.engine->cancel(r->id);
        std::lock_guard lock(mu);
        ids.push_back(r->id);
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& id : ids) EXPECT_TRUE(env.finished(id).finished());
  for (const auto& rec : pool) EXPECT_EQ(env.manager->deallocate(rec.id)->status, MemoryAllocationStatus::Freed);
}

}  // namespace
}  // namespace memd
