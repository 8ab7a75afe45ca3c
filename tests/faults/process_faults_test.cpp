// Faults at the process level (issue 17 item 3), against the real `memd`
// binary: clients that vanish mid-request, a REST session whose client is
// gone, a `memd stdio --connect` bridge SIGKILLed mid-transfer and mid-load,
// and the daemon itself SIGKILLed mid-transfer and started again on the
// same port and socket. Each runs at >= 20 random points (MEMD_FAULT_SEED
// replays a run); after them the daemon is checked over REST: it answers,
// what the vanished parties held is released, a bystander allocation of
// another owner keeps its bytes, and no connection is left open.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <utility>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fault_test_support.hpp"
#include "models/safetensors_writer.hpp"
#include "protocol/base64.hpp"
#include "server/child_process.hpp"
#include "server/http_test_support.hpp"

namespace memd::faults {
namespace {

namespace fs = std::filesystem;
using memd::testing::ChildProcess;
using memd::testing::Socket;
using json = nlohmann::json;

constexpr int kPoints = 20;

struct Answer {
  int status = 0;
  std::string body;
  json value() const { return json::parse(body, nullptr, false); }
};

// `memd serve` as a child on 127.0.0.1, on a port of its choosing the
// first time and the same port after a restart.
class Daemon {
 public:
  explicit Daemon(std::vector<std::string> extra) : extra_(std::move(extra)) { start(0); }
  ~Daemon() {
    if (process_) {
      process_->signal(SIGTERM);
      process_->wait();
    }
  }

  bool start(int port) {
    std::vector<std::string> args{MEMD_BINARY,  "--no-cuda", "--host-device", "192MiB", "serve",
                                  "--listen",   "127.0.0.1:" + std::to_string(port),     "--log-level",
                                  "error"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    process_ = std::make_unique<ChildProcess>(args);
    auto banner = process_->read_line(std::chrono::seconds(15));
    if (!banner || banner->find("http://") == std::string::npos) return false;
    url_ = banner->substr(banner->find("http://"));
    port_ = std::stoi(url_.substr(url_.rfind(':') + 1));
    return true;
  }
  void kill9() {
    process_->signal(SIGKILL);
    EXPECT_EQ(process_->wait(), 128 + SIGKILL);
    process_.reset();
  }
  int port() const { return port_; }
  const std::string& url() const { return url_; }
  pid_t pid() const { return process_->pid(); }

  Answer call(const std::string& method, const std::string& target, const std::string& body = "",
              const std::string& owner = "alice", const std::string& extra_headers = "",
              const std::string& type = "application/json") const {
    Socket s(port_);
    if (!s.ok()) return {};
    std::string request = method + " " + target + " HTTP/1.1\r\nHost: memd\r\nConnection: close\r\nX-Memd-Owner: " +
                          owner + "\r\n" + extra_headers;
    if (!body.empty() || method == "POST" || method == "PUT")
      request += "Content-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    request += "\r\n" + body;
    if (!s.send(request)) return {};
    auto response = s.response(std::chrono::milliseconds(10000));
    if (!response || response->size() < 12) return {};
    return {std::stoi(response->substr(9, 3)), memd::testing::body_of(*response)};
  }
  Answer admin(const std::string& method, const std::string& target, const std::string& body = "") const {
    return call(method, target, body, "ops", "X-Memd-Admin: true\r\n");
  }
  std::string allocate(std::uint64_t bytes, const std::string& owner, const std::string& session = "") const {
    auto a = call("POST", "/api/memory/allocations",
                  json{{"sizeBytes", bytes}, {"deviceId", "host:0"}}.dump(), owner,
                  session.empty() ? "" : "X-Memd-Session: " + session + "\r\n");
    EXPECT_EQ(a.status, 201) << a.body;
    auto v = a.value();
    return v.is_object() && v.contains("allocationId") ? v["allocationId"].get<std::string>() : "";
  }
  bool write(const std::string& id, const std::string& bytes, const std::string& owner,
             const std::string& session = "") const {
    auto a = call("PUT", "/api/memory/allocations/" + id + "/data?offset=0", bytes, owner,
                  session.empty() ? "" : "X-Memd-Session: " + session + "\r\n", "application/octet-stream");
    return a.status == 200;
  }
  std::string read(const std::string& id, std::uint64_t bytes) const {
    auto a = admin("GET", "/api/memory/allocations/" + id + "/data?offset=0&length=" + std::to_string(bytes));
    return a.status == 200 ? a.body : "";
  }
  bool free(const std::string& id) const { return admin("DELETE", "/api/memory/allocations/" + id).status == 200; }
  json usage() const { return admin("GET", "/api/memory/usage").value(); }
  std::uint64_t owner_allocations(const std::string& owner) const {
    auto u = usage();
    if (!u.is_object() || !u["byOwner"].contains(owner)) return 0;
    return u["byOwner"][owner]["allocations"].get<std::uint64_t>();
  }
  bool healthy() const { return call("GET", "/healthz").status == 200; }
  // The owners holding allocations (staging buffers are nobody's).
  std::set<std::string> owners() const {
    std::set<std::string> out;
    auto u = usage();
    if (u.is_object())
      for (const auto& [owner, counts] : u["byOwner"].items())
        if (counts["allocations"].get<std::uint64_t>() > 0) out.insert(owner);
    return out;
  }
  // Sockets the daemon has open (its listening ones included).
  std::size_t sockets() const {
    std::size_t n = 0;
    for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid()) + "/fd")) {
      std::error_code ec;
      const auto target = fs::read_symlink(e.path(), ec);
      if (!ec && target.string().starts_with("socket:")) ++n;
    }
    return n;
  }

