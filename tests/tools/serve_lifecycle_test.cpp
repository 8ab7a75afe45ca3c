// `memd serve`'s end of life (issue 12, item 6): SIGTERM stops accepting,
// closes idle connections, lets a request in flight finish, logs what it
// releases (a summary, then each owner with its allocations) and exits 0.
// With --log-level debug every request has its own log line.
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "server/child_process.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string allocate(Socket& client, std::string_view owner, std::uint64_t size) {
  const std::string body = R"({"sizeBytes": )" + std::to_string(size) + R"(, "deviceId": "host:0"})";
  const std::string request = "POST /api/memory/allocations HTTP/1.1\r\nHost: memd\r\nX-Memd-Owner: " +
                              std::string(owner) + "\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  if (!client.send(request)) return "";
  const auto answer = client.response();
  if (!answer || !answer->starts_with("HTTP/1.1 201")) return "";
  return nlohmann::json::parse(body_of(*answer))["allocationId"];
}

TEST(ServeLifecycle, SigtermFinishesTheRequestInFlightLogsWhatItReleasesAndExitsZero) {
  const auto log_path = std::filesystem::path(::testing::TempDir()) /
                        ("memd_lifecycle_" + std::to_string(::getpid()) + ".log");
  // The shell only redirects stderr; exec leaves memd as the child itself.
  ChildProcess daemon({"/bin/sh", "-c",
                       std::string("exec ") + MEMD_BINARY +
                           " --no-cuda --host-device 64MiB serve --listen 127.0.0.1:0 --log-level debug 2>" +
                           log_path.string()});
  const auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const int port = std::stoi(banner->substr(banner->rfind(':') + 1));

  Socket client(port);
  const std::string kept = allocate(client, "lifecycle-owner", 64 * kKiB);
  const std::string target = allocate(client, "uploader", 4 * kMiB);
  ASSERT_FALSE(kept.empty());
  ASSERT_FALSE(target.empty());

  // A request in flight: its header and a first part of its body.
  const std::string bytes = pattern_bytes(4 * kMiB, 17);
  Socket upload(port);
  ASSERT_TRUE(upload.send("PUT /api/memory/allocations/" + target + "/data HTTP/1.1\r\nHost: memd\r\nX-Memd-Owner: uploader\r\n"
                          "Content-Length: " + std::to_string(bytes.size()) + "\r\n\r\n"));
  ASSERT_TRUE(upload.send(std::string_view(bytes).substr(0, kMiB)));
  std::this_thread::sleep_for(milliseconds(200));

  daemon.signal(SIGTERM);
  // The idle connection is closed; new ones are refused.
  EXPECT_TRUE(client.closed_within(milliseconds(5000))) << "an idle connection outlived the shutdown";
  bool refused = false;
  for (int i = 0; i < 50 && !refused; ++i) {
    Socket late(port);
    refused = !late.ok() || late.closed_within(milliseconds(100));
    if (!refused) std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_TRUE(refused) << "still accepting after SIGTERM";
  // The upload in flight finishes, answered, and its connection then closes.
  ASSERT_TRUE(upload.send(std::string_view(bytes).substr(kMiB)));
  const auto answer = upload.response(milliseconds(10'000));
  ASSERT_TRUE(answered_ok(answer)) << answer.value_or("(no answer)");
  EXPECT_NE(answer->find("Connection: close"), std::string::npos) << *answer;
  EXPECT_EQ(nlohmann::json::parse(body_of(*answer))["bytesWritten"], bytes.size());

  EXPECT_EQ(daemon.wait(std::chrono::seconds(15)), 0);
  const std::string log = read_file(log_path);
  std::filesystem::remove(log_path);
  EXPECT_NE(log.find("shutdown: releasing 2 allocation(s)"), std::string::npos) << log;
  // One line per owner, naming its allocation.
  const auto owner_line = log.find("owner 'lifecycle-owner'");
  ASSERT_NE(owner_line, std::string::npos) << log;
  EXPECT_NE(log.substr(owner_line, log.find('\n', owner_line) - owner_line).find(kept), std::string::npos) << log;
  EXPECT_NE(log.find("owner 'uploader'"), std::string::npos) << log;
  // Debug: a line per request; info: the access summary before exit.
  EXPECT_NE(log.find("PUT /api/memory/allocations/" + target + "/data 200 in 4194304"), std::string::npos) << log;
  EXPECT_NE(log.find("http: 3 requests (2xx 3"), std::string::npos) << log;
}

TEST(ServeLifecycle, AnUnknownLogLevelIsRefused) {
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "serve", "--listen", "127.0.0.1:0", "--log-level", "loud"});
  EXPECT_EQ(daemon.wait(), 1);
}

}  // namespace
}  // namespace memd::testing
