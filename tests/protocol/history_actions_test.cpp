// memory_history, memory_history_snapshot and memory_blocks through dispatch
// (the path both doors take), with hostile input: ids that are not GUIDs or not strings,
// limits of the wrong type or out of 1..4096, unknown devices and owners
// that break the owner rule. Each refusal has its code and the service
// keeps answering; the JSON shapes carry what docs/api.md promises.
#include <gtest/gtest.h>

#include <algorithm>

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

// The live block map (memory_blocks) and an out-of-memory snapshot's come
// from one walker: with nothing changed in between, they list the same
// segments and blocks.
TEST_F(HistoryActionsTest, BlocksMatchTheSnapshotsBlockMap) {
  const Caller admin = Caller::host("ops");
  std::vector<json> made;
  for (const char* size : {"4MiB", "12MiB", "8MiB", "16MiB"}) {
    auto r = call("memory_allocate", {{"sizeBytes", size}, {"deviceId", "host:0"}, {"name", size}});
    ASSERT_TRUE(r) << r.error().message;
    made.push_back(*r);
  }
  ASSERT_TRUE(call("memory_deallocate", {{"allocationId", made[1]["allocationId"]}}));  // a hole
  auto refused = call("memory_allocate", {{"sizeBytes", "48MiB"}, {"deviceId", "host:0"}});
  ASSERT_FALSE(refused);
  ASSERT_TRUE(refused.error().snapshot_id);
  auto snapshot = call("memory_history_snapshot", {{"snapshotId", *refused.error().snapshot_id}}, admin);
  ASSERT_TRUE(snapshot) << snapshot.error().message;
  auto blocks = call("memory_blocks", {{"deviceId", "host:0"}}, admin);
  ASSERT_TRUE(blocks) << blocks.error().message;
  // Less what memory_blocks adds to an arena segment (where it is mapped).
  json walked = (*blocks)["segments"];
  for (auto& seg : walked) {
    seg.erase("mappedRanges");
    seg.erase("mappedRangesOmitted");
  }
  EXPECT_EQ(walked, (*snapshot)["segments"]);
  EXPECT_EQ((*blocks)["blocksOmitted"], 0);

  // Its device-wide figures add up over the segments, and each live
  // allocation names the block at its address.
  std::uint64_t live = 0, free_blocks = 0, address_space = 0, count = 0, listed = 0, allocated = 0;
  for (const auto& seg : (*blocks)["segments"]) {
    live += seg["liveBytes"].get<std::uint64_t>();
    free_blocks += seg["freeBytes"].get<std::uint64_t>();
    address_space += seg["sizeBytes"].get<std::uint64_t>();
    count += seg["blockCount"].get<std::uint64_t>();
    listed += seg["blocks"].size();
    for (const auto& b : seg["blocks"]) {
      if (b["state"] != "allocated") continue;
      ++allocated;
      ASSERT_TRUE(b["allocation"].is_object()) << b.dump();
      EXPECT_EQ(b["allocation"]["owner"], "t");
      EXPECT_NE(b["allocation"]["allocationId"], made[1]["allocationId"]) << "a freed allocation is no block's";
    }
  }
  EXPECT_EQ(allocated, 3u);
  EXPECT_EQ((*blocks)["liveBytes"], live);
  // A virtual arena says where it is mapped: runs inside the segment, in
  // order, adding up to its mapped bytes, and every allocated block on them.
  for (const auto& seg : (*blocks)["segments"]) {
    if (seg["kind"] != "arena") continue;
    ASSERT_TRUE(seg.contains("mappedRanges")) << seg.dump().substr(0, 300);
    const std::uint64_t start = seg["address"], end = start + seg["sizeBytes"].get<std::uint64_t>();
    std::uint64_t mapped = 0, previous_end = 0;
    for (const auto& r : seg["mappedRanges"]) {
      const std::uint64_t from = r[0], bytes = r[1];
      EXPECT_GE(from, std::max(start, previous_end));
      EXPECT_LE(from + bytes, end);
      mapped += bytes;
      previous_end = from + bytes;
    }
    EXPECT_EQ(mapped, seg["mappedBytes"].get<std::uint64_t>());
    EXPECT_EQ(seg["mappedRangesOmitted"], 0);
    for (const auto& b : seg["blocks"]) {
      if (b["state"] != "allocated") continue;
      const std::uint64_t a = b["address"], n = b["sizeBytes"];
      const bool on_mapped = std::any_of(seg["mappedRanges"].begin(), seg["mappedRanges"].end(), [&](const json& r) {
        return r[0].get<std::uint64_t>() <= a && a + n <= r[0].get<std::uint64_t>() + r[1].get<std::uint64_t>();
      });
      EXPECT_TRUE(on_mapped) << b.dump();
    }
  }
  EXPECT_GE(live, 28u * kMiB);
  EXPECT_EQ((*blocks)["freeBlockBytes"], free_blocks);
  EXPECT_EQ((*blocks)["segmentBytes"], address_space);
  EXPECT_EQ((*blocks)["blockCount"], count);
  EXPECT_EQ((*blocks)["blocksReturned"], listed);
  EXPECT_EQ((*blocks)["deviceTotalBytes"], 64u * kMiB);
  // Free bytes and fragmentation are the pool's, over mapped memory (the
  // figures memory_status samples).
  ASSERT_TRUE((*blocks)["pools"].contains("VRAM"));
  const json& pool = (*blocks)["pools"]["VRAM"];
  EXPECT_EQ((*blocks)["freeBytes"], pool["freeBytes"]);
  EXPECT_EQ((*blocks)["largestFreeBytes"], pool["largestFreeBlock"]);
  const double free = pool["freeBytes"], largest = pool["largestFreeBlock"];
  EXPECT_DOUBLE_EQ((*blocks)["fragmentation"].get<double>(), free == 0 ? 0.0 : 1.0 - largest / free);

  // maxBlocks lists the first blocks and counts the rest; 0 lists none.
  ASSERT_GE(count, 3u);
  for (std::uint64_t cap : {std::uint64_t{0}, std::uint64_t{1}, count - 1, count, count + 5}) {
    auto capped = call("memory_blocks", {{"deviceId", "host:0"}, {"maxBlocks", cap}}, admin);
    ASSERT_TRUE(capped) << cap;
    const std::uint64_t shown = std::min(cap, count);
    EXPECT_EQ((*capped)["blocksReturned"], shown) << cap;
    EXPECT_EQ((*capped)["blocksOmitted"], count - shown) << cap;
    EXPECT_EQ((*capped)["blockCount"], count) << cap;
    EXPECT_EQ((*capped)["liveBytes"], live) << "figures cover the blocks left out too";
    EXPECT_EQ((*capped)["maxBlocks"], cap);
  }
}