 private:
  std::vector<std::string> extra_;
  std::unique_ptr<ChildProcess> process_;
  std::string url_;
  int port_ = 0;
};

std::string bytes_of(std::uint64_t n, std::uint64_t seed) {
  const auto p = pattern(n, seed);
  return std::string(reinterpret_cast<const char*>(p.data()), p.size());
}

// A bystander: another owner's allocation, written whole, never touched.
struct Bystander {
  std::string id, bytes;
  explicit Bystander(const Daemon& d) : bytes(bytes_of(3 * kMiB + 123, 77)) {
    id = d.allocate(bytes.size(), "bystander");
    EXPECT_TRUE(d.write(id, bytes, "bystander"));
  }
  void expect_intact(const Daemon& d) const {
    EXPECT_TRUE(d.read(id, bytes.size()) == bytes) << "the bystander's bytes changed";
  }
};

template <typename F>
bool eventually(F&& done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return wait_until(std::forward<F>(done), timeout);
}

// Closes a socket so the peer sees a reset (SO_LINGER 0) rather than a FIN.
void reset(Socket& s) {
  linger l{1, 0};
  ::setsockopt(s.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  s.close();
}

TEST(ProcessFaultsTest, HttpClientVanishesMidUploadAndMidDownload) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  Daemon d({});
  ASSERT_TRUE(d.healthy());
  Bystander by(d);
  const auto sockets = d.sockets();

  // Uploads cut off after k body bytes: the allocation holds a prefix of
  // the new bytes and its old bytes after it (docs/api.md, "Data is
  // streamed": a prefix of the body may have been written), never bytes
  // past what was sent.
  for (int point = 0; point < kPoints; ++point) {
    const std::uint64_t size = kMiB + rng() % kMiB;
    const std::uint64_t sent = rng() % size;
    const bool rst = rng() % 2 == 0;
    SCOPED_TRACE("upload point " + std::to_string(point) + ": " + std::to_string(sent) + " of " +
                 std::to_string(size) + (rst ? " then reset" : " then close"));
    const auto id = d.allocate(size, "alice");
    const auto old_bytes = bytes_of(size, rng()), new_bytes = bytes_of(size, rng());
    ASSERT_TRUE(d.write(id, old_bytes, "alice"));
    {
      Socket s(d.port());
      ASSERT_TRUE(s.ok());
      ASSERT_TRUE(s.send("PUT /api/memory/allocations/" + id +
                         "/data?offset=0 HTTP/1.1\r\nHost: memd\r\nX-Memd-Owner: alice\r\nContent-Type: "
                         "application/octet-stream\r\nContent-Length: " +
                         std::to_string(size) + "\r\n\r\n"));
      ASSERT_TRUE(s.send(std::string_view(new_bytes).substr(0, sent)));
      if (rst) reset(s);
      else s.close();
    }
    // Once the daemon has seen the end of the connection the bytes stop
    // changing (a GET streams in pieces, so it is a consistent picture only
    // then): a prefix of the new bytes, the old ones after it.
    std::string now = d.read(id, size), again;
    ASSERT_TRUE(eventually([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      again = d.read(id, size);
      return std::exchange(now, again) == again;
    })) << "the allocation kept changing after the client left";
    ASSERT_EQ(now.size(), size);
    std::size_t p = 0;
    while (p < size && now[p] == new_bytes[p]) ++p;
    EXPECT_TRUE(now.compare(p, std::string::npos, old_bytes, p) == 0)
        << "after the written prefix (" << p << " bytes) the bytes are neither old nor new";
    EXPECT_TRUE(now.compare(sent, std::string::npos, old_bytes, sent) == 0)
        << "bytes past what the client sent (" << sent << ") were written; prefix " << p;
    EXPECT_TRUE(d.free(id));
  }

  // Downloads read for k body bytes, then gone: the daemon stops sending,
  // the allocation is unchanged and freeable.
  for (int point = 0; point < kPoints; ++point) {
    const std::uint64_t size = 2 * kMiB + rng() % kMiB;
    const std::uint64_t want = rng() % size;
    const bool rst = rng() % 2 == 0;
    SCOPED_TRACE("download point " + std::to_string(point) + ": " + std::to_string(want) + " of " +
                 std::to_string(size) + (rst ? " then reset" : " then close"));
    const auto id = d.allocate(size, "alice");
    const auto content = bytes_of(size, rng());
    ASSERT_TRUE(d.write(id, content, "alice"));
    {
      Socket s(d.port());
      ASSERT_TRUE(s.ok());
      s.set_receive_buffer(128 * 1024);
      ASSERT_TRUE(s.send("GET /api/memory/allocations/" + id + "/data?offset=0&length=" + std::to_string(size) +
                         " HTTP/1.1\r\nHost: memd\r\nX-Memd-Owner: alice\r\n\r\n"));
      // The header byte by byte, so no body byte is read with it.
      std::string header;
      char c = 0;
      while (!header.ends_with("\r\n\r\n") && ::recv(s.fd(), &c, 1, 0) == 1) header += c;
      ASSERT_TRUE(header.starts_with("HTTP/1.1 200")) << header;
      std::string got;
      char buf[65536];
      while (got.size() < want) {
        const ssize_t n = ::recv(s.fd(), buf, std::min<std::size_t>(sizeof buf, want - got.size()), 0);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
      }
      EXPECT_TRUE(content.compare(0, got.size(), got) == 0) << "the part of the body read";
      if (rst) reset(s);
      else s.close();
    }
    EXPECT_TRUE(d.read(id, size) == content) << "the allocation changed under a download";
    EXPECT_TRUE(d.free(id));
  }

  EXPECT_TRUE(d.healthy());
  by.expect_intact(d);
  EXPECT_EQ(d.owner_allocations("alice"), 0u);
  EXPECT_TRUE(eventually([&] { return d.sockets() <= sockets; }))
      << "the daemon keeps " << d.sockets() << " sockets open, " << sockets << " before";
}

