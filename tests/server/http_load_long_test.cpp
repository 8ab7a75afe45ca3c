// The connection-load target of issue 12, measured on a real `memd serve`:
// 10,000 idle keep-alive connections plus 1,000 slow streaming reads of a
// 256 MiB allocation, with the daemon's resident memory minus its allocated
// bytes at most 256 MiB. The readers ask for the whole allocation and then
// read nothing, so each download stalls with its pieces in flight — the
// worst case for memory. Label `long` (two minutes on the dev build, 22,000 sockets):
// run it with `ctest -L long` or the executable directly. The numbers it
// prints are in docs/architecture.md ("Memory per connection").
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/child_process.hpp"
#include "server/process_memory.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

constexpr std::size_t kIdle = 10'000;
constexpr std::size_t kReaders = 1'000;
constexpr std::uint64_t kAllocation = 256 * kMiB;
constexpr std::uint64_t kBudget = 256 * kMiB;


TEST(HttpLoad, TenThousandIdleAndAThousandStalledReadsFitTheBudget) {
  if (kSanitized) GTEST_SKIP() << "resident memory means nothing under a sanitizer";
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);  // the daemon inherits it
  if (files.rlim_cur < kIdle + kReaders + 200) GTEST_SKIP() << "needs " << kIdle + kReaders + 200 << " descriptors";

  // The readers stay stalled while the test measures (a minute or more on a
  // loaded machine): longer than the default 30 s a stalled reader is given.
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "--host-device", "512MiB", "serve", "--listen", "127.0.0.1:0",
                       "--write-timeout", "600"});
  const auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const int port = std::stoi(banner->substr(banner->rfind(':') + 1));

  Socket setup(port);
  const std::string body = R"({"sizeBytes": "256MiB", "deviceId": "host:0"})";
  ASSERT_TRUE(setup.send("POST /api/memory/allocations HTTP/1.1\r\nHost: memd\r\nContent-Type: application/json\r\n"
                         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  const auto made = setup.response();
  ASSERT_TRUE(made && made->starts_with("HTTP/1.1 201"));
  const std::string id = nlohmann::json::parse(body_of(*made))["allocationId"];
  // Touch every page, so the allocation is resident and counted once.
  const std::string bytes = pattern_bytes(kAllocation, 1);
  ASSERT_TRUE(setup.send("PUT /api/memory/allocations/" + id + "/data HTTP/1.1\r\nHost: memd\r\nContent-Length: " +
                         std::to_string(bytes.size()) + "\r\n\r\n" + bytes));
  ASSERT_TRUE(answered_ok(setup.response(milliseconds(120'000))));
  const std::uint64_t baseline = settled_resident_bytes(daemon.pid());

  std::vector<Socket> idle;
  idle.reserve(kIdle);
  for (std::size_t i = 0; i < kIdle; ++i) {
    idle.emplace_back(port);
    ASSERT_TRUE(idle.back().ok()) << i;
    if (i % 2 == 0) {  // half served once, half never a byte
      ASSERT_TRUE(idle.back().send(kHealthz));
      ASSERT_TRUE(answered_ok(idle.back().response())) << i;
    }
  }
  const std::uint64_t with_idle = settled_resident_bytes(daemon.pid());

  std::vector<Socket> readers;
  readers.reserve(kReaders);
  const std::string get = "GET /api/memory/allocations/" + id + "/data HTTP/1.1\r\nHost: memd\r\n\r\n";
  for (std::size_t i = 0; i < kReaders; ++i) {
    readers.emplace_back(port);
    readers.back().set_receive_buffer(128 * 1024);
    ASSERT_TRUE(readers.back().send(get)) << i;
  }
  ASSERT_TRUE(setup.send(kHealthz));
  EXPECT_TRUE(answered_ok(setup.response(milliseconds(30'000)))) << "not served with the readers stalled";
  const std::uint64_t with_readers = settled_resident_bytes(daemon.pid());

  const std::uint64_t over_allocated = with_readers - kAllocation;
  std::cout << "baseline (with the 256 MiB allocation): " << baseline / kMiB << " MiB\n"
            << "per idle connection: " << (with_idle - baseline) / kIdle << " B\n"
            << "per stalled reader: " << (with_readers - with_idle) / kReaders << " B\n"
            << "resident minus allocated: " << over_allocated / kMiB << " MiB (budget " << kBudget / kMiB << ")\n";
  EXPECT_LE(over_allocated, kBudget);

  // A reader that reads gets every byte; then all go away and the daemon stops.
  const auto whole = readers.front().response(milliseconds(120'000));
  ASSERT_TRUE(answered_ok(whole));
  EXPECT_TRUE(body_of(*whole) == bytes);
  readers.clear();
  idle.clear();
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.wait(std::chrono::seconds(30)), 0);
}

}  // namespace
}  // namespace memd::testing
