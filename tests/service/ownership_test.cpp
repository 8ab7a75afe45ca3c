// The ownership rule where it is enforced (MemoryService), in process:
// mallory cannot see, read, write or free alice's allocation, nor list it,
// limit anyone, or clear across owners; alice can do all of it to her own;
// the admin can do it to anyone's. Refusals change nothing.
#include <gtest/gtest.h>

#include <string>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

class OwnershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.backends.host_device_sizes = {64 * kMiB};
    options.backends.enable_cuda = false;
    options.session_sweep_interval = std::chrono::milliseconds(0);
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
    AllocationRequest r;
    r.size_bytes = 4096;
    r.device = DeviceId::host(0);
    auto record = service_->allocate(alice_, r);
    ASSERT_TRUE(record) << record.error().message;
    id_ = record->id;
    ASSERT_TRUE(service_->write(alice_, id_, 0, bytes("alice's")));
  }

  static std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

  std::string read_back(const Caller& who) {
    auto got = service_->read(who, id_, 0, 7);
    return got ? std::string(reinterpret_cast<const char*>(got->data()), got->size()) : "";
  }

  static void expect_denied(const Error& e, std::string_view what) {
    EXPECT_EQ(e.code, ErrorCode::permission_denied) << what << ": " << e.message;
    EXPECT_NE(e.message.find("alice"), std::string::npos) << what << ": the message names the owner";
  }

  std::unique_ptr<MemoryService> service_;
  AllocationId id_;
  const Caller alice_ = Caller::as("alice");
  const Caller mallory_ = Caller::as("mallory");
  const Caller admin_ = Caller{"ops", true, std::nullopt};
};

TEST_F(OwnershipTest, MalloryCannotTouchAlicesAllocation) {
  expect_denied(service_->allocation(mallory_, id_).error(), "details");
  expect_denied(service_->read(mallory_, id_, 0, 7).error(), "read");
  expect_denied(service_->write(mallory_, id_, 0, bytes("mallory")).error(), "write");
  expect_denied(service_->deallocate(mallory_, id_).error(), "free");
  // Nothing changed: alice's bytes and allocation are intact.
  EXPECT_EQ(read_back(alice_), "alice's");
  EXPECT_TRUE(service_->allocation(alice_, id_));
}

TEST_F(OwnershipTest, TheAdminCanTouchAnyonesAllocation) {
  EXPECT_EQ(service_->allocation(admin_, id_)->owner, "alice");
  EXPECT_EQ(read_back(admin_), "alice's");
  ASSERT_TRUE(service_->write(admin_, id_, 0, bytes("admin's")));
  EXPECT_EQ(read_back(alice_), "admin's");
  auto freed = service_->deallocate(admin_, id_);
  ASSERT_TRUE(freed);
  EXPECT_EQ(freed->owner, "alice");
  EXPECT_EQ(service_->allocation(alice_, id_).error().code, ErrorCode::not_found);
}

TEST_F(OwnershipTest, ListingShowsYourOwnUnlessYouAreTheAdmin) {
  AllocationRequest r;
  r.size_bytes = 4096;
  r.device = DeviceId::host(0);
  ASSERT_TRUE(service_->allocate(mallory_, r));
  AllocationQuery all;
  EXPECT_EQ(service_->allocations(mallory_, all)->total, 1u);
  EXPECT_EQ(service_->allocations(mallory_, all)->items.at(0).owner, "mallory");
  EXPECT_EQ(service_->allocations(alice_, all)->items.at(0).id, id_);
  EXPECT_EQ(service_->allocations(admin_, all)->total, 2u);
  AllocationQuery alices;
  alices.filter.owner = "alice";
  expect_denied(service_->allocations(mallory_, alices).error(), "list");
  EXPECT_EQ(service_->allocations(alice_, alices)->total, 1u);
  EXPECT_EQ(service_->allocations(admin_, alices)->total, 1u);
  // Aggregates stay open.
  EXPECT_EQ(service_->usage().by_owner.size(), 2u);
}

TEST_F(OwnershipTest, LimitsAreTheAdminsEvenForYourOwnOwner) {
  LimitUpdate mine;
  mine.owner = "mallory";
  mine.bytes = 64 * kGiB;  // raising its own quota would defeat it
  auto refused = service_->update_limits(mallory_, mine);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::permission_denied);
  LimitUpdate device;
  device.device = DeviceId::host(0);
  device.bytes = kMiB;
  EXPECT_EQ(service_->update_limits(alice_, device).error().code, ErrorCode::permission_denied);
  EXPECT_TRUE(service_->limits().per_device.empty()) << "a refused update changed the limits";
  EXPECT_TRUE(service_->update_limits(admin_, device));
  EXPECT_EQ(service_->limits().per_device.at(DeviceId::host(0)), kMiB);
}

TEST_F(OwnershipTest, ClearFreesAcrossOwnersOnlyForTheAdmin) {
  ClearRequest alices;
  alices.owner = "alice";
  expect_denied(service_->clear(mallory_, alices).error(), "clear alice");
  ClearRequest device_wide;
  device_wide.device = DeviceId::host(0);
  EXPECT_EQ(service_->clear(mallory_, device_wide).error().code, ErrorCode::permission_denied);
  ClearRequest low;
  low.below_priority = MemoryPriority::High;
  EXPECT_EQ(service_->clear(alice_, low).error().code, ErrorCode::permission_denied)
      << "a filter without an owner reaches every owner's";
  EXPECT_TRUE(service_->allocation(alice_, id_)) << "a refused clear freed something";
  // A trim alone frees nothing anyone holds: open to all.
  EXPECT_TRUE(service_->clear(mallory_, {}));
  // Your own, narrowed by any other filter: yours.
  ClearRequest own_here;
  own_here.owner = "alice";
  own_here.device = DeviceId::host(0);
  auto cleared = service_->clear(alice_, own_here);
  ASSERT_TRUE(cleared);
  ASSERT_EQ(cleared->freed.size(), 1u);
  EXPECT_EQ(cleared->freed[0].id, id_);
}

TEST_F(OwnershipTest, TheAdminClearsAnyone) {
  ClearRequest device_wide;
  device_wide.device = DeviceId::host(0);
  auto cleared = service_->clear(admin_, device_wide);
  ASSERT_TRUE(cleared);
  EXPECT_EQ(cleared->freed.size(), 1u);
}

}  // namespace
}  // namespace memd
