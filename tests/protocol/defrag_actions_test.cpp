// memory_defragment through dispatch: hostile input (limits of zero,
// negative, huge, wrong types, unknown devices) refused with its code and a
// message naming the key; a small fragmented device defragmented through
// the action with every byte read back; a dry run that moves nothing.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "memd/size.hpp"
#include "protocol/action_table.hpp"
#include "protocol/base64.hpp"
#include "service/memory_service.hpp"
#include "dispatch_fixture.hpp"

namespace memd {
namespace {

using json = nlohmann::json;

class DefragActionsTest : public test::DispatchTest {
 protected:
  void SetUp() override { start(128 * kMiB); }
  Error refused(const json& params) { return DispatchTest::refused("memory_defragment", params); }
};

TEST_F(DefragActionsTest, HostileInputIsRefusedWithItsCodeAndKey) {
  const auto I = ErrorCode::invalid_argument;
  struct Case {
    json params;
    ErrorCode code;
    const char* key;
  } cases[] = {
      {{{"maxPasses", 0}}, I, "maxPasses"},
      {{{"maxPasses", -1}}, I, "maxPasses"},
      {{{"maxPasses", 1025}}, I, "maxPasses"},
      {{{"maxPasses", "two"}}, I, "maxPasses"},
      {{{"maxMovesPerPass", 0}}, I, "maxMovesPerPass"},
      {{{"maxMovesPerPass", 1e30}}, I, "maxMovesPerPass"},
      {{{"maxMovesPerPass", 2.5}}, I, "maxMovesPerPass"},
      {{{"maxBytesPerPass", 0}}, I, "maxBytesPerPass"},
      {{{"maxBytesPerPass", -4096}}, I, "maxBytesPerPass"},
      {{{"maxBytesPerPass", "lots"}}, I, "maxBytesPerPass"},
      {{{"maxBytesPerPass", "99999999999999999999"}}, I, "maxBytesPerPass"},
      {{{"allowRemap", "true"}}, I, "allowRemap"},
      {{{"dryRun", 1}}, I, "dryRun"},
      {{{"dryRun", nullptr}}, I, "dryRun"},
      {{{"deviceId", "gpu0"}}, I, "deviceId"},
      {{{"deviceId", 3}}, I, "deviceId"},
      {{{"deviceId", "host:9"}}, ErrorCode::not_found, "host:9"},
      {{{"deviceId", "cuda:0"}}, ErrorCode::not_found, "cuda:0"},
  };
  for (const auto& c : cases) {
    auto e = refused(c.params);
    EXPECT_EQ(e.code, c.code) << c.params.dump() << ": " << e.message;
    EXPECT_NE(e.message.find(c.key), std::string::npos) << c.params.dump() << ": " << e.message;
  }
}

TEST_F(DefragActionsTest, DefragmentsThroughTheActionEveryByteIntact) {
  std::mt19937_64 rng(5);
  std::vector<std::pair<std::string, std::string>> live;  // id, base64 bytes
  std::vector<std::pair<std::string, std::uint64_t>> made;
  for (int i = 0; i < 40; ++i) {
    const std::uint64_t size = 64 * kKiB + (rng() % 512) * kKiB;
    auto a = call("memory_allocate", {{"sizeBytes", size}, {"deviceId", "host:0"}});
    ASSERT_TRUE(a) << a.error().message;
    made.emplace_back((*a)["allocationId"].get<std::string>(), size);
  }
  for (std::size_t i = 0; i < made.size(); ++i) {
    const auto& [id, size] = made[i];
    if (i % 2 == 0) {
      ASSERT_TRUE(call("memory_deallocate", {{"allocationId", id}}));
      continue;
    }
    std::vector<std::byte> bytes(size);
    for (auto& b : bytes) b = static_cast<std::byte>(rng());
    const auto data = base64_encode(bytes);
    ASSERT_TRUE(call("memory_write", {{"allocationId", id}, {"offset", 0}, {"data", data}}));
    live.emplace_back(id, data);
  }
  auto dry = call("memory_defragment", {{"deviceId", "host:0"}, {"dryRun", true}});
  ASSERT_TRUE(dry) << dry.error().message;
  EXPECT_TRUE((*dry)["dryRun"].get<bool>()) << dry->dump();
  EXPECT_FALSE((*dry)["plan"].empty()) << dry->dump();
  EXPECT_EQ((*dry)["moves"], 0);

  auto r = call("memory_defragment", {{"deviceId", "host:0"}, {"maxMovesPerPass", 64}, {"maxBytesPerPass", "64MiB"}});
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_GT((*r)["moves"].get<std::uint64_t>(), 0u);
  EXPECT_FALSE(r->contains("plan"));
  ASSERT_EQ((*r)["devices"].size(), 1u);
  const auto& d = (*r)["devices"][0];
  EXPECT_EQ(d["deviceId"], "host:0");
  EXPECT_LE(d["fragmentationAfter"].get<double>(), 0.05);
  EXPECT_LT(d["reservedBytesAfter"].get<std::uint64_t>(), d["reservedBytesBefore"].get<std::uint64_t>());
  for (const auto& key : {"bytesMoved", "bytesRemapped", "remaps", "skipped", "passes", "durationMs", "releaseMs", "planMs"})
    EXPECT_TRUE(r->contains(key)) << key;
  for (const auto& [id, data] : live) {
    auto got = call("memory_read", {{"allocationId", id}, {"offset", 0}, {"length", base64_decode(data)->size()}});
    ASSERT_TRUE(got) << got.error().message;
    EXPECT_EQ((*got)["data"], data) << id;
  }
  EXPECT_TRUE(service_->validate());
}

}  // namespace
}  // namespace memd
