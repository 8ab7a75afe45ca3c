// MemoryService on a small host-backed device: every operation, in-process.
#include <gtest/gtest.h>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

// The in-process host: the admin (ownership has its own tests).
const Caller kHost = Caller::host("host");

class MemoryServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.backends.host_device_sizes = {64 * kMiB};
    options.backends.enable_cuda = false;
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
  }

  AllocationRecord allocate(std::uint64_t bytes, std::string owner = "alice",
                            MemoryPriority priority = MemoryPriority::Normal) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = DeviceId::host(0);
    r.priority = priority;
    auto record = service_->allocate(Caller::as(std::move(owner)), r);
    EXPECT_TRUE(record) << record.error().message;
    return record.value_or(AllocationRecord{});
  }

  std::unique_ptr<MemoryService> service_;
};

TEST_F(MemoryServiceTest, AllocateWriteReadDeallocate) {
  auto a = allocate(kMiB);
  const std::string text = "hello";
  ASSERT_TRUE(service_->write(kHost, a.id, 10, std::as_bytes(std::span(text.data(), text.size()))));
  auto back = service_->read(kHost, a.id, 10, 5);
  ASSERT_TRUE(back);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(back->data()), back->size()), text);
  EXPECT_FALSE(service_->read(kHost, a.id, kMiB - 2, 5));
  auto freed = service_->deallocate(kHost, a.id);
  ASSERT_TRUE(freed);
  EXPECT_EQ(freed->status, MemoryAllocationStatus::Freed);
  EXPECT_EQ(service_->deallocate(kHost, a.id).error().code, ErrorCode::not_found);
}

TEST_F(MemoryServiceTest, RefusesWhatOnlyTheServiceCanCheck) {
  AllocationRequest r;
  r.size_bytes = 0;
  EXPECT_EQ(service_->allocate(kHost, r).error().code, ErrorCode::invalid_argument);
  r.size_bytes = kMaxRequestBytes + 1;  // well-formed, but no device holds it
  EXPECT_EQ(service_->allocate(kHost, r).error().code, ErrorCode::out_of_memory);
  r.size_bytes = 1;
  r.device = DeviceId::cuda(7);
  EXPECT_EQ(service_->allocate(kHost, r).error().code, ErrorCode::not_found);
  // In-process callers meet the owner rule too.
  r.device = DeviceId::host(0);
  EXPECT_EQ(service_->allocate(Caller::as("bad\nname"), r).error().code, ErrorCode::invalid_argument);
}

TEST_F(MemoryServiceTest, StatusUsageAndListing) {
  allocate(kMiB, "alice");
  allocate(2 * kMiB, "bob");
  auto status = service_->status(DeviceId::host(0));
  ASSERT_TRUE(status);
  ASSERT_EQ(status->devices.size(), 1u);
  EXPECT_EQ(status->devices[0].allocated_bytes, 3 * kMiB);
  EXPECT_EQ(status->devices[0].allocations, 2u);
  EXPECT_EQ(status->devices[0].total_bytes, 64 * kMiB);
  EXPECT_EQ(service_->status(DeviceId::host(9)).error().code, ErrorCode::not_found);
  auto all = service_->status(std::nullopt);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->devices.size(), service_->devices().size());

  auto usage = service_->usage();
  EXPECT_EQ(usage.total.requested_bytes, 3 * kMiB);
  EXPECT_EQ(usage.total.rounded_bytes, 3 * kMiB);
  EXPECT_EQ(usage.by_owner["bob"].requested_bytes, 2 * kMiB);
  EXPECT_FALSE(usage.by_owner["bob"].rounded_bytes) << "pools are per device and type, not per owner";
  EXPECT_EQ(usage.by_memory_type[MemoryType::VRAM].allocations, 2u);

  AllocationQuery q;
  q.limit = 1;
  auto page = service_->allocations(kHost, q).value();
  EXPECT_EQ(page.total, 2u);
  EXPECT_EQ(page.items.size(), 1u);
  q.filter.owner = "alice";
  q.limit = 10;
  EXPECT_EQ(service_->allocations(kHost, q)->items.at(0).owner, "alice");
  q.offset = 5;
  EXPECT_TRUE(service_->allocations(kHost, q)->items.empty());
}

