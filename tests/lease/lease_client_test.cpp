// Client mode against the real daemon: an engine whose host:0 memory is
// leased from `memd serve` over its socket (lease/lease_backend.hpp).
//   * the leases are the daemon's allocations of the worker's owner, tagged
//     "lease", in its status; the bytes the worker writes are the bytes the
//     daemon holds (the same memory, read back over REST);
//   * a quota set in the daemon refuses the worker's growth;
//   * closing the engine, or killing a worker, ends every lease;
//   * hostile lease requests on the socket get clear errors and change
//     nothing.
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "memd/engine.hpp"
#include "server/child_process.hpp"
#include "server/socket_client.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// `memd serve` on host:0 (256 MiB) with its socket in a fresh directory.
class LeaseDaemon {
 public:
  LeaseDaemon()
      : dir_(std::filesystem::temp_directory_path() /
             ("memd-lease-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++))),
        socket_((std::filesystem::create_directories(dir_), dir_ / "memd.sock").string()),
        process_({MEMD_BINARY, "--no-cuda", "--host-device", "256MiB", "serve", "--listen", "127.0.0.1:0", "--socket",
                  socket_}) {
    for (int i = 0; i < 10 && url_.empty(); ++i) {
      auto line = process_.read_line();
      if (!line) break;
      if (auto at = line->find("http://"); at != std::string::npos) {
        url_ = line->substr(at);
        url_ = url_.substr(0, url_.find_first_of(" \t"));
      }
    }
    // The socket is bound before the banner; wait for the file anyway.
    for (int i = 0; i < 100 && !std::filesystem::exists(socket_); ++i) std::this_thread::sleep_for(10ms);
  }
  ~LeaseDaemon() {
    process_.signal(SIGTERM);
    EXPECT_EQ(process_.wait(), 0) << "memd serve did not shut down cleanly";
    std::filesystem::remove_all(dir_);
  }
  const std::string& socket() const { return socket_; }
  httplib::Client http() const {
    httplib::Client c(url_);
    c.set_read_timeout(10, 0);
    return c;
  }
  json status() const {
    auto c = http();
    auto r = c.Get("/api/memory/status");
    if (!r || r->status != 200) return json();
    return json::parse(r->body);
  }
  json leases() const { return status().value("leases", json::object()); }
  std::uint64_t leased_by(const std::string& owner) const {
    auto by = leases().value("bytesByOwner", json::object());
    return by.contains(owner) ? by[owner].get<std::uint64_t>() : 0;
  }
  json allocations_of(const std::string& owner) const {
    auto c = http();
    auto r = c.Get("/api/memory/allocations?limit=1000", httplib::Headers{{"X-Memd-Owner", owner}});
    if (!r || r->status != 200) return json::array();
    return json::parse(r->body).value("items", json::array());
  }
  // Waits until `pred` holds (the daemon ends a closed connection's leases
  // on its socket thread, a moment after the close).
  template <typename F>
  bool eventually(F&& pred) const {
    for (int i = 0; i < 500; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return pred();
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
  std::string socket_;
  testing::ChildProcess process_;
  std::string url_;
};

Result<Engine> client_engine(const LeaseDaemon& d, const std::string& owner) {
  EngineOptions o;
  o.host_device_sizes = {256ull << 20};
  o.enable_cuda = false;
  o.owner = owner;
  o.lease_socket = d.socket();
  return Engine::open(o);
}

TEST(LeaseClient, LeasesAreTheDaemonsAllocationsAndHoldTheWorkersBytes) {
  LeaseDaemon d;
  ASSERT_TRUE(std::filesystem::exists(d.socket()));
  auto engine = client_engine(d, "worker-1");
  ASSERT_TRUE(engine) << engine.error().message;
  auto stream = engine->create_stream(DeviceId::host(0));
  ASSERT_TRUE(stream);
  constexpr std::uint64_t kBytes = 8ull << 20;
  auto block = engine->allocate_async(kBytes, *stream);
  ASSERT_TRUE(block) << block.error().message;
  // Random bytes: their copy can be found in exactly one lease.
  std::string pattern(kBytes, '\0');
  std::mt19937_64 rng(42);
  for (auto& b : pattern) b = static_cast<char>(rng());
  std::memcpy(*block, pattern.data(), kBytes);

  const auto leased = d.leased_by("worker-1");
  EXPECT_GE(leased, kBytes);
  EXPECT_GE(d.leases().value("leases", 0), 1);
  auto items = d.allocations_of("worker-1");
  ASSERT_FALSE(items.empty());
  std::uint64_t listed = 0;
  bool found = false;
  for (const auto& a : items) {
    EXPECT_EQ(a.value("tags", json::array()), json::array({"lease"}));
    EXPECT_TRUE(a.value("exportable", false));
    listed += a.value("sizeBytes", std::uint64_t{0});
    auto c = d.http();
    auto r = c.Get("/api/memory/allocations/" + a.value("allocationId", "") + "/data",
                   httplib::Headers{{"X-Memd-Owner", "worker-1"}});
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    // The block's first 64 KiB, anywhere in a lease: the daemon holds them.
    found = found || std::search(r->body.begin(), r->body.end(), pattern.begin(), pattern.begin() + 65536) !=
                         r->body.end();
  }
  EXPECT_EQ(listed, leased) << "every lease is one allocation of its owner";
  EXPECT_TRUE(found) << "the worker's bytes are not in the daemon's leased memory";

  ASSERT_TRUE(engine->free_async(*block, *stream));
  ASSERT_TRUE(engine->synchronize(*stream));
  { auto closing = std::move(*engine); }  // closes the engine and its connection
  EXPECT_TRUE(d.eventually([&] { return d.leased_by("worker-1") == 0; })) << d.leases().dump();
  EXPECT_TRUE(d.eventually([&] { return d.allocations_of("worker-1").empty(); }));
}

TEST(LeaseClient, TheDaemonsQuotaBoundsTheWorker) {
  LeaseDaemon d;
  {
    auto c = d.http();
    auto r = c.Put("/api/memory/limits", httplib::Headers{{"X-Memd-Admin", "true"}},
                   R"({"owner": "worker-2", "bytes": "24MiB"})", "application/json");
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
  }
  auto engine = client_engine(d, "worker-2");
  ASSERT_TRUE(engine) << engine.error().message;
  auto stream = engine->create_stream(DeviceId::host(0));
  ASSERT_TRUE(stream);
  auto small = engine->allocate_async(8ull << 20, *stream);
  ASSERT_TRUE(small) << small.error().message;
  auto big = engine->allocate_async(64ull << 20, *stream);
  ASSERT_FALSE(big) << "a 64 MiB block grew the lease past worker-2's 24 MiB quota";
  EXPECT_EQ(big.error().code, ErrorCode::quota_exceeded) << big.error().message;
  EXPECT_LE(d.leased_by("worker-2"), 24ull << 20);
  // The worker keeps working within its quota.
  auto again = engine->allocate_async(4ull << 20, *stream);
  ASSERT_TRUE(again) << again.error().message;
  std::memset(*again, 1, 4ull << 20);
  EXPECT_TRUE(engine->free_async(*again, *stream));
  EXPECT_TRUE(engine->free_async(*small, *stream));
}

TEST(LeaseClient, AKilledWorkerLeaksNothing) {
  LeaseDaemon d;
  testing::ChildProcess child({MEMD_LEASE_CHILD, d.socket(), "worker-3", std::to_string(32ull << 20)});
  auto ready = child.read_line();
  ASSERT_TRUE(ready && *ready == "ready") << "the child did not come up";
  EXPECT_GE(d.leased_by("worker-3"), 32ull << 20);
  child.signal(SIGKILL);
  (void)child.wait();
  EXPECT_TRUE(d.eventually([&] { return d.leased_by("worker-3") == 0; })) << d.leases().dump();
  EXPECT_TRUE(d.eventually([&] { return d.allocations_of("worker-3").empty(); }));
  EXPECT_EQ(d.status().value("devices", json::array()).at(0).value("allocations", -1), 0);
}

TEST(LeaseClient, NoDaemonIsUnavailable) {
  EngineOptions o;
  o.host_device_sizes = {64ull << 20};
  o.enable_cuda = false;
  o.lease_socket = "/nonexistent/memd.sock";
  auto engine = Engine::open(o);
  ASSERT_FALSE(engine);
  EXPECT_EQ(engine.error().code, ErrorCode::unavailable);
}

TEST(LeaseSocket, HostileLeaseRequestsAreRefusedAndChangeNothing) {
  LeaseDaemon d;
  testing::SocketClient early(d.socket());
  ASSERT_TRUE(early.connected());
  auto before_hello = early.call("memory_lease", {{"sizeBytes", 2097152}, {"deviceId", "host:0"}});
  ASSERT_TRUE(before_hello);
  EXPECT_EQ(before_hello->code(), "unauthenticated");

  testing::SocketClient s(d.socket());
  auto hello = s.hello({{"owner", "mallory"}});
  ASSERT_TRUE(hello && hello->ok());
  struct Case {
    json params;
    std::string code;
  };
  const std::vector<Case> cases = {
      {json::object(), "invalid_argument"},
      {{{"sizeBytes", 0}, {"deviceId", "host:0"}}, "invalid_argument"},
      {{{"sizeBytes", 2097152}}, "invalid_argument"},
      {{{"sizeBytes", 2097152}, {"deviceId", "host:0"}, {"gpuUuid", "GPU-x"}}, "invalid_argument"},
      {{{"sizeBytes", 2097152}, {"deviceId", "cpu"}}, "invalid_argument"},
      {{{"sizeBytes", 2097152}, {"deviceId", "host:7"}}, "not_found"},
      {{{"sizeBytes", 2097152}, {"gpuUuid", "GPU-00000000-0000-0000-0000-000000000000"}}, "not_found"},
      {{{"sizeBytes", 2097152}, {"deviceId", "host:0"}, {"sizeByte", 1}}, "invalid_argument"},
      {{{"sizeBytes", "lots"}, {"deviceId", "host:0"}}, "invalid_argument"},
      {{{"sizeBytes", -1}, {"deviceId", "host:0"}}, "invalid_argument"},
      {{{"sizeBytes", 1ull << 40}, {"deviceId", "host:0"}}, "out_of_memory"},
      {{{"sizeBytes", 2097152}, {"deviceId", 7}}, "invalid_argument"},
  };
  for (const auto& c : cases) {
    auto a = s.call("memory_lease", c.params);
    ASSERT_TRUE(a) << c.params.dump();
    EXPECT_EQ(a->code(), c.code) << c.params.dump() << " → " << a->line;
    EXPECT_TRUE(a->fds.empty());
  }
  for (const auto& p : {json::object(), json{{"leaseId", "nope"}},
                        json{{"leaseId", "11111111-2222-4333-8444-555555555555"}}, json{{"leaseId", 3}}}) {
    auto a = s.call("memory_lease_release", p);
    ASSERT_TRUE(a);
    EXPECT_FALSE(a->ok()) << p.dump();
  }
  EXPECT_EQ(d.leases().value("leases", -1), 0);

  // A real lease, then another connection of the same owner cannot end it.
  auto granted = s.call("memory_lease", {{"sizeBytes", 2097152}, {"deviceId", "host:0"}});
  ASSERT_TRUE(granted && granted->ok()) << (granted ? granted->line : "");
  ASSERT_EQ(granted->fds.size(), 1u);
  const std::string id = granted->json["result"].value("leaseId", "");
  EXPECT_EQ(granted->json["result"].value("mapSize", 0), 2097152);
  testing::SocketClient other(d.socket());
  auto other_hello = other.hello({{"owner", "mallory"}});
  ASSERT_TRUE(other_hello && other_hello->ok());
  auto stolen = other.call("memory_lease_release", {{"leaseId", id}});
  ASSERT_TRUE(stolen);
  EXPECT_EQ(stolen->code(), "not_found");
  EXPECT_EQ(d.leased_by("mallory"), 2097152u);
  auto released = s.call("memory_lease_release", {{"leaseId", id}});
  ASSERT_TRUE(released && released->ok()) << (released ? released->line : "");
  EXPECT_EQ(d.leased_by("mallory"), 0u);
  auto twice = s.call("memory_lease_release", {{"leaseId", id}});
  ASSERT_TRUE(twice);
  EXPECT_EQ(twice->code(), "not_found");
  EXPECT_FALSE(d.status().is_null()) << "the daemon stopped serving";
}

}  // namespace
}  // namespace memd