// Sessions whose clients vanish at random points of their work (after
// opening, after some allocations, mid-upload): each lease lapses and
// everything in it is freed; the bystander outside any session stays.
TEST(ProcessFaultsTest, RestSessionsWhoseClientsVanish) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  Daemon d({});
  Bystander by(d);
  std::vector<std::string> owners;
  for (int point = 0; point < kPoints; ++point) {
    const std::string owner = "worker-" + std::to_string(point);
    owners.push_back(owner);
    auto opened = d.call("POST", "/api/sessions", json{{"ttlSeconds", 1}}.dump(), owner);
    ASSERT_EQ(opened.status, 201) << opened.body;
    const std::string session = opened.value()["sessionId"];
    const int steps = static_cast<int>(rng() % 5);  // work done before vanishing
    for (int s = 0; s < steps; ++s) {
      const auto id = d.allocate(64 * kKiB + rng() % kMiB, owner, session);
      if (rng() % 2 == 0) {
        // Vanishes mid-upload into it.
        Socket up(d.port());
        ASSERT_TRUE(up.send("PUT /api/memory/allocations/" + id +
                            "/data?offset=0 HTTP/1.1\r\nHost: memd\r\nX-Memd-Owner: " + owner +
                            "\r\nX-Memd-Session: " + session +
                            "\r\nContent-Type: application/octet-stream\r\nContent-Length: 65536\r\n\r\n" +
                            bytes_of(1000, s)));
        reset(up);
        break;
      }
    }
  }
  // Leases of one second, swept every second: all gone within a few.
  for (const auto& owner : owners)
    EXPECT_TRUE(eventually([&] { return d.owner_allocations(owner) == 0; })) << owner << "'s lease did not lapse";
  auto sessions = d.admin("GET", "/api/sessions").value();
  ASSERT_TRUE(sessions.is_object()) << "GET /api/sessions";
  EXPECT_TRUE(sessions["sessions"].empty()) << sessions.dump();
  by.expect_intact(d);
  EXPECT_EQ(d.owners(), std::set<std::string>{"bystander"}) << "only the bystander is left";
  const auto id = d.allocate(kMiB, "after");
  const auto b = bytes_of(kMiB, 5);
  EXPECT_TRUE(d.write(id, b, "after"));
  EXPECT_TRUE(d.read(id, kMiB) == b);
  EXPECT_TRUE(d.free(id));
}

