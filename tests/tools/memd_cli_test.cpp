// The `memd` command line: version, help, local devices, and the client
// verbs against a running daemon (tables, --json, failures exit non-zero).
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "server/child_process.hpp"

namespace memd::testing {
namespace {

struct Run {
  int code = -1;
  std::string out;
};

// Runs memd with args through the shell, stdout and stderr together.
Run memd(const std::string& args) {
  Run r;
  const std::string command = std::string(MEMD_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p) != nullptr) r.out += buf.data();
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(Cli, VersionHelpAndDevices) {
  auto v = memd("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out, "0.1.0\n");
  auto h = memd("--help");
  EXPECT_EQ(h.code, 0);
  for (const char* verb : {"serve", "stdio", "devices", "status", "allocations", "allocate", "free", "limits",
                           "clear", "optimize", "api-doc"})
    EXPECT_NE(h.out.find(verb), std::string::npos) << verb;
  auto d = memd("--no-cuda --host-device 2GiB devices");
  EXPECT_EQ(d.code, 0);
  EXPECT_NE(d.out.find("host:0"), std::string::npos);
  EXPECT_NE(d.out.find("2.0 GiB"), std::string::npos);
  auto j = memd("--no-cuda devices --json");
  EXPECT_EQ(nlohmann::json::parse(j.out)["devices"][0]["deviceId"], "host:0");
}

// --host-device is repeatable: the N-th gives host:N its size; none gives one
// 8 GiB host:0; a size under 64MiB, or two sizes after one flag, are refused
// with the flag named. `devices` shows how the host devices reach each other.
TEST(Cli, HostDeviceFlagMakesOneDeviceEach) {
  auto two = memd("--no-cuda --host-device 4GiB --host-device 2GiB devices --json");
  ASSERT_EQ(two.code, 0) << two.out;
  const auto devices = nlohmann::json::parse(two.out)["devices"];
  ASSERT_EQ(devices.size(), 3u) << two.out;
  EXPECT_EQ(devices[0]["deviceId"], "host:0");
  EXPECT_EQ(devices[0]["totalBytes"], 4ull << 30);
  EXPECT_EQ(devices[0]["peers"], nlohmann::json::parse(R"([{"deviceId": "host:1", "access": "direct"}])"));
  EXPECT_FALSE(devices[0].contains("uuid")) << "host devices have no GPU uuid";
  EXPECT_EQ(devices[1]["deviceId"], "host:1");
  EXPECT_EQ(devices[1]["totalBytes"], 2ull << 30);
  EXPECT_EQ(devices[1]["peers"], nlohmann::json::parse(R"([{"deviceId": "host:0", "access": "direct"}])"));
  EXPECT_EQ(devices[2]["deviceId"], "cpu");
  EXPECT_EQ(devices[2]["peers"], nlohmann::json::array());

  auto table = memd("--no-cuda --host-device 4GiB --host-device 2GiB devices");
  ASSERT_EQ(table.code, 0) << table.out;
  EXPECT_NE(table.out.find("4.0 GiB"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("2.0 GiB"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("PEERS   host:0  host:1"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("host:0  self    direct"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("host:1  direct  self"), std::string::npos) << table.out;

  auto none = memd("--no-cuda devices --json");
  ASSERT_EQ(none.code, 0) << none.out;
  const auto defaults = nlohmann::json::parse(none.out)["devices"];
  ASSERT_EQ(defaults.size(), 2u) << none.out;
  EXPECT_EQ(defaults[0]["totalBytes"], 8ull << 30);
  EXPECT_EQ(defaults[0]["peers"], nlohmann::json::array());
  EXPECT_EQ(memd("--no-cuda devices").out.find("PEERS"), std::string::npos) << "one device: no matrix";

  for (const char* bad : {"32MiB", "0", "63MiB", "lots"}) {
    SCOPED_TRACE(bad);
    auto r = memd(std::string("--no-cuda --host-device 4GiB --host-device ") + bad + " devices");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.out.find("--host-device"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("host:1"), std::string::npos) << "the message names the device: " << r.out;
  }
  EXPECT_NE(memd("--no-cuda --host-device 32MiB devices").out.find("at least 64MiB"), std::string::npos);
  EXPECT_NE(memd("--no-cuda --host-device 4GiB 2GiB devices").code, 0) << "one size per flag";
  EXPECT_EQ(memd("--no-cuda --host-device 64MiB devices").code, 0);
  EXPECT_NE(memd("--help").out.find("repeatable"), std::string::npos);
}

// --pool-policy is checked before anything serves: a bad spelling or a
// device this machine lacks fails at once, naming the flag or the device.
TEST(Cli, PoolPolicyFlagRefusesWhatItCannotApply) {
  auto help = memd("serve --help");
  EXPECT_NE(help.out.find("--pool-policy"), std::string::npos);
  EXPECT_NE(help.out.find("throughput"), std::string::npos);
  for (const char* bad : {"host:0=fast", "host:0", "=throughput", "gpu9=footprint", "host:0=Throughput "}) {
    auto r = memd(std::string("--no-cuda --host-device 64MiB serve --listen 127.0.0.1:0 --pool-policy '") + bad + "'");
    EXPECT_EQ(r.code, 1) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("--pool-policy"), std::string::npos) << bad << ": " << r.out;
  }
  EXPECT_NE(memd("--no-cuda --host-device 64MiB serve --listen 127.0.0.1:0 --write-timeout 0").code, 0);
  EXPECT_NE(memd("--no-cuda --host-device 64MiB serve --listen 127.0.0.1:0 --write-timeout x").code, 0);
  auto unknown = memd("--no-cuda --host-device 64MiB serve --listen 127.0.0.1:0 --pool-policy host:7=throughput");
  EXPECT_EQ(unknown.code, 1);
  EXPECT_NE(unknown.out.find("host:7"), std::string::npos) << unknown.out;
  // A valid policy reaches the pools: the stdio door shows the same engine.
  auto ok = memd("--no-cuda --host-device 64MiB stdio --pool-policy host:0=throughput < /dev/null");
  EXPECT_EQ(ok.code, 0) << ok.out;
}

// One daemon per address (issue 12): a second `memd serve` on an address a
// daemon listens on fails at once, naming the address, instead of sharing
// the port and splitting requests between two engines.
TEST(Cli, SecondDaemonOnABusyAddressFailsAtOnce) {
  ChildProcess first({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "serve", "--listen", "127.0.0.1:0"});
  auto banner = first.read_line();
  ASSERT_TRUE(banner);
  const std::string address = banner->substr(banner->find("http://") + 7);  // 127.0.0.1:PORT
  const auto start = std::chrono::steady_clock::now();
  auto second = memd("--no-cuda --host-device 64MiB serve --listen " + address + " < /dev/null");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_NE(second.code, 0) << second.out;
  EXPECT_NE(second.out.find(address), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("already in use"), std::string::npos) << second.out;
  EXPECT_EQ(second.out.find("listening"), std::string::npos) << second.out;
  EXPECT_LT(took, std::chrono::seconds(5));
  first.signal(SIGTERM);
  EXPECT_EQ(first.wait(), 0);
}

// No verb is a usage error: the help (naming the verbs) and exit 2.
TEST(Cli, NoVerbPrintsHelpAndExitsTwo) {
  auto r = memd("");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("Subcommands"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("serve"), std::string::npos) << r.out;
}

TEST(Cli, UnreachableDaemonIsAClearFailure) {
  auto r = memd("status --url http://127.0.0.1:1");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("cannot reach memd"), std::string::npos) << r.out;
}

TEST(Cli, ClientVerbsAgainstADaemon) {
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "serve", "--listen", "127.0.0.1:0",
                       "--token", "t0k"});
  auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const std::string url = "--url " + banner->substr(banner->find("http://")) + " --token t0k";

  auto status = memd("status " + url);
  EXPECT_EQ(status.code, 0) << status.out;
  EXPECT_NE(status.out.find("DEVICE"), std::string::npos);
  EXPECT_NE(status.out.find("host:0"), std::string::npos);

  auto made = memd("allocate 1MiB --device host:0 --owner cli --json " + url);
  ASSERT_EQ(made.code, 0) << made.out;
  const std::string id = nlohmann::json::parse(made.out)["allocationId"];
  auto listed = memd("allocations --owner cli " + url);
  EXPECT_NE(listed.out.find(id), std::string::npos) << listed.out;

  EXPECT_EQ(memd("limits --owner cli --bytes 1MiB " + url).code, 0);
  auto over = memd("allocate 4KiB --device host:0 --owner cli " + url);
  EXPECT_NE(over.code, 0);
  EXPECT_NE(over.out.find("quota_exceeded"), std::string::npos) << over.out;
  EXPECT_NE(memd("limits " + url).out.find("1.0 MiB"), std::string::npos);

  // The wire spells memory types one way; the CLI takes any case.
  auto lower = memd("allocate 4KiB --type vram --device host:0 --owner typed --json " + url);
  ASSERT_EQ(lower.code, 0) << lower.out;
  EXPECT_EQ(nlohmann::json::parse(lower.out)["memoryType"], "VRAM");
  auto bad = memd("allocate 4KiB --type vramm --device host:0 --owner typed " + url);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("invalid_argument"), std::string::npos) << bad.out;
  EXPECT_EQ(memd("clear --owner typed " + url).code, 0);

  // Every field the wire takes can be given from the CLI.
  auto full = memd("allocate 8KiB --device host:0 --owner tagged --tags unet,fp16 --pinned "
                   "--allocation-type Model --priority High --name weights --json " + url);
  ASSERT_EQ(full.code, 0) << full.out;
  const auto record = nlohmann::json::parse(full.out);
  EXPECT_EQ(record["tags"], nlohmann::json::array({"unet", "fp16"}));
  EXPECT_EQ(record["pinned"], true);
  EXPECT_EQ(record["allocationType"], "Model");
  EXPECT_EQ(record["priority"], "High");
  auto bad_type = memd("allocate 8KiB --device host:0 --owner tagged --allocation-type Modle " + url);
  EXPECT_NE(bad_type.code, 0);
  EXPECT_NE(bad_type.out.find("invalid_argument"), std::string::npos) << bad_type.out;
  // Pinned: a plain clear of the owner leaves it; --include-pinned frees it.
  EXPECT_EQ(memd("clear --owner tagged " + url).code, 0);
  EXPECT_NE(memd("allocations --owner tagged " + url).out.find(record["allocationId"].get<std::string>()),
            std::string::npos);
  EXPECT_EQ(memd("clear --owner tagged --include-pinned " + url).code, 0);

  EXPECT_EQ(memd("free " + id + " " + url).code, 0);
  auto again = memd("free " + id + " " + url);
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.out.find("not_found"), std::string::npos);
  EXPECT_EQ(memd("clear --owner cli " + url).code, 0);
  EXPECT_EQ(memd("optimize " + url).code, 0);
  EXPECT_NE(memd("status --url " + banner->substr(banner->find("http://"))).code, 0);  // no token
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.wait(), 0);
}

