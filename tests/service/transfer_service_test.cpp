// Transfers through MemoryService: who may move whose bytes. A transfer,
// move or copy that names another owner's allocation is refused (no export
// makes it theirs); a transfer's report and its cancel are its submitter's
// (or the admin's); a session that ends mid-transfer frees its allocation
// once the copy has drained, and nothing is left held.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

class TransferServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.backends.host_device_sizes = {128 * kMiB, 128 * kMiB};
    options.backends.enable_cuda = false;
    options.session_sweep_interval = std::chrono::milliseconds(0);
    options.transfers.copy.chunk_bytes = kMiB;
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
  }
  void TearDown() override {
    auto v = service_->validate();
    EXPECT_TRUE(v) << (v ? "" : v.error().message);
  }

  AllocationRecord alloc(const Caller& who, std::uint64_t bytes, DeviceId device) {
    AllocationRequest r;
    r.size_bytes = bytes;
    r.device = device;
    auto rec = service_->allocate(who, r);
    EXPECT_TRUE(rec) << (rec ? "" : rec.error().message);
    return rec ? *rec : AllocationRecord{};
  }
  static TransferSpec copy(const AllocationRecord& a, const AllocationRecord& b, std::uint64_t rate = 0) {
    TransferSpec s;
    s.source = a.id;
    s.destination = b.id;
    s.max_bytes_per_second = rate;
    return s;
  }
  TransferReport wait(const Caller& who, const TransferId& id) {
    TransferReport r;
    for (int i = 0; i < 5000; ++i) {
      auto s = service_->transfer_status(who, id);
      EXPECT_TRUE(s) << (s ? "" : s.error().message);
      if (!s) break;
      r = *s;
      if (r.finished()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return r;
  }

  std::unique_ptr<MemoryService> service_;
  const Caller alice_ = Caller::as("alice");
  const Caller bob_ = Caller::as("bob");
  const Caller admin_ = Caller{"ops", true, std::nullopt};
};

TEST_F(TransferServiceTest, AnotherOwnersAllocationIsRefusedEveryWay) {
  auto a = alloc(alice_, kMiB, DeviceId::host(0));
  auto b = alloc(bob_, kMiB, DeviceId::host(1));
  ASSERT_TRUE(service_->write(alice_, a.id, 0, std::vector<std::byte>(16, std::byte{0xA1})));
  ASSERT_TRUE(service_->write(bob_, b.id, 0, std::vector<std::byte>(16, std::byte{0xB0})));
  auto denied = [](const auto& r, const char* what) {
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error().code, ErrorCode::permission_denied) << what << ": " << r.error().message;
  };
  denied(service_->transfer(bob_, copy(a, b)), "bob copies from alice's");
  denied(service_->transfer(alice_, copy(a, b)), "alice copies into bob's");
  denied(service_->copy(bob_, copy(a, b)), "bob's memory_copy");
  denied(service_->transfer_batch(bob_, {copy(b, b), copy(a, b)}), "a batch with one foreign member");
  TransferSpec move;
  move.source = a.id;
  move.to_device = DeviceId::cpu();
  move.to_type = MemoryType::RAM;
  denied(service_->transfer(bob_, move), "bob moves alice's");
  // Nothing moved: bob's bytes are his, alice's hers, and nothing is held.
  EXPECT_EQ((*service_->read(bob_, b.id, 0, 1))[0], std::byte{0xB0});
  EXPECT_EQ(service_->transfers().stats().submitted, 0u);
  // The admin may copy across owners.
  auto t = service_->transfer(admin_, copy(a, b));
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(wait(admin_, t->id).status, MemoryTransferStatus::Completed);
  EXPECT_EQ((*service_->read(bob_, b.id, 0, 1))[0], std::byte{0xA1});
}

TEST_F(TransferServiceTest, ReportsAndCancelsAreTheSubmitters) {
  auto a = alloc(alice_, 8 * kMiB, DeviceId::host(0));
  auto b = alloc(alice_, 8 * kMiB, DeviceId::host(1));
  auto t = service_->transfer(alice_, copy(a, b, 2 * kMiB));
  ASSERT_TRUE(t);
  EXPECT_EQ(service_->transfer_status(bob_, t->id).error().code, ErrorCode::permission_denied);
  EXPECT_EQ(service_->cancel_transfer(bob_, t->id).error().code, ErrorCode::permission_denied);
  EXPECT_TRUE(service_->transfer_status(admin_, t->id));
  ASSERT_TRUE(service_->cancel_transfer(alice_, t->id));
  EXPECT_EQ(wait(alice_, t->id).status, MemoryTransferStatus::Cancelled);
  EXPECT_EQ(service_->cancel_transfer(alice_, t->id).error().code, ErrorCode::conflict);
}

TEST_F(TransferServiceTest, ASessionEndingMidTransferFreesAfterTheDrain) {
  auto session = service_->open_session(alice_, std::chrono::seconds(60));
  ASSERT_TRUE(session);
  Caller worker = alice_;
  worker.session = session->id;
  auto a = alloc(worker, 16 * kMiB, DeviceId::host(0));
  auto b = alloc(alice_, 16 * kMiB, DeviceId::host(1));
  auto t = service_->transfer(worker, copy(a, b, 8 * kMiB));
  ASSERT_TRUE(t);
  for (int i = 0; i < 5000 && service_->transfer_status(alice_, t->id)->bytes_done == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(service_->close_session(alice_, session->id));
  auto end = wait(alice_, t->id);
  EXPECT_EQ(end.status, MemoryTransferStatus::Failed);
  for (int i = 0; i < 5000 && service_->allocation(alice_, a.id); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(service_->allocation(alice_, a.id).error().code, ErrorCode::not_found);
  EXPECT_EQ(service_->usage().by_owner.at("alice").requested_bytes, 16 * kMiB);  // b only
}

}  // namespace
}  // namespace memd
