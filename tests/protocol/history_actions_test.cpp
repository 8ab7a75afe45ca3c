// memory_history and memory_history_snapshot through dispatch (the path both
// doors take), with hostile input: ids that are not GUIDs or not strings,
// limits of the wrong type or out of 1..4096, unknown devices and owners
// that break the owner rule. Each refusal has its code and the service
// keeps answering; the JSON shapes carry what docs/api.md promises.
#include <gtest/gtest.h>

#include "memd/size.hpp"
#include "protocol/action_table.hpp"
#include "protocol/actions/history_actions.hpp"
#include "service/memory_service.hpp"
#include "dispatch_fixture.hpp"

namespace memd {
namespace {

using json = nlohmann::json;

class HistoryActionsTest : public test::DispatchTest {
 protected:
  void SetUp() override { start(64 * kMiB); }
  ErrorCode code(std::string_view action, const json& params) { return refused(action, params).code; }
};

TEST_F(HistoryActionsTest, HostileParameters) {
  const auto I = ErrorCode::invalid_argument;
  for (const json& id : {json(42), json(nullptr), json::array(), json::object(), json(true), json(""),
                         json("not-a-guid"), json("12345678-1234-1234-1234-1234567890abc"),
                         json(std::string(100000, 'a'))})
    EXPECT_EQ(code("memory_history_snapshot", {{"snapshotId", id}}), I) << id.dump().substr(0, 40);
  EXPECT_EQ(code("memory_history_snapshot", json::object()), I);
  EXPECT_EQ(code("memory_history_snapshot", {{"snapshotId", "12345678-1234-4234-8234-1234567890ab"}}),
            ErrorCode::not_found);
  for (const json& limit : {json(0), json(4097), json(-1), json(1.5), json("0x10"), json(true), json(nullptr),
                            json("99999999999999999999999"), json(18446744073709551615ull), json::array()})
    EXPECT_EQ(code("memory_history", {{"limit", limit}}), I) << limit.dump();
  EXPECT_EQ(code("memory_history", {{"deviceId", "cuda:1024"}}), I);
  EXPECT_EQ(code("memory_history", {{"deviceId", 0}}), I);
  EXPECT_EQ(code("memory_history", {{"deviceId", "host:3"}}), ErrorCode::not_found);
  EXPECT_EQ(code("memory_history", {{"owner", ""}}), I);
  EXPECT_EQ(code("memory_history", {{"owner", std::string(129, 'o')}}), I);
  EXPECT_EQ(code("memory_history", {{"owner", "bad\nowner"}}), I);
  EXPECT_EQ(code("memory_history", {{"owner", "someone-else"}}), ErrorCode::permission_denied);

  // Still serving: the limits that are allowed work.
  ASSERT_TRUE(call("memory_allocate", {{"sizeBytes", "1MiB"}, {"deviceId", "host:0"}}));
  for (const json& limit : {json(1), json("4096"), json(4096)}) {
    auto r = call("memory_history", {{"limit", limit}});
    ASSERT_TRUE(r) << limit.dump();
    EXPECT_EQ((*r)["entries"].size(), 1u);
  }
}

TEST_F(HistoryActionsTest, WireShapes) {
  ASSERT_TRUE(call("memory_allocate", {{"sizeBytes", "40MiB"}, {"deviceId", "host:0"}, {"name", "w"}}));
  auto refused = call("memory_allocate", {{"sizeBytes", "40MiB"}, {"deviceId", "host:0"}});
  ASSERT_FALSE(refused);
  ASSERT_EQ(refused.error().code, ErrorCode::out_of_memory);
  ASSERT_TRUE(refused.error().snapshot_id);
  auto r = call("memory_history", json::object());
  ASSERT_TRUE(r);
  const json& entries = (*r)["entries"];
  ASSERT_EQ(entries.size(), 2u);
  const json& a = entries[0];
  for (const char* key : {"sequence", "kind", "time", "deviceId", "allocationId", "owner", "name", "memoryType",
                          "priority", "sizeBytes", "blockBytes", "reservedBytes", "allocatedBytes",
                          "liveAllocations", "hidden"})
    EXPECT_TRUE(a.contains(key)) << key;
  EXPECT_EQ(a["kind"], "allocate");
  EXPECT_EQ(a["owner"], "t");
  EXPECT_EQ(entries[1]["kind"], "failed");
  EXPECT_EQ(entries[1]["code"], "out_of_memory");
  EXPECT_TRUE(entries[1]["allocationId"].is_null());
  EXPECT_EQ(entries[1]["snapshotId"], *refused.error().snapshot_id);

  auto s = call("memory_history_snapshot", {{"snapshotId", *refused.error().snapshot_id}});
  ASSERT_TRUE(s) << s.error().message;
  for (const char* key : {"snapshotId", "time", "request", "deviceTotalBytes", "largestFreeBlockBytes", "holders",
                          "allocations", "allocationsOmitted", "history", "historyDroppedEntries", "segments",
                          "blocksOmitted", "pools"})
    EXPECT_TRUE(s->contains(key)) << key;
  EXPECT_EQ((*s)["request"]["refusedBy"], "pool");
  EXPECT_EQ((*s)["history"].size(), 2u);
  EXPECT_TRUE((*s)["pools"].contains("VRAM"));
  ASSERT_FALSE((*s)["segments"].empty());
  EXPECT_TRUE((*s)["segments"][0]["blocks"][0].contains("allocation"));
  // Someone else: refused, not shown.
  auto other = call("memory_history_snapshot", {{"snapshotId", *refused.error().snapshot_id}}, Caller::as("u"));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, ErrorCode::permission_denied);
}

}  // namespace
}  // namespace memd