// Owners from the command line: --as names the caller, --admin asks for the
// admin (on a daemon without tokens), and sessions open, carry, renew and
// close from one-shot commands.
TEST(Cli, OwnersAdminAndSessions) {
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "serve", "--listen", "127.0.0.1:0"});
  auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const std::string url = " --url " + banner->substr(banner->find("http://"));

  auto made = memd("allocate 1MiB --device host:0 --as alice --json" + url);
  ASSERT_EQ(made.code, 0) << made.out;
  const std::string id = nlohmann::json::parse(made.out)["allocationId"];
  auto denied = memd("free " + id + " --as mallory" + url);
  EXPECT_EQ(denied.code, 1);
  EXPECT_NE(denied.out.find("permission_denied"), std::string::npos) << denied.out;
  auto by_admin = memd("--admin free " + id + url);
  EXPECT_EQ(by_admin.code, 0) << by_admin.out;
  EXPECT_NE(by_admin.out.find("owner alice"), std::string::npos) << by_admin.out;

  auto opened = memd("session open --ttl 30 --as alice --json" + url);
  ASSERT_EQ(opened.code, 0) << opened.out;
  const std::string session = nlohmann::json::parse(opened.out)["sessionId"];
  EXPECT_EQ(memd("allocate 4KiB --device host:0 --as alice --session " + session + url).code, 0);
  auto listed = memd("sessions --as alice" + url);
  EXPECT_NE(listed.out.find(session), std::string::npos) << listed.out;
  EXPECT_NE(memd("session renew " + session + " --as alice" + url).out.find("renewed"), std::string::npos);
  EXPECT_NE(memd("session close " + session + " --as mallory" + url).out.find("permission_denied"), std::string::npos);
  auto closed = memd("session close " + session + " --as alice" + url);
  EXPECT_EQ(closed.code, 0) << closed.out;
  EXPECT_NE(closed.out.find("released 1 allocations"), std::string::npos) << closed.out;
  auto bad_ttl = memd("session open --ttl 0 --as alice" + url);
  EXPECT_NE(bad_ttl.out.find("invalid_argument"), std::string::npos) << bad_ttl.out;
  daemon.signal(SIGTERM);
  EXPECT_EQ(daemon.wait(), 0);
}

