// tools/memd_import.py (the Python standard-library peer of the socket door)
// against the real door and a tiny handler that answers memory_import with a
// memfd: it reads the bytes at the allocation's offset inside the mapping,
// writes where it is told (the handler sees the bytes), reports memd's
// refusals with exit status 2, and holds its import while --hold runs.
// Skips, saying why, where python3 (3.9+, for socket.recv_fds) is missing.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include "server/child_process.hpp"
#include "server/socket/unix_socket_server.hpp"
#include "server/socket_test_support.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

const std::string kExport = "11111111-2222-4333-8444-555555555555";
// Where the allocation sits in the memfd: the handler maps from page 1, and
// the allocation starts 100 bytes into that mapping.
constexpr std::size_t kFileBytes = 3 * 4096;
constexpr std::size_t kMapOffset = 4096;
constexpr std::size_t kMapSize = 2 * 4096;
constexpr std::size_t kOffset = 100;
constexpr std::size_t kSizeBytes = 5000;
constexpr std::uint64_t kSeed = 9;

// memory_import of kExport → a descriptor of its memfd; anything else is
// not_found, as memd answers an unknown export.
class PatternImportHandler : public SocketHandler {
 public:
  PatternImportHandler() : memfd_(testing::pattern_memfd(kSeed, kFileBytes)) {}
  ~PatternImportHandler() override {
    if (memfd_ >= 0) ::close(memfd_);
  }

  Result<void> admit(const Caller&, const SocketPeer&) override { return {}; }
  Result<SocketReply> handle(const Caller& caller, std::string_view action, const json& params,
                             const SocketPeer& peer) override {
    if (action != "memory_import") return fail(ErrorCode::not_found, "unknown action '{}'", action);
    if (params.value("exportId", "") != kExport)
      return fail(ErrorCode::not_found, "no export {}", params.value("exportId", "?"));
    {
      std::lock_guard lock(mu_);
      importer_ = caller.owner;
      imports_.push_back(peer.connection);
    }
    return SocketReply{{{"exportId", kExport},
                        {"mapOffset", kMapOffset},
                        {"mapSize", kMapSize},
                        {"offset", kOffset},
                        {"sizeBytes", kSizeBytes}},
                       {::dup(memfd_)}};
  }
  void closed(const SocketPeer& peer) override {
    std::lock_guard lock(mu_);
    closed_.push_back(peer.connection);
  }

  std::size_t imports() const {
    std::lock_guard lock(mu_);
    return imports_.size();
  }
  std::size_t closed() const {
    std::lock_guard lock(mu_);
    return closed_.size();
  }
  std::string importer() const {
    std::lock_guard lock(mu_);
    return importer_;
  }
  // `n` bytes at `at` inside the allocation, as the memfd holds them now.
  std::vector<std::uint8_t> bytes(std::size_t at, std::size_t n) const {
    std::vector<std::uint8_t> out(n);
    EXPECT_EQ(::pread(memfd_, out.data(), n, static_cast<off_t>(kMapOffset + kOffset + at)),
              static_cast<ssize_t>(n));
    return out;
  }

 private:
  int memfd_;
  mutable std::mutex mu_;
  std::string importer_;
  std::vector<std::uint64_t> imports_;
  std::vector<std::uint64_t> closed_;
};

std::string hex(const std::vector<std::uint8_t>& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (auto b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

// python3 on PATH, able to receive descriptors; empty when there is none.
// Looked for once per test run.
std::string find_python_on_path() {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/python3";
    if (::access(candidate.c_str(), X_OK) != 0) continue;
    testing::ChildProcess probe({candidate, "-c", "import socket, sys; sys.exit(0 if hasattr(socket, 'recv_fds') else 3)"});
    if (probe.started() && probe.wait(30s) == 0) return candidate;
  }
  return {};
}
const std::string& find_python() {
  static const std::string python = find_python_on_path();
  return python;
}

class MemdImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    python_ = find_python();
    if (python_.empty())
      GTEST_SKIP() << "python3 (3.9 or later, for socket.recv_fds) is not on PATH: tools/memd_import.py is not "
                      "tested here";
    ASSERT_TRUE(dir_.ok());
    server_ = std::make_unique<UnixSocketServer>(path_, handler_, CallerResolver("", {{"alice-token", "alice", false, 1}}));
    auto ok = server_->start();
    ASSERT_TRUE(ok) << ok.error().message;
  }

  // Runs the tool with `args` after the socket and token; its stdout lines
  // and exit status.
  struct Run {
    int status = -1;
    std::vector<std::string> out;
  };
  std::unique_ptr<testing::ChildProcess> spawn(std::vector<std::string> args) {
    std::vector<std::string> argv = {python_, std::string(MEMD_SOURCE_DIR) + "/tools/memd_import.py", "--socket",
                                     path_};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<testing::ChildProcess>(argv);
  }
  Run run(std::vector<std::string> args) {
    auto child = spawn(std::move(args));
    EXPECT_TRUE(child->started());
    Run r;
    while (auto line = child->read_line(30s)) r.out.push_back(*line);
    r.status = child->wait(30s);
    return r;
  }

  std::string python_;
  testing::TempSocketDir dir_;
  const std::string path_ = dir_.file("memd.sock");
  PatternImportHandler handler_;
  std::unique_ptr<UnixSocketServer> server_;
};

