// Memory another process maps, end to end: a real `memd serve` with --tokens
// and --socket; alice allocates an exportable host-device allocation, writes
// bytes over REST and exports it for `worker`. A second process (python3
// with its standard library: tools/memd_import.py) proves it is worker over
// the socket, receives the memfd, reads alice's bytes and writes new ones,
// which memd then reads back over REST. mallory, not among the export's
// owners, is refused; a non-exportable allocation cannot be exported; a
// second release is not_found; and an allocation whose owner freed it (its
// session ended) stays counted while an importer holds it, and goes once the
// importer's connection closes. Skips where python3 cannot receive
// descriptors (socket.recv_fds, 3.9+).
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <sys/wait.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "api_client.hpp"
#include "server/child_process.hpp"

namespace memd::testing {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

std::string python3() {
  testing::ChildProcess probe({"/usr/bin/env", "python3", "-c",
                               "import socket, sys; sys.exit(0 if hasattr(socket, 'recv_fds') else 3)"});
  return probe.started() && probe.wait(30s) == 0 ? "python3" : "";
}

class ExportImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (python3().empty()) GTEST_SKIP() << "python3 3.9+ (socket.recv_fds) is not available: the peer cannot run";
    char pattern[] = "/tmp/memd-export-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    const std::string tokens = dir_ + "/tokens";
    {
      std::ofstream out(tokens);
      out << "alice-token alice\nworker-token worker\nmallory-token mallory\nops-token ops admin\n";
    }
    ::chmod(tokens.c_str(), 0600);
    socket_ = dir_ + "/memd.sock";
    daemon_ = std::make_unique<ChildProcess>(std::vector<std::string>{
        MEMD_BINARY, "--no-cuda", "--host-device", "128MiB", "serve", "--listen", "127.0.0.1:0", "--tokens", tokens,
        "--socket", socket_});
    ASSERT_TRUE(daemon_->started());
    for (int i = 0; i < 2 && url_.empty(); ++i) {
      auto line = daemon_->read_line(30s);
      ASSERT_TRUE(line) << "no banner";
      if (auto at = line->find("http://"); at != std::string::npos) url_ = line->substr(at);
    }
  }
  void TearDown() override {
    if (daemon_) {
      daemon_->signal(SIGTERM);
      EXPECT_EQ(daemon_->wait(30s), 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  cli::ApiClient as(const std::string& token, const std::string& session = "") {
    cli::ClientOptions o;
    o.url = url_;
    o.token = token;
    o.session = session;
    return cli::ApiClient(o);
  }
  std::unique_ptr<ChildProcess> peer(std::vector<std::string> args) {
    std::vector<std::string> argv{"/usr/bin/env", "python3", std::string(MEMD_SOURCE_DIR) + "/tools/memd_import.py",
                                  "--socket", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<ChildProcess>(argv);
  }
  struct Run {
    int status = -1;
    std::string out;
  };
  Run run_peer(std::vector<std::string> args) {
    auto p = peer(std::move(args));
    Run r;
    while (auto line = p->read_line(30s)) r.out += *line + "\n";
    r.status = p->wait(30s);
    return r;
  }
  std::string dir_, socket_, url_;
  std::unique_ptr<ChildProcess> daemon_;
};

// Bytes through the REST door's stdio-shaped JSON route would need base64;
// memory_copy and the transfer tests cover bytes over REST. Here the bytes go
// through a second allocation: alice writes with memory_write over the
// stdio bridge's JSON shape, i.e. POST /api/stdio.
json stdio_call(cli::ApiClient& api, const std::string& action, const json& params) {
  auto r = api.post("/api/stdio", {{"id", "1"}, {"action", action}, {"params", params}});
  EXPECT_TRUE(r) << (r ? "" : r.error().message);
  return r ? *r : json{};
}

TEST_F(ExportImportTest, ASecondProcessReadsAndWritesTheExportedBytes) {
  auto alice = as("alice-token");
  auto made = alice.post("/api/memory/allocations",
                         {{"sizeBytes", 1 << 20}, {"deviceId", "host:0"}, {"exportable", true}});
  ASSERT_TRUE(made) << made.error().message;
  const std::string id = (*made)["allocationId"];
  EXPECT_EQ((*made)["exportable"], true);
  EXPECT_EQ((*made)["pinned"], true);
  // "hello, worker" at offset 100.
  auto w = stdio_call(alice, "memory_write", {{"allocationId", id}, {"offset", 100}, {"data", "aGVsbG8sIHdvcmtlcg=="}});
  ASSERT_TRUE(w.value("ok", false)) << w.dump();

  auto exported = alice.post("/api/memory/allocations/" + id + "/export", {{"owners", {"worker"}}});
  ASSERT_TRUE(exported) << exported.error().message;
  const std::string export_id = (*exported)["exportId"];
  EXPECT_EQ((*exported)["socket"], socket_);
  EXPECT_EQ((*alice.get("/api/memory/allocations/" + id))["status"], "Exported");

  // The worker's process reads alice's bytes and writes its own.
  auto read = run_peer({"--token", "worker-token", "--offset", "100", "--read", "13", export_id});
  EXPECT_EQ(read.status, 0) << read.out;
  EXPECT_EQ(read.out, "68656c6c6f2c20776f726b6572\n");  // "hello, worker"
  auto wrote = run_peer({"--token", "worker-token", "--offset", "4096", "--write-hex", "c0ffee00beef", export_id});
  EXPECT_EQ(wrote.status, 0) << wrote.out;
  auto back = stdio_call(alice, "memory_read", {{"allocationId", id}, {"offset", 4096}, {"length", 6}});
  EXPECT_EQ(back["result"]["data"], "wP/uAL7v") << back.dump();  // c0 ff ee 00 be ef

  // mallory is not among the export's owners: refused (exit 2), nothing mapped.
  auto refused = run_peer({"--token", "mallory-token", "--read", "4", export_id});
  EXPECT_EQ(refused.status, 2) << refused.out;
  // A wrong token never gets as far.
  auto stranger = run_peer({"--token", "nope", "--read", "4", export_id});
  EXPECT_EQ(stranger.status, 2) << stranger.out;

  // A plain allocation cannot be exported; a second release is not_found.
  auto plain = alice.post("/api/memory/allocations", {{"sizeBytes", 4096}, {"deviceId", "host:0"}});
  ASSERT_TRUE(plain);
  auto no = alice.post("/api/memory/allocations/" + (*plain)["allocationId"].get<std::string>() + "/export",
                       {{"owners", {"worker"}}});
  ASSERT_FALSE(no);
  EXPECT_EQ(no.error().code, ErrorCode::conflict) << no.error().message;
  // mallory cannot export alice's allocation for herself.
  auto steal = as("mallory-token").post("/api/memory/allocations/" + id + "/export", {{"owners", {"mallory"}}});
  ASSERT_FALSE(steal);
  EXPECT_EQ(steal.error().code, ErrorCode::permission_denied) << steal.error().message;
  auto released = alice.del("/api/memory/allocations/" + id + "/export/" + export_id);
  ASSERT_TRUE(released) << released.error().message;
  EXPECT_EQ((*released)["released"], true);
  EXPECT_EQ((*alice.get("/api/memory/allocations/" + id))["status"], "Allocated");
  auto again = alice.del("/api/memory/allocations/" + id + "/export/" + export_id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::not_found) << again.error().message;
  // A released export imports no more.
  auto late = run_peer({"--token", "worker-token", "--read", "4", export_id});
  EXPECT_EQ(late.status, 2) << late.out;
}

TEST_F(ExportImportTest, AnImporterKeepsTheMemoryCountedAfterTheOwnersSessionEnds) {
  auto alice = as("alice-token");
  auto session = alice.post("/api/sessions", {{"ttlSeconds", 30}});
  ASSERT_TRUE(session) << session.error().message;
  const std::string sid = (*session)["sessionId"];
  auto in_session = as("alice-token", sid);
  auto made = in_session.post("/api/memory/allocations",
                              {{"sizeBytes", 8 << 20}, {"deviceId", "host:0"}, {"exportable", true}});
  ASSERT_TRUE(made) << made.error().message;
  const std::string id = (*made)["allocationId"];
  auto exported = alice.post("/api/memory/allocations/" + id + "/export", {{"owners", {"worker"}}});
  ASSERT_TRUE(exported);
  // The worker maps it and holds its connection open.
  auto holder = peer({"--token", "worker-token", "--read", "1", "--hold", "30", (*exported)["exportId"]});
  ASSERT_TRUE(holder->read_line(30s)) << "the importer did not map the memory";
  ASSERT_TRUE(alice.del("/api/sessions/" + sid));  // frees what the session held
  auto usage = [&] {
    auto u = as("ops-token").get("/api/memory/usage");
    return u ? (*u)["byDevice"].value("host:0", json::object()).value("requestedBytes", std::uint64_t{0}) : 0;
  };
  EXPECT_EQ(usage(), std::uint64_t{8} << 20) << "the importer's memory must stay counted";
  auto details = alice.get("/api/memory/allocations/" + id);
  ASSERT_TRUE(details) << details.error().message;
  EXPECT_EQ((*details)["status"], "Freeing");
  // The importer goes: the memory goes with it.
  holder->signal(SIGTERM);
  (void)holder->wait(30s);
  for (int i = 0; i < 500 && usage() != 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(usage(), 0u);
  EXPECT_FALSE(alice.get("/api/memory/allocations/" + id));
}

// The CLI verbs: allocate --exportable, export --for, export-release.
TEST_F(ExportImportTest, TheCliExportsAndReleases) {
  auto cli = [&](const std::string& args) {
    const std::string command = std::string(MEMD_BINARY) + " " + args + " --url " + url_ + " --token alice-token 2>&1";
    std::string out;
    FILE* p = ::popen(command.c_str(), "r");
    char buf[4096];
    while (p && std::fgets(buf, sizeof buf, p)) out += buf;
    const int status = p ? ::pclose(p) : -1;
    return std::pair{WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
  };
  auto [code, made] = cli("allocate 1MiB --device host:0 --exportable --json");
  ASSERT_EQ(code, 0) << made;
  const std::string id = json::parse(made)["allocationId"];
  auto [code2, exported] = cli("export " + id + " --for worker --json");
  ASSERT_EQ(code2, 0) << exported;
  const std::string export_id = json::parse(exported)["exportId"];
  auto read = run_peer({"--token", "worker-token", "--read", "4", export_id});
  EXPECT_EQ(read.status, 0) << read.out;
  EXPECT_EQ(read.out, "00000000\n");  // fresh memory reads as zero
  auto [code3, released] = cli("export-release " + id + " " + export_id);
  EXPECT_EQ(code3, 0) << released;
  EXPECT_NE(released.find("released"), std::string::npos) << released;
  auto [code4, again] = cli("export-release " + id + " " + export_id);
  EXPECT_EQ(code4, 1) << again;
  EXPECT_NE(again.find("not_found"), std::string::npos) << again;
  auto [code5, plain] = cli("allocate 4KiB --device host:0 --json");
  ASSERT_EQ(code5, 0);
  auto [code6, refused] = cli("export " + json::parse(plain)["allocationId"].get<std::string>() + " --for worker");
  EXPECT_EQ(code6, 1) << refused;
  EXPECT_NE(refused.find("conflict"), std::string::npos) << refused;
}

}  // namespace
}  // namespace memd::testing