// `memd stdio --connect` bridges SIGKILLed at a random point while a paced
// transfer between their allocations runs, or while a model they asked
// for loads: the daemon frees each bridge's session memory when its lease
// lapses, the models finish loading (they are the daemon's, not the
// bridge's), and the bystander is untouched.
TEST(ProcessFaultsTest, StdioBridgeKilledMidTransferAndMidLoad) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  test_models::TempDir root;
  std::vector<test_models::FakeTensor> tensors;
  for (int i = 0; i < 24; ++i) tensors.push_back({"w." + std::to_string(i), {512, 1024}});
  test_models::write_safetensors(root.path / "model.safetensors", tensors);
  Daemon d({"--model-root", root.path.string()});
  Bystander by(d);
  std::vector<std::string> owners, models;
  for (int point = 0; point < kPoints; ++point) {
    const bool loading = point % 2 == 1;
    const std::string owner = "bridge-" + std::to_string(point);
    owners.push_back(owner);
    ChildProcess bridge({MEMD_BINARY, "stdio", "--connect", d.url(), "--owner", owner, "--ttl", "1"});
    ASSERT_TRUE(bridge.started());
    auto line = [&](const std::string& action, const json& params) -> json {
      auto r = bridge.call(json{{"id", "1"}, {"action", action}, {"params", params}}.dump());
      return r ? json::parse(*r, nullptr, false) : json();
    };
    auto a = line("memory_allocate", {{"sizeBytes", 4 * kMiB}, {"deviceId", "host:0"}});
    auto b = line("memory_allocate", {{"sizeBytes", 4 * kMiB}, {"deviceId", "host:0"}});
    ASSERT_TRUE(a["ok"] == true && b["ok"] == true) << a.dump() << b.dump();
    const auto seed_bytes = pattern(4096, rng());
    auto w = line("memory_write", {{"allocationId", a["result"]["allocationId"]},
                                   {"offset", 0},
                                   {"data", base64_encode(seed_bytes)}});
    ASSERT_EQ(w["ok"], true) << w.dump();
    const auto delay = std::chrono::microseconds(rng() % 200'000);
    if (loading) {
      const std::string name = "m" + std::to_string(point % 4);
      models.push_back(name);
      // Sent, not waited for: the kill lands somewhere in the load.
      ASSERT_TRUE(bridge.write(json{{"id", "2"},
                                    {"action", "memory_model_load"},
                                    {"params", {{"name", name}, {"path", "model.safetensors"}, {"deviceId", "host:0"}}}}
                                   .dump() +
                               "\n"));
    } else {
      auto t = line("memory_transfer", {{"sourceAllocationId", a["result"]["allocationId"]},
                                        {"destinationAllocationId", b["result"]["allocationId"]},
                                        {"maxBytesPerSecond", 16 * kMiB}});
      ASSERT_EQ(t["ok"], true) << t.dump();
    }
    std::this_thread::sleep_for(delay);
    bridge.signal(SIGKILL);
    EXPECT_EQ(bridge.wait(), 128 + SIGKILL);
  }
  for (const auto& owner : owners)
    EXPECT_TRUE(eventually([&] { return d.owner_allocations(owner) == 0; }))
        << owner << "'s memory was not released after it was killed";
  // Every model asked for ends Loaded, with the file's bytes.
  for (const auto& name : models) {
    json status;
    ASSERT_TRUE(eventually([&] {
      status = d.admin("GET", "/api/memory/models/" + name).value();
      return status.is_object() && status.value("state", "") != "Loading";
    })) << name << " never finished loading";
    EXPECT_EQ(status["state"], "Loaded") << status.dump();
  }
  for (const auto& name : std::set<std::string>(models.begin(), models.end()))
    EXPECT_EQ(d.admin("DELETE", "/api/memory/models/" + name).status, 200);
  EXPECT_TRUE(eventually([&] { return d.owners() == std::set<std::string>{"bystander"}; })) << d.usage().dump();
  by.expect_intact(d);
  EXPECT_TRUE(d.healthy());
}

