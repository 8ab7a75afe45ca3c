// memd-replay's --device under hostile values: every one is refused with exit
// status 2 and a message naming the flag, before any trace is replayed; a
// device the machine lacks is a replay failure (exit 1) naming the device;
// --device 0 on the host backend replays as before.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace {

struct Outcome {
  int code = -1;
  std::string out;
};

Outcome replay(const std::string& args) {
  Outcome r;
  const std::string command = std::string(MEMD_REPLAY_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p) != nullptr) r.out += buf.data();
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class ReplayDeviceFlag : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("memd_replay_flags_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    trace_ = (dir_ / "tiny.txt").string();
    std::ofstream(trace_) << "a 1 4096\na 2 1048576\nf 1\nf 2\n";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
  std::string trace_;
};

TEST_F(ReplayDeviceFlag, HostileValuesAreRefusedWithExit2) {
  for (const char* bad : {"-1", "1024", "abc", "1e0", "' 1'", "0x1", "'1 '", "''", "99999999999999999999999", "1.5",
                          "+1", "0,1"}) {
    const Outcome r = replay(std::string("--backend cuda --device ") + bad + " " + trace_);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("--device"), std::string::npos) << bad << ": " << r.out;
    EXPECT_EQ(r.out.find("\"trace\""), std::string::npos) << "nothing replayed for " << bad;
  }
}

TEST_F(ReplayDeviceFlag, MissingValueIsRefused) {
  const Outcome r = replay(trace_ + " --backend cuda --device");
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--device"), std::string::npos) << r.out;
}

TEST_F(ReplayDeviceFlag, ANonZeroDeviceNeedsACudaReplay) {
  const Outcome r = replay("--backend host --baseline memd,malloc --device 1 " + trace_);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("only --backend cuda and the cuda baselines"), std::string::npos) << r.out;
}

TEST_F(ReplayDeviceFlag, AnAbsentGpuFailsTheReplayNamingIt) {
  // cuda:1023 exists on no machine (the highest index taken).
  const Outcome r = replay("--backend cuda --device 1023 --json " + trace_);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("cuda:1023"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"trace\""), std::string::npos) << r.out;
}

TEST_F(ReplayDeviceFlag, DeviceZeroOnTheHostBackendReplays) {
  const Outcome r = replay("--backend host --device 0 --json " + trace_);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"device\":\"host:0\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"peak_live_bytes\":1052672"), std::string::npos) << r.out;
}

}  // namespace
