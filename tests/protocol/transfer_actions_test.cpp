// The transfer actions through dispatch, with hostile input: ids that are
// not GUIDs, both shapes or neither, empty and oversized batches, items that
// are not objects or lack keys, sizes of zero, ranges past the end, a
// transfer into a smaller allocation, a cancel of a finished transfer,
// unknown ids, moves to nowhere. Each refusal has its code; nothing runs.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "memd/size.hpp"
#include "protocol/action_table.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using json = nlohmann::json;

class TransferActionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServiceOptions options;
    options.backends.host_device_sizes = {64 * kMiB, 64 * kMiB};
    options.backends.enable_cuda = false;
    options.session_sweep_interval = std::chrono::milliseconds(0);
    auto s = MemoryService::create(options);
    ASSERT_TRUE(s) << s.error().message;
    service_ = std::move(*s);
    big_ = allocate(kMiB, "host:0");
    small_ = allocate(kMiB / 2, "host:1");
  }

  Result<json> call(std::string_view action, const json& params) {
    auto out = dispatch(*service_, *find_action(action), params, CallContext{Caller::as("t"), {}, false, false});
    if (!out) return fail(out.error());
    return out->result;
  }
  std::string allocate(std::uint64_t bytes, const char* device) {
    auto r = call("memory_allocate", {{"sizeBytes", bytes}, {"deviceId", device}});
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? (*r)["allocationId"].get<std::string>() : "";
  }
  ErrorCode code(std::string_view action, const json& params) {
    auto r = call(action, params);
    EXPECT_FALSE(r) << action << " " << params.dump() << " was accepted";
    return r ? ErrorCode::internal : r.error().code;
  }

  std::unique_ptr<MemoryService> service_;
  std::string big_, small_;
};

TEST_F(TransferActionsTest, ShapesTheTableRefuses) {
  const auto I = ErrorCode::invalid_argument;
  const json one = {{"sourceAllocationId", small_}, {"destinationAllocationId", big_}};
  EXPECT_EQ(code("memory_transfer", json::object()), I);  // neither shape
  json both = one;
  both["transfers"] = json::array({one});
  EXPECT_EQ(code("memory_transfer", both), I);
  EXPECT_EQ(code("memory_transfer", {{"sourceAllocationId", small_}}), I);  // half a transfer
  EXPECT_EQ(code("memory_transfer", {{"destinationAllocationId", big_}, {"sizeBytes", 1}}), I);
  EXPECT_EQ(code("memory_transfer", {{"sourceAllocationId", "not-a-guid"}, {"destinationAllocationId", big_}}), I);
  EXPECT_EQ(code("memory_transfer", {{"sourceAllocationId", small_}, {"destinationAllocationId", 7}}), I);
  json zero = one;
  zero["sizeBytes"] = 0;
  EXPECT_EQ(code("memory_transfer", zero), I);
  json negative = one;
  negative["sourceOffset"] = -1;
  EXPECT_EQ(code("memory_transfer", negative), I);
  EXPECT_EQ(code("memory_transfer", {{"transfers", json::array()}}), I);
  EXPECT_EQ(code("memory_transfer", {{"transfers", one}}), I);  // an object, not an array
  EXPECT_EQ(code("memory_transfer", {{"transfers", json::array({one, "x"})}}), I);
  EXPECT_EQ(code("memory_transfer", {{"transfers", json::array({one, {{"sourceAllocationId", small_}}})}}), I);
  json many = json::array();
  for (int k = 0; k < 1025; ++k) many.push_back(one);
  EXPECT_EQ(code("memory_transfer", {{"transfers", many}}), I);
  auto item_error = call("memory_transfer", {{"transfers", json::array({one, {{"sourceAllocationId", "zz"}, {"destinationAllocationId", big_}}})}});
  ASSERT_FALSE(item_error);
  EXPECT_NE(item_error.error().message.find("transfers[1]"), std::string::npos) << item_error.error().message;
  EXPECT_EQ(code("memory_transfer_status", {{"transferId", "../../etc"}}), I);
  EXPECT_EQ(code("memory_transfer_cancel", json::object()), I);
  EXPECT_EQ(code("memory_move", {{"allocationId", big_}}), I);  // no deviceId
  EXPECT_EQ(code("memory_move", {{"allocationId", big_}, {"deviceId", "gpu0"}}), I);
  EXPECT_EQ(code("memory_move", {{"allocationId", big_}, {"deviceId", "cpu"}, {"memoryType", "Unknown"}}), I);
  EXPECT_EQ(code("memory_copy", {{"sourceAllocationId", big_}}), I);
  EXPECT_EQ(service_->transfers().stats().submitted, 0u);
}

TEST_F(TransferActionsTest, StateTheServiceRefuses) {
  const json into_smaller = {{"sourceAllocationId", big_}, {"destinationAllocationId", small_}};
  EXPECT_EQ(code("memory_transfer", into_smaller), ErrorCode::out_of_range);
  EXPECT_EQ(code("memory_copy", into_smaller), ErrorCode::out_of_range);
  EXPECT_EQ(code("memory_transfer", {{"sourceAllocationId", small_}, {"destinationAllocationId", big_},
                                     {"sourceOffset", kMiB}}),
            ErrorCode::out_of_range);
  EXPECT_EQ(code("memory_transfer", {{"sourceAllocationId", small_}, {"destinationAllocationId", big_},
                                     {"destinationOffset", "999999999999999999"}, {"sizeBytes", 1}}),
            ErrorCode::out_of_range);
  const std::string nobody = "0b7c6f2e-1111-4222-8333-944455556666";
  EXPECT_EQ(code("memory_transfer", {{"sourceAllocationId", nobody}, {"destinationAllocationId", big_}}),
            ErrorCode::not_found);
  EXPECT_EQ(code("memory_transfer_status", {{"transferId", nobody}}), ErrorCode::not_found);
  EXPECT_EQ(code("memory_transfer_cancel", {{"transferId", nobody}}), ErrorCode::not_found);
  EXPECT_EQ(code("memory_move", {{"allocationId", big_}, {"deviceId", "host:9"}}), ErrorCode::not_found);
  EXPECT_EQ(code("memory_move", {{"allocationId", big_}, {"deviceId", "host:0"}}), ErrorCode::conflict);
  EXPECT_EQ(code("memory_move", {{"allocationId", big_}, {"deviceId", "cpu"}, {"memoryType", "VRAM"}}),
            ErrorCode::not_found);  // cpu offers no VRAM

  // A finished transfer cannot be cancelled; its report and its batch's stay readable.
  auto t = call("memory_transfer", {{"transfers", json::array({{{"sourceAllocationId", small_}, {"destinationAllocationId", big_}}})}});
  ASSERT_TRUE(t) << t.error().message;
  const std::string batch = (*t)["batchId"];
  const std::string member = (*t)["transferIds"][0];
  for (int i = 0; i < 2000; ++i) {
    auto s = call("memory_transfer_status", {{"transferId", batch}});
    ASSERT_TRUE(s) << s.error().message;
    if ((*s)["status"] == "Completed") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  auto s = call("memory_transfer_status", {{"transferId", member}});
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)["status"], "Completed");
  EXPECT_EQ((*s)["batchId"], batch);
  EXPECT_EQ((*s)["bytesDone"], kMiB / 2);
  EXPECT_EQ((*s)["progress"], 1.0);
  EXPECT_EQ(code("memory_transfer_cancel", {{"transferId", member}}), ErrorCode::conflict);
  EXPECT_EQ(code("memory_transfer_cancel", {{"transferId", batch}}), ErrorCode::conflict);
}

}  // namespace
}  // namespace memd