// A user read `allocatedBytes` as what they asked for and found more: usage
// now names both sizes. An odd size must show as requested exactly and as
// rounded up, on every view that has both.
TEST_F(MemoryServiceTest, UsageNamesRequestedAndRoundedBytesApart) {
  allocate(1000, "carol");
  allocate(kMiB + 1, "carol");
  const auto usage = service_->usage();
  const std::uint64_t requested = 1000 + kMiB + 1;
  for (const UsageTotals* t : {&usage.total, &usage.by_device.at(DeviceId::host(0)),
                               &usage.by_memory_type.at(MemoryType::VRAM)}) {
    EXPECT_EQ(t->requested_bytes, requested);
    ASSERT_TRUE(t->rounded_bytes);
    EXPECT_GT(*t->rounded_bytes, requested) << "rounded bytes should include the size-class rounding";
    EXPECT_GE(t->reserved_bytes.value_or(0), *t->rounded_bytes);
  }
  EXPECT_EQ(usage.by_owner.at("carol").requested_bytes, requested);
  EXPECT_EQ(usage.by_owner.at("carol").allocations, 2u);
}

TEST_F(MemoryServiceTest, LimitsUpdateOneScopeAtATime) {
  LimitUpdate u;
  u.owner = "alice";
  u.bytes = kMiB;
  auto limits = service_->update_limits(kHost, u);
  ASSERT_TRUE(limits);
  EXPECT_EQ(limits->per_owner.at("alice"), kMiB);
  AllocationRequest r;
  r.size_bytes = 2 * kMiB;
  r.device = DeviceId::host(0);
  auto refused = service_->allocate(Caller::as("alice"), r);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::quota_exceeded);
  u.bytes.reset();
  EXPECT_TRUE(service_->update_limits(kHost, u)->per_owner.empty());
  LimitUpdate two;
  two.owner = "a";
  two.memory_type = MemoryType::VRAM;
  EXPECT_EQ(service_->update_limits(kHost, two).error().code, ErrorCode::invalid_argument);
  LimitUpdate bad_device;
  bad_device.device = DeviceId::cuda(3);
  bad_device.bytes = 1;
  EXPECT_EQ(service_->update_limits(kHost, bad_device).error().code, ErrorCode::not_found);
}

TEST_F(MemoryServiceTest, ClearFreesOnlyWhatTheFilterNames) {
  allocate(kMiB, "alice", MemoryPriority::Low);
  auto keep = allocate(kMiB, "bob", MemoryPriority::High);
  auto trim_only = service_->clear(kHost, {});
  EXPECT_TRUE(trim_only->freed.empty());
  ClearRequest low;
  low.below_priority = MemoryPriority::Normal;
  auto report = service_->clear(kHost, low).value();
  ASSERT_EQ(report.freed.size(), 1u);
  EXPECT_EQ(report.freed[0].owner, "alice");
  EXPECT_EQ(report.freed_bytes, kMiB);
  EXPECT_TRUE(service_->allocation(kHost, keep.id));
}

TEST_F(MemoryServiceTest, ReleaseOwnerAndOptimize) {
  allocate(kMiB, "host-1");
  allocate(kMiB, "host-1");
  auto other = allocate(kMiB, "host-2");
  EXPECT_EQ(service_->release_owner("host-1").size(), 2u);
  EXPECT_TRUE(service_->allocation(kHost, other.id));
  ASSERT_TRUE(service_->deallocate(kHost, other.id));
  auto optimized = service_->optimize();
  EXPECT_EQ(optimized.reserved_after, 0u);
  EXPECT_EQ(service_->health().status, MemoryHealthStatus::Healthy);
}

}  // namespace
}  // namespace memd