// A tokens file is checked before anything serves: one others may read, a
// malformed line (named by number), or a duplicate token stop the daemon
// with the reason and exit 1.
TEST(Cli, TokensFileIsCheckedAtStart) {
  char dir_template[] = "/tmp/memd-cli-tokens-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template, file = dir + "/tokens";
  auto serve = [&](const std::string& text, mode_t mode, const std::string& extra = "") {
    { std::ofstream(file) << text; }
    EXPECT_EQ(::chmod(file.c_str(), mode), 0);
    return memd("--no-cuda --host-device 64MiB serve --listen 127.0.0.1:0 --tokens " + file + extra + " < /dev/null");
  };
  for (mode_t loose : {0644, 0640}) {
    auto r = serve("alice-token alice\n", loose);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.out.find("chmod 600"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("listening"), std::string::npos) << r.out;
  }
  auto malformed = serve("alice-token alice\nbob-token\n", 0600);
  EXPECT_EQ(malformed.code, 1);
  EXPECT_NE(malformed.out.find(file + ":2:"), std::string::npos) << malformed.out;
  auto duplicate = serve("same alice\nsame bob\n", 0600);
  EXPECT_EQ(duplicate.code, 1);
  EXPECT_NE(duplicate.out.find("line 1 again"), std::string::npos) << duplicate.out;
  EXPECT_EQ(duplicate.out.find("same"), std::string::npos) << "a token was printed: " << duplicate.out;
  auto clash = serve("root-token ops admin\n", 0600, " --token root-token");
  EXPECT_EQ(clash.code, 1);
  EXPECT_NE(clash.out.find("--token is also the token of line 1"), std::string::npos) << clash.out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace memd::testing
