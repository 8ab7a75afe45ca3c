// The `memd` command line: version, help, local devices, and the client
// verbs against a running daemon (tables, --json, failures exit non-zero).
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/stat.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "cli_run.hpp"
#include "server/child_process.hpp"

namespace memd::testing {
namespace {

TEST(Cli, VersionHelpAndDevices) {
  auto v = memd("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_EQ(v.out, "0.1.0\n");
  auto h = memd("--help");
  EXPECT_EQ(h.code, 0);
  for (const char* verb : {"serve", "stdio", "devices", "status", "allocations", "allocate", "free", "limits",
                           "clear", "optimize", "api-doc", "transfer", "move", "copy", "transfer-status", "history",
                           "transfer-cancel"})
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

// --state-dir must be a directory this user can write; one that is missing
// is made (0700), and the stdio door accepts it like serve.
TEST(Cli, StateDirIsCheckedAndMade) {
  for (const char* bad : {"/dev/null", "/dev/null/below", "/proc/self/nope"}) {
    auto r = memd(std::string("--no-cuda --host-device 64MiB --state-dir ") + bad + " stdio < /dev/null");
    EXPECT_EQ(r.code, 1) << bad << ": " << r.out;
    EXPECT_NE(r.out.find("--state-dir"), std::string::npos) << bad << ": " << r.out;
  }
  char tmpl[] = "/tmp/memd-state-XXXXXX";
  const std::string base = ::mkdtemp(tmpl);
  const std::string dir = base + "/made";
  auto ok = memd("--no-cuda --host-device 64MiB --state-dir " + dir + " stdio < /dev/null");
  EXPECT_EQ(ok.code, 0) << ok.out;
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  std::filesystem::remove_all(base);
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

// memd status of the whole machine ends with the peer matrix of its
// GPU-like devices (issue 18): each pair's access as the daemon reports it.
TEST(Cli, StatusListsPeerAccessBetweenEachPair) {
  ChildProcess daemon({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "--host-device", "128MiB", "serve",
                       "--listen", "127.0.0.1:0", "--socket", "off"});
  auto banner = daemon.read_line();
  ASSERT_TRUE(banner);
  const std::string url = "--url " + banner->substr(banner->find("http://"));
  auto status = memd("status " + url);
  ASSERT_EQ(status.code, 0) << status.out;
  const auto peers = status.out.find("PEERS");
  ASSERT_NE(peers, std::string::npos) << status.out;
  const std::string matrix = status.out.substr(peers);
  EXPECT_NE(matrix.find("host:0"), std::string::npos) << matrix;
  EXPECT_NE(matrix.find("host:1"), std::string::npos) << matrix;
  EXPECT_EQ(matrix.find("cpu"), std::string::npos) << "cpu has no peers: " << matrix;
  // Two rows, each with self on the diagonal and direct to the other one.
  std::size_t selfs = 0, directs = 0;
  for (auto at = matrix.find("self"); at != std::string::npos; at = matrix.find("self", at + 1)) ++selfs;
  for (auto at = matrix.find("direct"); at != std::string::npos; at = matrix.find("direct", at + 1)) ++directs;
  EXPECT_EQ(selfs, 2u) << matrix;
  EXPECT_EQ(directs, 2u) << matrix;
  // One device asked for: its status alone, no matrix.
  auto one = memd("status --device host:1 " + url);
  EXPECT_EQ(one.code, 0) << one.out;
  EXPECT_EQ(one.out.find("PEERS"), std::string::npos) << one.out;
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
  EXPECT_EQ(status.out.find("PEERS"), std::string::npos) << "one GPU-like device: no pairs";

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

// ---- Transfers (issue 13) ------------------------------------------------

// A daemon without tokens and a REST client beside the CLI, for the bytes:
// the CLI has no data verbs, so the tests write and read through
// PUT/GET /data and check what transfers, copies and moves did to them.
class TransferCli {
 public:
  TransferCli()
      : daemon_({MEMD_BINARY, "--no-cuda", "--host-device", "128MiB", "serve", "--listen", "127.0.0.1:0"}) {
    auto banner = daemon_.read_line();
    if (!banner) return;
    base_ = banner->substr(banner->find("http://"));
    url = " --url " + base_;
  }
  ~TransferCli() {
    daemon_.signal(SIGTERM);
    EXPECT_EQ(daemon_.wait(), 0);
  }
  bool up() const { return !base_.empty(); }

  std::string allocate(const std::string& size, const std::string& device = "host:0") {
    auto r = memd("allocate " + size + " --device " + device + " --json" + url);
    EXPECT_EQ(r.code, 0) << r.out;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j.value("allocationId", "") : "";
  }
  bool write(const std::string& id, const std::string& bytes, std::uint64_t offset = 0) {
    httplib::Client c(base_);
    auto r = c.Put("/api/memory/allocations/" + id + "/data?offset=" + std::to_string(offset), bytes,
                   "application/octet-stream");
    return r && r->status == 200;
  }
  std::string read(const std::string& id, std::uint64_t offset, std::uint64_t length) {
    httplib::Client c(base_);
    auto r = c.Get("/api/memory/allocations/" + id + "/data?offset=" + std::to_string(offset) +
                   "&length=" + std::to_string(length));
    return r && r->status == 200 ? r->body : std::string("<read failed>");
  }
  // Waits until `id` starts with `prefix`: a paced transfer's first chunk
  // lands at once, so this says it has started.
  bool wait_for_prefix(const std::string& id, const std::string& prefix) {
    for (int i = 0; i < 500; ++i) {
      if (read(id, 0, prefix.size()) == prefix) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  std::string url;

 private:
  ChildProcess daemon_;
  std::string base_;
};

std::string pattern(std::size_t n, unsigned seed) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>((i * 7 + seed) % 251);
  return out;
}

std::string temp_file(const std::string& text) {
  char name[] = "/tmp/memd-cli-batch-XXXXXX";
  const int fd = ::mkstemp(name);
  EXPECT_GE(fd, 0);
  ::close(fd);
  std::ofstream(name) << text;
  return name;
}

// Everything a child prints until it closes stdout (it exits).
std::string drain(ChildProcess& child) {
  std::string out;
  while (auto line = child.read_line(std::chrono::seconds(20))) out += *line + "\n";
  return out;
}

TEST(Cli, TransferCopyAndMoveKeepTheBytes) {
  TransferCli d;
  ASSERT_TRUE(d.up());
  const std::string a = d.allocate("1MiB"), b = d.allocate("1MiB"), c = d.allocate("64KiB");
  const std::string bytes = pattern(1 << 20, 3);
  ASSERT_TRUE(d.write(a, bytes));
  ASSERT_TRUE(d.write(b, std::string(1 << 20, '\xee')));

  // Waits by default, then the report: a table, Completed, exit 0. Stderr
  // is a pipe here, so no progress line is drawn into it.
  auto t = memd("transfer " + a + " " + b + d.url);
  EXPECT_EQ(t.code, 0) << t.out;
  EXPECT_NE(t.out.find("TRANSFER"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("Completed"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("1.0 MiB / 1.0 MiB"), std::string::npos) << t.out;
  EXPECT_EQ(t.out.find('\r'), std::string::npos) << "progress drawn on a pipe: " << t.out;
  EXPECT_TRUE(d.read(b, 0, bytes.size()) == bytes);

  // Offsets and a size, --json: the report as the wire has it.
  auto part = memd("transfer " + a + " " + c + " --src-offset 4KiB --dst-offset 1KiB --size 2KiB --json" + d.url);
  ASSERT_EQ(part.code, 0) << part.out;
  const auto report = nlohmann::json::parse(part.out);
  EXPECT_EQ(report["status"], "Completed");
  EXPECT_EQ(report["bytesDone"], 2048);
  EXPECT_TRUE(d.read(c, 1024, 2048) == bytes.substr(4096, 2048));

  // memd copy: synchronous, with offsets; says what it copied and how.
  auto copied = memd("copy " + a + " " + c + " --src-offset 8KiB --dst-offset 16KiB --size 4KiB" + d.url);
  ASSERT_EQ(copied.code, 0) << copied.out;
  EXPECT_NE(copied.out.find("copied 4.0 KiB"), std::string::npos) << copied.out;
  EXPECT_NE(copied.out.find("host_memcpy"), std::string::npos) << copied.out;
  EXPECT_NE(copied.out.find("/s)"), std::string::npos) << copied.out;
  EXPECT_TRUE(d.read(c, 16384, 4096) == bytes.substr(8192, 4096));
  auto copied_json = memd("copy " + a + " " + c + " --size 1KiB --json" + d.url);
  ASSERT_EQ(copied_json.code, 0) << copied_json.out;
  EXPECT_EQ(nlohmann::json::parse(copied_json.out)["bytesCopied"], 1024);

  // --no-wait: the submitted report at once; transfer-status reads it on.
  auto queued = memd("transfer " + a + " " + b + " --no-wait --json" + d.url);
  ASSERT_EQ(queued.code, 0) << queued.out;
  const std::string id = nlohmann::json::parse(queued.out)["transferId"];
  std::string status;
  for (int i = 0; i < 200 && status != "Completed"; ++i) {
    auto s = memd("transfer-status " + id + " --json" + d.url);
    ASSERT_EQ(s.code, 0) << s.out;
    status = nlohmann::json::parse(s.out)["status"];
    if (status != "Completed") std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(status, "Completed");
  auto table = memd("transfer-status " + id + d.url);
  EXPECT_NE(table.out.find(id), std::string::npos) << table.out;
  // Cancelling what has finished is a conflict, said as such.
  auto late = memd("transfer-cancel " + id + d.url);
  EXPECT_EQ(late.code, 1) << late.out;
  EXPECT_NE(late.out.find("conflict"), std::string::npos) << late.out;

  // memd move: the id stays, the device changes, the bytes come along.
  auto moved = memd("move " + a + " --device cpu" + d.url);
  EXPECT_EQ(moved.code, 0) << moved.out;
  EXPECT_NE(moved.out.find("move"), std::string::npos) << moved.out;
  EXPECT_NE(moved.out.find("Completed"), std::string::npos) << moved.out;
  auto listed = memd("allocations --device cpu --json" + d.url);
  ASSERT_EQ(listed.code, 0) << listed.out;
  const auto items = nlohmann::json::parse(listed.out)["items"];
  ASSERT_EQ(items.size(), 1u) << listed.out;
  EXPECT_EQ(items[0]["allocationId"], a);
  EXPECT_EQ(items[0]["memoryType"], "RAM");
  EXPECT_TRUE(d.read(a, 0, bytes.size()) == bytes);
  auto typed = memd("move " + a + " --device cpu --type unifiedmemory --json" + d.url);
  ASSERT_EQ(typed.code, 0) << typed.out;
  EXPECT_EQ(nlohmann::json::parse(typed.out)["destinationMemoryType"], "UnifiedMemory");
}

// Refusals exit 1 with the daemon's code in the message, and a batch with
// one bad member starts nothing.
TEST(Cli, TransferRefusals) {
  TransferCli d;
  ASSERT_TRUE(d.up());
  const std::string a = d.allocate("64KiB"), b = d.allocate("64KiB"), small = d.allocate("4KiB");
  const std::string mark(64 << 10, '\x5a');
  ASSERT_TRUE(d.write(a, pattern(64 << 10, 1)));
  ASSERT_TRUE(d.write(b, mark));

  const std::string unknown = "0badc0de-0000-4000-8000-000000000000";
  for (const auto& [args, code] : std::vector<std::pair<std::string, std::string>>{
           {"transfer " + unknown + " " + b, "not_found"},
           {"transfer not-an-id " + b, "invalid_argument"},
           {"transfer " + a + " " + small, "out_of_range"},
           {"transfer " + a + " " + b + " --size 1MiB", "out_of_range"},
           {"transfer " + a + " " + b + " --max-rate fast", "invalid_argument"},
           {"copy " + a + " " + unknown, "not_found"},
           {"copy " + a + " " + b + " --dst-offset 64KiB --size 1", "out_of_range"},
           {"move " + unknown + " --device cpu", "not_found"},
           {"move " + a + " --device gpu9", "invalid_argument"},
           {"transfer-status " + unknown, "not_found"},
           {"transfer-cancel nonsense", "invalid_argument"},
       }) {
    auto r = memd(args + d.url);
    EXPECT_EQ(r.code, 1) << args << ": " << r.out;
    EXPECT_NE(r.out.find("memd: " + code + ":"), std::string::npos) << args << ": " << r.out;
  }
  EXPECT_NE(memd("transfer " + a + d.url).code, 0);   // one id is not a transfer
  EXPECT_NE(memd("move " + a + d.url).code, 0);       // --device is required
  EXPECT_NE(memd("transfer --batch x " + a + " " + b + d.url).code, 0);

  // A batch whose second member does not fit is refused whole: the first
  // member's destination keeps its bytes.
  const auto bad = temp_file(nlohmann::json::array({
      {{"sourceAllocationId", a}, {"destinationAllocationId", b}},
      {{"sourceAllocationId", a}, {"destinationAllocationId", small}},
  }).dump());
  auto refused = memd("transfer --batch " + bad + d.url);
  EXPECT_EQ(refused.code, 1) << refused.out;
  EXPECT_NE(refused.out.find("transfers[1]"), std::string::npos) << refused.out;
  EXPECT_TRUE(d.read(b, 0, mark.size()) == mark);

  // Files that are not a list of transfers: said before anything is sent.
  for (const std::string& text : {std::string("{not json"), std::string(R"({"transfers": []})"),
                                  std::string(R"([{"sourceAllocationId": "x"}, 7])")}) {
    const auto f = temp_file(text);
    auto r = memd("transfer --batch " + f + d.url);
    EXPECT_EQ(r.code, 1) << text << ": " << r.out;
    EXPECT_NE(r.out.find("invalid_argument"), std::string::npos) << text << ": " << r.out;
    std::filesystem::remove(f);
  }
  auto missing = memd("transfer --batch /nonexistent/batch.json" + d.url);
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.out.find("/nonexistent/batch.json"), std::string::npos) << missing.out;

  // The same batch without the bad member, from stdin: one batch, Completed.
  const auto good = temp_file(nlohmann::json::array({{{"sourceAllocationId", a}, {"destinationAllocationId", b}},
                                                     {{"sourceAllocationId", a},
                                                      {"destinationAllocationId", small},
                                                      {"sizeBytes", "4KiB"}}})
                                  .dump());
  auto batch = memd("transfer --batch -" + d.url + " < " + good);
  EXPECT_EQ(batch.code, 0) << batch.out;
  EXPECT_NE(batch.out.find("Completed: 2 transfers"), std::string::npos) << batch.out;
  EXPECT_TRUE(d.read(b, 0, mark.size()) == pattern(64 << 10, 1));
  EXPECT_TRUE(d.read(small, 0, 4096) == pattern(4096, 1));
  std::filesystem::remove(bad);
  std::filesystem::remove(good);
}

// Paced transfers (--max-rate) run long enough to stop: transfer-cancel
// ends one, Ctrl-C on a waiting `memd transfer` cancels what it started and
// exits 130, and a batch whose member fails exits 1 naming that member.
// 16 MiB at 1 MiB/s: the first 8 MiB chunk lands at once, the rest would
// take 8 s, so each case has seconds to act and ends at once when it does.
TEST(Cli, PacedTransfersCancelAndFail) {
  TransferCli d;
  ASSERT_TRUE(d.up());
  const std::string x = d.allocate("16MiB"), y = d.allocate("16MiB");
  const std::string a = d.allocate("4KiB"), b = d.allocate("4KiB");
  const std::string bytes = pattern(16 << 20, 5), head = bytes.substr(0, 64);
  ASSERT_TRUE(d.write(x, bytes));
  // wait_for_prefix reads the head only, so blanking the head is enough to
  // see the next transfer start.
  const std::string blank(head.size(), '\0');

  // transfer-cancel: the report says the cancel was asked; it ends Cancelled.
  ASSERT_TRUE(d.write(y, blank));
  auto queued = memd("transfer " + x + " " + y + " --max-rate 1MiB --no-wait --json" + d.url);
  ASSERT_EQ(queued.code, 0) << queued.out;
  const std::string id = nlohmann::json::parse(queued.out)["transferId"];
  ASSERT_TRUE(d.wait_for_prefix(y, head));
  auto cancel = memd("transfer-cancel " + id + d.url);
  EXPECT_EQ(cancel.code, 0) << cancel.out;
  std::string status;
  for (int i = 0; i < 200 && status != "Cancelled"; ++i) {
    status = nlohmann::json::parse(memd("transfer-status " + id + " --json" + d.url).out)["status"];
    if (status != "Cancelled") std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(status, "Cancelled");
  auto again = memd("transfer-cancel " + id + d.url);
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.out.find("conflict"), std::string::npos) << again.out;

  // Ctrl-C while waiting: a cancel, the Cancelled report, exit 130.
  ASSERT_TRUE(d.write(y, blank));
  {
    ChildProcess waiting({MEMD_BINARY, "transfer", x, y, "--max-rate", "1MiB", "--json", "--url",
                          d.url.substr(d.url.find("http://"))});
    ASSERT_TRUE(d.wait_for_prefix(y, head));
    const auto sent = std::chrono::steady_clock::now();
    waiting.signal(SIGINT);
    const std::string out = drain(waiting);
    EXPECT_EQ(waiting.wait(), 130) << out;
    EXPECT_LT(std::chrono::steady_clock::now() - sent, std::chrono::seconds(3)) << "the cancel did not land at once";
    const auto report = nlohmann::json::parse(out, nullptr, false);
    ASSERT_TRUE(report.is_object()) << out;
    EXPECT_EQ(report["status"], "Cancelled") << out;
    EXPECT_LT(report["bytesDone"].get<std::uint64_t>(), bytes.size()) << out;
  }

  // A batch with a member that fails (its destination freed mid-copy):
  // exit 1, the batch Failed, the member named with its reason.
  ASSERT_TRUE(d.write(y, blank));
  ASSERT_TRUE(d.write(a, pattern(4096, 9)));
  const auto file = temp_file(nlohmann::json::array({{{"sourceAllocationId", x}, {"destinationAllocationId", y}},
                                                     {{"sourceAllocationId", a}, {"destinationAllocationId", b}}})
                                  .dump());
  {
    // Through sh for 2>&1 (the member list goes to stderr); `exec` leaves
    // memd itself as the child.
    ChildProcess batch({"/bin/sh", "-c",
                        "exec \"$0\" transfer --batch \"$1\" --max-rate 1MiB --url \"$2\" 2>&1", MEMD_BINARY, file,
                        d.url.substr(d.url.find("http://"))});
    ASSERT_TRUE(d.wait_for_prefix(y, head));
    auto freed = memd("free " + y + d.url);
    EXPECT_EQ(freed.code, 0) << freed.out;
    const std::string out = drain(batch);
    EXPECT_EQ(batch.wait(), 1) << out;
    EXPECT_NE(out.find("Failed: 1 of 2 transfers did not complete"), std::string::npos) << out;
    EXPECT_NE(out.find("was freed during the copy"), std::string::npos) << out;
    EXPECT_TRUE(d.read(b, 0, 4096) == pattern(4096, 9));
  }
  std::filesystem::remove(file);
}

}  // namespace
}  // namespace memd::testing
