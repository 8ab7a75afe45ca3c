// Memory per idle connection, measured on a real `memd serve` (issue 12: the
// target is 10,000 idle keep-alive connections plus 1,000 slow streaming
// reads within 256 MiB of resident memory beyond allocated bytes). Opens
// 2,000 connections, each served once and then left idle (the state a
// kept-alive client's connection spends its life in), and 2,000 that never
// send a byte, reading the daemon's VmRSS before and after each batch.
//
// Measured 2026-12-06 (dev build): about 750 bytes a never-used connection,
// 950 a served one. The bound (2 KiB) leaves room for allocator noise and
// still catches a regression to a coroutine, stream timers and a pending
// read per idle connection (2.7 KiB measured), let alone a read buffer (the
// 16 KiB one each connection used to prepare before its first byte).
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "server/child_process.hpp"
#include "server/process_memory.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

constexpr std::size_t kConnections = 2000;
constexpr std::uint64_t kMaxBytesPerIdleConnection = 2 * 1024;


TEST(HttpMemory, AnIdleConnectionCostsUnderTwoKiB) {
  if (kSanitized) GTEST_SKIP() << "resident memory means nothing under a sanitizer";
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "serve", "--listen", "127.0.0.1:0"});
  const auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const int port = std::stoi(banner->substr(banner->rfind(':') + 1));
  {  // warm up: the first requests grow the allocator's caches once
    std::vector<Socket> warm;
    for (int i = 0; i < 64; ++i) {
      warm.emplace_back(port);
      ASSERT_TRUE(warm.back().send(kHealthz));
      ASSERT_TRUE(answered_ok(warm.back().response()));
    }
  }
  const std::uint64_t before = settled_resident_bytes(daemon.pid());

  std::vector<Socket> served;
  served.reserve(kConnections);
  for (std::size_t i = 0; i < kConnections; ++i) {
    served.emplace_back(port);
    ASSERT_TRUE(served.back().ok()) << "connection " << i;
    ASSERT_TRUE(served.back().send(kHealthz));
    ASSERT_TRUE(answered_ok(served.back().response())) << "connection " << i;
  }
  const std::uint64_t after_served = settled_resident_bytes(daemon.pid());

  std::vector<Socket> silent;
  silent.reserve(kConnections);
  for (std::size_t i = 0; i < kConnections; ++i) {
    silent.emplace_back(port);
    ASSERT_TRUE(silent.back().ok()) << "connection " << i;
  }
  // Every silent connection has been accepted once a request behind them is.
  Socket probe(port);
  ASSERT_TRUE(probe.send(kHealthz));
  ASSERT_TRUE(answered_ok(probe.response()));
  const std::uint64_t after_silent = settled_resident_bytes(daemon.pid());

  const auto per = [](std::uint64_t from, std::uint64_t to) {
    return to > from ? (to - from) / kConnections : 0;
  };
  const std::uint64_t served_each = per(before, after_served);
  const std::uint64_t silent_each = per(after_served, after_silent);
  std::cout << "idle connection, served once then kept alive: " << served_each << " bytes of VmRSS each\n"
            << "idle connection, never sent a byte: " << silent_each << " bytes of VmRSS each\n";
  RecordProperty("served_idle_bytes_each", static_cast<int>(served_each));
  RecordProperty("silent_idle_bytes_each", static_cast<int>(silent_each));
  EXPECT_LE(served_each, kMaxBytesPerIdleConnection);
  EXPECT_LE(silent_each, kMaxBytesPerIdleConnection);

  // Still serving with all of them open.
  ASSERT_TRUE(served.front().send(kHealthz));
  EXPECT_TRUE(answered_ok(served.front().response()));
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.wait(std::chrono::seconds(15)), 0);
}

}  // namespace
}  // namespace memd::testing