TEST_F(MemdImportTest, ReadsTheAllocationsBytesInsideTheMapping) {
  auto r = run({"--token", "alice-token", "--read", "48", "--offset", "10", kExport});
  EXPECT_EQ(r.status, 0);
  ASSERT_EQ(r.out.size(), 1u);
  EXPECT_EQ(r.out[0], hex(handler_.bytes(10, 48)));
  std::vector<std::uint8_t> expected;
  for (std::size_t i = 0; i < 48; ++i) expected.push_back(testing::pattern_byte(kSeed, kMapOffset + kOffset + 10 + i));
  EXPECT_EQ(r.out[0], hex(expected));
  EXPECT_EQ(handler_.importer(), "alice");
  EXPECT_EQ(handler_.imports(), 1u);
  // Its connection closed with it.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (handler_.closed() < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(handler_.closed(), 1u);
}

TEST_F(MemdImportTest, WritesWhereItIsToldAndTheExporterSeesIt) {
  auto r = run({"--token", "alice-token", "--write-hex", "deadbeef01", "--offset", "4990", "--read", "5", kExport});
  EXPECT_EQ(r.status, 0);
  ASSERT_EQ(r.out.size(), 1u);
  EXPECT_EQ(r.out[0], "deadbeef01");
  EXPECT_EQ(hex(handler_.bytes(4990, 5)), "deadbeef01");
  // The bytes around it are untouched.
  EXPECT_EQ(handler_.bytes(4989, 1)[0], testing::pattern_byte(kSeed, kMapOffset + kOffset + 4989));

  const std::string in = dir_.file("in.bin"), out = dir_.file("out.bin");
  std::ofstream(in, std::ios::binary) << std::string("\x00\x01\x02hello", 8);
  auto files = run({"--token", "alice-token", "--write-file", in, "--read", "8", "--out", out, kExport});
  EXPECT_EQ(files.status, 0);
  EXPECT_TRUE(files.out.empty());  // raw bytes went to the file
  std::ifstream back(out, std::ios::binary);
  const std::string read((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>());
  EXPECT_EQ(read, std::string("\x00\x01\x02hello", 8));
  EXPECT_EQ(hex(handler_.bytes(0, 8)), "000102" + hex({'h', 'e', 'l', 'l', 'o'}));
}

TEST_F(MemdImportTest, RefusalsExitWithTwoAndFailuresWithOne) {
  EXPECT_EQ(run({"--token", "alice-token", "--read", "1", "22222222-2222-4333-8444-555555555555"}).status, 2);
  EXPECT_EQ(run({"--token", "wrong", "--read", "1", kExport}).status, 2);
  EXPECT_EQ(run({"--read", "1", kExport}).status, 2);  // no token at all
  // The allocation is 5000 bytes: reaching past it fails here, not in memd.
  auto past = run({"--token", "alice-token", "--read", "2", "--offset", "4999", kExport});
  EXPECT_EQ(past.status, 1);
  EXPECT_TRUE(past.out.empty());
  EXPECT_EQ(run({"--token", "alice-token", "--write-hex", "zz", kExport}).status, 1);
  EXPECT_EQ(run({"--token", "alice-token", "--read", "-1", kExport}).status, 64);
  testing::ChildProcess nowhere({python_, std::string(MEMD_SOURCE_DIR) + "/tools/memd_import.py", "--socket",
                                 dir_.file("none.sock"), kExport});
  EXPECT_EQ(nowhere.wait(30s), 1);
}

TEST_F(MemdImportTest, HoldKeepsTheImportUntilItEnds) {
  auto child = spawn({"--token", "alice-token", "--read", "4", "--hold", "1.5", kExport});
  ASSERT_TRUE(child->started());
  auto line = child->read_line(30s);
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, hex(handler_.bytes(0, 4)));
  // Mapped and holding: the connection is open.
  EXPECT_EQ(handler_.imports(), 1u);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(handler_.closed(), 0u);
  EXPECT_EQ(server_->connections(), 1u);
  EXPECT_EQ(child->wait(30s), 0);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (handler_.closed() < 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(handler_.closed(), 1u);
}

}  // namespace
}  // namespace memd
