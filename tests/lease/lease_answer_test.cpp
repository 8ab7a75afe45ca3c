// parse_lease_answer: what a leasing process believes of the daemon's answer.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lease/lease_client.hpp"

namespace memd {
namespace {

using nlohmann::json;

json good() {
  return {{"leaseId", "11111111-2222-4333-8444-555555555555"},
          {"owner", "w"},
          {"deviceId", "cuda:0"},
          {"sizeBytes", 2097152},
          {"mapSize", 2097152},
          {"handleType", "cuda-posix-fd"},
          {"gpuUuid", "GPU-1"},
          {"fds", 1}};
}

TEST(LeaseAnswer, AGoodAnswerIsRead) {
  auto g = parse_lease_answer(good());
  ASSERT_TRUE(g) << g.error().message;
  EXPECT_EQ(g->lease_id, "11111111-2222-4333-8444-555555555555");
  EXPECT_EQ(g->kind, ShareableKind::CudaPosixFd);
  EXPECT_EQ(g->map_size, 2097152u);
  EXPECT_EQ(g->gpu_uuid, "GPU-1");
  auto host = good();
  host["handleType"] = "memfd";
  host["gpuUuid"] = nullptr;
  auto h = parse_lease_answer(host);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->kind, ShareableKind::Memfd);
  EXPECT_TRUE(h->gpu_uuid.empty());
}

TEST(LeaseAnswer, EveryBrokenKeyIsRefused) {
  std::vector<std::pair<std::string, json>> broken = {
      {"leaseId", nullptr},  {"leaseId", 5},        {"deviceId", json::array()}, {"sizeBytes", 0},
      {"sizeBytes", -4},     {"sizeBytes", "2MiB"}, {"mapSize", 1024},           {"mapSize", 1.5},
      {"handleType", "dmabuf"}, {"handleType", 1},  {"gpuUuid", 3},              {"fds", 0},
      {"fds", 2},            {"fds", "1"}};
  for (const auto& [key, value] : broken) {
    auto a = good();
    a[key] = value;
    auto g = parse_lease_answer(a);
    EXPECT_FALSE(g) << key << "=" << value.dump();
    if (!g) {
      EXPECT_EQ(g.error().code, ErrorCode::invalid_argument);
    }
  }
  for (const char* key : {"leaseId", "deviceId", "sizeBytes", "mapSize", "handleType", "fds"}) {
    auto a = good();
    a.erase(key);
    EXPECT_FALSE(parse_lease_answer(a)) << "without " << key;
  }
  EXPECT_FALSE(parse_lease_answer(json::array()));
  EXPECT_FALSE(parse_lease_answer(json("text")));
}

}  // namespace
}  // namespace memd