TEST_F(HistoryActionsTest, BlocksShowOtherOwnersBySizeOnly) {
  ASSERT_TRUE(call("memory_allocate", {{"sizeBytes", "2MiB"}, {"deviceId", "host:0"}, {"name", "mine"}},
                   Caller::as("alice")));
  ASSERT_TRUE(call("memory_allocate", {{"sizeBytes", "3MiB"}, {"deviceId", "host:0"}, {"name", "theirs"}},
                   Caller::as("bob")));
  auto seen = call("memory_blocks", {{"deviceId", "host:0"}}, Caller::as("alice"));
  ASSERT_TRUE(seen) << seen.error().message;
  int mine = 0, hidden = 0;
  for (const auto& seg : (*seen)["segments"])
    for (const auto& b : seg["blocks"]) {
      if (!b["allocation"].is_object()) continue;
      if (b["allocation"]["hidden"].get<bool>()) {
        ++hidden;
        EXPECT_TRUE(b["allocation"]["owner"].is_null());
        EXPECT_TRUE(b["allocation"]["name"].is_null());
        EXPECT_TRUE(b["allocation"]["allocationId"].is_null());
        EXPECT_EQ(b["allocation"]["sizeBytes"], 3u * kMiB);
      } else {
        ++mine;
        EXPECT_EQ(b["allocation"]["owner"], "alice");
        EXPECT_EQ(b["allocation"]["name"], "mine");
      }
    }
  EXPECT_EQ(mine, 1);
  EXPECT_EQ(hidden, 1);
  auto admin = call("memory_blocks", {{"deviceId", "host:0"}}, Caller::host("ops"));
  ASSERT_TRUE(admin);
  EXPECT_EQ(admin->dump().find("\"hidden\":true"), std::string::npos) << "the admin sees every owner";
}

TEST_F(HistoryActionsTest, BlocksHostileParameters) {
  const auto I = ErrorCode::invalid_argument;
  EXPECT_EQ(code("memory_blocks", json::object()), I) << "deviceId is required";
  for (const json& device : {json(0), json(nullptr), json(""), json("gpu:0"), json("cuda:1024"), json("host:-1"),
                             json("host:0/../1"), json("host:0\n"), json(std::string(10000, 'h')), json::array()})
    EXPECT_EQ(code("memory_blocks", {{"deviceId", device}}), I) << device.dump().substr(0, 40);
  EXPECT_EQ(code("memory_blocks", {{"deviceId", "host:7"}}), ErrorCode::not_found);
  EXPECT_EQ(code("memory_blocks", {{"deviceId", "cuda:0"}}), ErrorCode::not_found) << "no GPU in this service";
  for (const json& cap : {json(-1), json(100001), json(1.5), json("ten"), json("0x10"), json(true), json(nullptr),
                          json("99999999999999999999999"), json(18446744073709551615ull), json::array(),
                          json::object()})
    EXPECT_EQ(code("memory_blocks", {{"deviceId", "host:0"}, {"maxBlocks", cap}}), I) << cap.dump();
  // Still serving; the bounds themselves are accepted (as JSON or as text).
  for (const json& cap : {json(0), json(100000), json("100000")}) {
    auto r = call("memory_blocks", {{"deviceId", "host:0"}, {"maxBlocks", cap}});
    ASSERT_TRUE(r) << cap.dump() << ": " << r.error().message;
  }
}

}  // namespace
}  // namespace memd