// The daemon SIGKILLed at a random point of a paced transfer (and an
// upload in flight), then started again on the same port and Unix socket:
// it starts (the stale socket file is reclaimed, the port is free again),
// answers, holds nothing (no state is kept across restarts yet), and
// serves a fresh allocation; its socket accepts connections.
TEST(ProcessFaultsTest, DaemonKilledMidTransferAndRestarted) {
  const auto seed = run_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  char dir_template[] = "/tmp/memd-faults-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const fs::path dir = dir_template;
  const std::string socket_path = (dir / "memd.sock").string();
  Daemon d({"--socket", socket_path});
  const int port = d.port();
  for (int point = 0; point < kPoints; ++point) {
    SCOPED_TRACE("restart " + std::to_string(point));
    const auto a = d.allocate(8 * kMiB, "alice"), b = d.allocate(8 * kMiB, "alice");
    auto t = d.call("POST", "/api/memory/transfers",
                    json{{"sourceAllocationId", a}, {"destinationAllocationId", b}, {"maxBytesPerSecond", 32 * kMiB}}
                        .dump());
    ASSERT_EQ(t.status, 202) << t.body;
    Socket upload(port);
    ASSERT_TRUE(upload.send("PUT /api/memory/allocations/" + b +
                            "/data?offset=0 HTTP/1.1\r\nHost: memd\r\nX-Memd-Owner: alice\r\nContent-Type: "
                            "application/octet-stream\r\nContent-Length: 1048576\r\n\r\n" +
                            bytes_of(4096, point)));
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 100'000));
    d.kill9();
    upload.close();
    ASSERT_TRUE(d.start(port)) << "memd did not start again on port " << port;
    EXPECT_EQ(d.port(), port);
    ASSERT_TRUE(d.healthy());
    EXPECT_TRUE(d.owners().empty()) << d.usage().dump();
    const auto id = d.allocate(kMiB, "alice");
    const auto bytes = bytes_of(kMiB, point);
    EXPECT_TRUE(d.write(id, bytes, "alice"));
    EXPECT_TRUE(d.read(id, kMiB) == bytes);
    EXPECT_TRUE(d.free(id));
    // The socket file is the new daemon's, and it listens.
    struct stat st {};
    ASSERT_EQ(::lstat(socket_path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_path.c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    ::close(fd);
    if (::testing::Test::HasFailure()) break;
  }
  fs::remove_all(dir);
}

// MEMD_TEST_FAULTS arms the fault backend in a test build of the daemon
// (tools/CMakeLists.txt, MEMD_FAULT_INJECTION): every copy fails, and the
// REST door answers each with 502 backend_error while everything else
// goes on. A spec it cannot parse keeps the daemon from starting.
TEST(ProcessFaultsTest, DaemonArmsInjectedFaultsFromTheEnvironment) {
#if !defined(MEMD_FAULT_INJECTION_BUILT)
  GTEST_SKIP() << "this build's memd ignores MEMD_TEST_FAULTS (MEMD_FAULT_INJECTION is off)";
#else
  ::setenv("MEMD_TEST_FAULTS", "copy:1+", 1);
  Daemon d({});
  ::unsetenv("MEMD_TEST_FAULTS");
  ASSERT_TRUE(d.healthy());
  const auto a = d.allocate(kMiB, "alice"), b = d.allocate(kMiB, "alice");
  for (int i = 0; i < 3; ++i) {
    auto copied = d.call("POST", "/api/memory/copy", json{{"sourceAllocationId", a}, {"destinationAllocationId", b}}.dump());
    EXPECT_EQ(copied.status, 502) << copied.body;
    auto error = copied.value();
    ASSERT_TRUE(error.is_object()) << copied.body;
    EXPECT_EQ(error["error"]["code"], "backend_error") << copied.body;
    EXPECT_NE(error["error"]["message"].get<std::string>().find("injected fault"), std::string::npos) << copied.body;
  }
  EXPECT_TRUE(d.healthy());
  EXPECT_TRUE(d.free(a));
  EXPECT_TRUE(d.free(b));
  EXPECT_TRUE(d.owners().empty()) << d.usage().dump();

  ::setenv("MEMD_TEST_FAULTS", "copy:0", 1);
  ChildProcess refused({MEMD_BINARY, "--no-cuda", "serve", "--listen", "127.0.0.1:0"});
  ::unsetenv("MEMD_TEST_FAULTS");
  EXPECT_NE(refused.wait(), 0) << "memd started with a malformed MEMD_TEST_FAULTS";
#endif
}

}  // namespace
}  // namespace memd::faults
