// `memd stdio`: hostile lines get error responses and the loop goes on; the
// host's allocations survive abuse and are released when stdin closes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "server/child_process.hpp"
#include "server/stdio/stdio_server.hpp"
#include "service/memory_service.hpp"

namespace memd::testing {
namespace {

using nlohmann::json;

json call(ChildProcess& memd, const std::string& line) {
  auto out = memd.call(line);
  EXPECT_TRUE(out) << line.substr(0, 100);
  return out ? json::parse(*out) : json();
}

std::string code(const json& response) { return response["error"].value("code", ""); }

TEST(Stdio, HostileLinesGetErrorsAndTheLoopGoesOn) {
  ChildProcess memd({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "stdio", "--max-line", "1MiB"});
  auto made = call(memd, R"({"id":"a","action":"memory_allocate","params":{"sizeBytes":4096,"deviceId":"host:0"}})");
  ASSERT_TRUE(made["ok"].get<bool>()) << made.dump();
  const std::string id = made["result"]["allocationId"];
  auto wrote = call(memd, R"({"id":"w","action":"memory_write","params":{"allocationId":")" + id +
                              R"(","data":"cHJlY2lvdXM="}})");
  ASSERT_TRUE(wrote["ok"].get<bool>()) << wrote.dump();

  struct Case {
    std::string line;
    json id;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"not json", nullptr, "invalid_argument"},
      {"[1,2]", nullptr, "invalid_argument"},
      {R"({"id":5})", 5, "invalid_argument"},
      {R"({"id":{"job":[1,"b"]},"action":42})", json{{"job", {1, "b"}}}, "invalid_argument"},
      {R"({"id":[3],"action":"memory_teleport"})", json::array({3}), "not_found"},
      {R"({"id":true,"action":42})", true, "invalid_argument"},
      {R"({"id":"x","action":42})", "x", "invalid_argument"},
      {R"({"id":"u","action":"memory_teleport"})", "u", "not_found"},
      {R"({"id":"p","action":"memory_status","params":[]})", "p", "invalid_argument"},
      {R"({"id":"t","action":"memory_allocate","params":{"sizeBytes":"lots"}})", "t", "invalid_argument"},
      {R"({"id":"n","action":"memory_allocate","params":{"sizeBytes":-4096}})", "n", "invalid_argument"},
      {R"({"id":"h","action":"memory_allocate","params":{"sizeBytes":9223372036854775808}})", "h", "invalid_argument"},
      {R"({"id":"g","action":"memory_deallocate","params":{"allocationId":"xyz"}})", "g", "invalid_argument"},
      {R"({"id":"f","action":"memory_deallocate","params":{"allocationId":"a1b2c3d4-e5f6-4890-abcd-ef1234567890"}})", "f", "not_found"},
      {R"({"id":"b","action":"memory_write","params":{"allocationId":")" + id + R"(","data":"!!"}})", "b", "invalid_argument"},
      {R"({"id":"o","action":"memory_read","params":{"allocationId":")" + id + R"(","offset":4000,"length":200}})", "o", "out_of_range"},
      {R"({"id":"q","action":"memory_write","params":{"allocationId":")" + id + R"(","offset":4095,"data":"aGk="}})", "q", "out_of_range"},
      {std::string(100000, '['), nullptr, "invalid_argument"},
      {std::string(2 * 1024 * 1024, ' ') + "{}", nullptr, "payload_too_large"},
  };
  for (const auto& c : cases) {
    auto r = call(memd, c.line);
    EXPECT_FALSE(r.value("ok", true)) << c.line.substr(0, 80);
    EXPECT_EQ(r["id"], c.id) << c.line.substr(0, 80);
    EXPECT_EQ(code(r), c.code) << c.line.substr(0, 80) << " → " << r.dump();
  }
  auto back = call(memd, R"({"id":"r","action":"memory_read","params":{"allocationId":")" + id + R"(","length":8}})");
  EXPECT_EQ(back["result"]["data"], "cHJlY2lvdXM=");  // "precious", intact
  memd.close_stdin();
  EXPECT_EQ(memd.wait(), 0);
}

TEST(Stdio, EndOfInputReleasesEverythingTheHostAllocated) {
  ServiceOptions options;
  options.backends.host_device_sizes = {64 * kMiB};
  options.backends.enable_cuda = false;
  auto service = MemoryService::create(options);
  ASSERT_TRUE(service);
  // Another owner's memory must survive the host's exit.
  AllocationRequest other;
  other.size_bytes = kMiB;
  other.device = DeviceId::host(0);
  ASSERT_TRUE((*service)->allocate(Caller::as("someone-else"), other));

  int in[2], out[2];
  ASSERT_EQ(::pipe(in), 0);
  ASSERT_EQ(::pipe(out), 0);
  int exit_code = -1;
  std::thread loop([&] {
    exit_code = run_stdio(**service, {.max_line = kMiB, .owner = "host-a"}, in[0], out[1]);
    ::close(out[1]);
  });
  FILE* responses = ::fdopen(out[0], "r");
  auto send = [&](const std::string& line) {
    const std::string text = line + "\n";
    ASSERT_EQ(::write(in[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
    char buf[65536];
    ASSERT_NE(std::fgets(buf, sizeof buf, responses), nullptr);
    EXPECT_TRUE(json::parse(buf)["ok"].get<bool>()) << buf;
  };
  for (int i = 0; i < 3; ++i)
    send(R"({"id":1,"action":"memory_allocate","params":{"sizeBytes":"1MiB","deviceId":"host:0"}})");
  auto before = (*service)->status(DeviceId::host(0));
  EXPECT_EQ(before->devices[0].allocations, 4u);
  EXPECT_EQ((*service)->usage().by_owner["host-a"].allocations, 3u);

  ::close(in[1]);  // the host goes away
  loop.join();
  std::fclose(responses);
  ::close(in[0]);
  EXPECT_EQ(exit_code, 0);
  auto after = (*service)->status(DeviceId::host(0));
  EXPECT_EQ(after->devices[0].allocations, 1u);
  EXPECT_EQ(after->devices[0].allocated_bytes, kMiB);
  EXPECT_FALSE((*service)->usage().by_owner.contains("host-a"));
}

}  // namespace
}  // namespace memd::testing
