// The Unix socket door (server/socket/unix_socket_server.hpp) with a test
// handler: hello through a token table, refusals that close and those that
// do not, descriptors that arrive with their answer and map to the bytes the
// handler wrote, the bounds (line length, connections, silence, unread
// answers), 200 clients at once, closed() exactly once per admitted
// connection (stop() included), and the socket file's life (mode 0660, a
// stale one replaced, a live one or a plain file refused, removed at stop).
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <fstream>
#include <latch>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "server/socket/unix_socket_server.hpp"
#include "server/socket_client.hpp"
#include "server/socket_test_support.hpp"

namespace memd {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::SocketClient;
using testing::TempSocketDir;

const TokenTable kTokens = {{"alice-token", "alice", false, 1},
                            {"bob-token", "bob", false, 2},
                            {"root-token", "ops", true, 3}};

// Answers a few test actions and records every admit and close.
class TestHandler : public SocketHandler {
 public:
  Result<void> admit(const Caller& caller, const SocketPeer& peer) override {
    std::lock_guard lock(mu_);
    if (caller.owner == "refused") return fail(ErrorCode::not_found, "no such session (test)");
    admitted_.emplace(peer.connection, std::pair{caller, peer});
    return {};
  }

  Result<SocketReply> handle(const Caller& caller, std::string_view action, const json& params,
                             const SocketPeer& peer) override {
    if (action == "echo")
      return SocketReply{{{"params", params}, {"owner", caller.owner}, {"connection", peer.connection}}, {}};
    if (action == "memfd") {
      // {"seed": S, "size": N} → one memfd of N bytes of pattern S.
      const auto seed = params.value("seed", std::uint64_t{1});
      const auto size = params.value("size", std::size_t{4096});
      const int fd = testing::pattern_memfd(seed, size);
      if (fd < 0) return fail(ErrorCode::internal, "memfd_create failed");
      return SocketReply{{{"sizeBytes", size}}, {fd}};
    }
    if (action == "memfds") {
      SocketReply reply;
      for (std::size_t i = 0; i < params.value("count", std::size_t{2}); ++i)
        reply.fds.push_back(testing::pattern_memfd(i, 4096));
      return reply;
    }
    if (action == "throw") throw std::runtime_error("boom");
    if (action == "throw_any") throw 42;
    if (action == "array") return SocketReply{json::array(), {}};
    if (action == "claims_fds") return SocketReply{{{"fds", 3}}, {}};
    if (action == "refuse") return fail(ErrorCode::permission_denied, "not yours (test)");
    return fail(ErrorCode::not_found, "unknown action (test)");
  }

  void closed(const SocketPeer& peer) override {
    std::lock_guard lock(mu_);
    ++closed_[peer.connection];
    cv_.notify_all();
  }

  std::size_t admitted() const {
    std::lock_guard lock(mu_);
    return admitted_.size();
  }
  std::pair<Caller, SocketPeer> admitted(std::uint64_t connection) const {
    std::lock_guard lock(mu_);
    return admitted_.at(connection);
  }
  std::map<std::uint64_t, int> closed_counts() const {
    std::lock_guard lock(mu_);
    return closed_;
  }
  // Waits until `n` connections were closed; false at the timeout.
  bool wait_closed(std::size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return closed_.size() >= n; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::uint64_t, std::pair<Caller, SocketPeer>> admitted_;
  std::map<std::uint64_t, int> closed_;
};

class UnixSocketServerTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.ok()); }

  void start(CallerResolver resolver = CallerResolver("", kTokens), SocketOptions options = {}) {
    server_ = std::make_unique<UnixSocketServer>(path_, handler_, std::move(resolver), options);
    auto ok = server_->start();
    ASSERT_TRUE(ok) << ok.error().message;
  }
  std::unique_ptr<SocketClient> connect() { return std::make_unique<SocketClient>(path_); }
  // A connected client that said hello as `token`'s owner.
  std::unique_ptr<SocketClient> authenticated(const std::string& token = "alice-token") {
    auto client = connect();
    EXPECT_TRUE(client->connected());
    auto hello = client->hello({{"token", token}});
    EXPECT_TRUE(hello && hello->ok()) << (hello ? hello->line : "no answer");
    return client;
  }
  static bool eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  TempSocketDir dir_;
  const std::string path_ = dir_.file("memd.sock");
  TestHandler handler_;
  std::unique_ptr<UnixSocketServer> server_;
};

TEST_F(UnixSocketServerTest, HelloWithATokenNamesTheOwner) {
  start();
  auto client = connect();
  ASSERT_TRUE(client->connected());
  auto hello = client->hello({{"token", "alice-token"}});
  ASSERT_TRUE(hello);
  ASSERT_TRUE(hello->ok()) << hello->line;
  const auto& result = hello->result();
  EXPECT_EQ(result["owner"], "alice");
  EXPECT_EQ(result["admin"], false);
  EXPECT_TRUE(result["session"].is_null());
  const auto connection = result["connection"].get<std::uint64_t>();
  EXPECT_GT(connection, 0u);

  ASSERT_EQ(handler_.admitted(), 1u);
  auto [caller, peer] = handler_.admitted(connection);
  EXPECT_EQ(caller.owner, "alice");
  EXPECT_EQ(peer.connection, connection);
  // SO_PEERCRED: the peer is this very process.
  EXPECT_EQ(peer.pid, ::getpid());
  EXPECT_EQ(peer.uid, ::getuid());
  EXPECT_EQ(peer.gid, ::getgid());

  auto echo = client->call("echo", {{"x", 1}});
  ASSERT_TRUE(echo && echo->ok()) << (echo ? echo->line : "no answer");
  EXPECT_EQ(echo->result()["owner"], "alice");
  EXPECT_EQ(echo->result()["params"], json({{"x", 1}}));
  EXPECT_EQ(echo->result()["connection"], connection);
  EXPECT_FALSE(echo->result().contains("fds"));

  // The admin token, with a session; a second hello is a conflict.
  auto root = connect();
  auto admin = root->hello({{"token", "root-token"}, {"session", "a1b2c3d4-e5f6-4890-abcd-ef1234567890"}});
  ASSERT_TRUE(admin && admin->ok()) << (admin ? admin->line : "");
  EXPECT_EQ(admin->result()["owner"], "ops");
  EXPECT_EQ(admin->result()["admin"], true);
  EXPECT_EQ(admin->result()["session"], "a1b2c3d4-e5f6-4890-abcd-ef1234567890");
  EXPECT_NE(admin->result()["connection"], connection);
  auto again = root->hello({{"token", "root-token"}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->code(), "conflict");
  EXPECT_TRUE(root->call("echo")->ok());  // still usable
}

TEST_F(UnixSocketServerTest, ARefusedHelloEndsTheConnection) {
  start();
  struct Case {
    json params;
    std::string code;
  };
  for (const auto& c : {Case{{{"token", "wrong"}}, "unauthenticated"},
                        Case{json::object(), "unauthenticated"},
                        Case{{{"owner", "alice"}}, "unauthenticated"},
                        Case{{{"token", "bob-token"}, {"owner", "alice"}}, "permission_denied"},
                        Case{{{"token", "bob-token"}, {"admin", true}}, "permission_denied"},
                        Case{{{"token", "bob-token"}, {"admin", "yes"}}, "invalid_argument"},
                        Case{{{"token", "bob-token"}, {"sesion", "x"}}, "invalid_argument"},
                        Case{{{"token", "bob-token"}, {"session", "nope"}}, "invalid_argument"}}) {
    auto client = connect();
    auto hello = client->hello(c.params);
    ASSERT_TRUE(hello) << c.params.dump();
    EXPECT_EQ(hello->code(), c.code) << hello->line;
    EXPECT_TRUE(client->wait_closed()) << c.params.dump();
  }
  // The handler's refusal too; such connections were never admitted.
  CallerResolver open("", {});
  server_.reset();
  start(open);
  auto client = connect();
  auto refused = client->hello({{"owner", "refused"}});
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->code(), "not_found");
  EXPECT_TRUE(client->wait_closed());
  EXPECT_EQ(handler_.admitted(), 0u);
  server_->stop();
  EXPECT_TRUE(handler_.closed_counts().empty());
}

TEST_F(UnixSocketServerTest, RequestsBeforeHelloAreUnauthenticatedButTheConnectionStays) {
  start();
  auto client = connect();
  auto early = client->call("echo");
  ASSERT_TRUE(early);
  EXPECT_EQ(early->code(), "unauthenticated");
  EXPECT_NE(early->message().find("hello"), std::string::npos) << early->message();
  EXPECT_EQ(handler_.admitted(), 0u);
  ASSERT_TRUE(client->hello({{"token", "bob-token"}})->ok());
  auto later = client->call("echo");
  ASSERT_TRUE(later && later->ok());
  EXPECT_EQ(later->result()["owner"], "bob");
}

TEST_F(UnixSocketServerTest, DescriptorsArriveWithTheirAnswerAndMapToTheHandlersBytes) {
  start();
  auto client = authenticated();
  const auto before = testing::open_descriptors();
  {
    auto answer = client->call("memfd", {{"seed", 5}, {"size", 3 * 4096}});
    ASSERT_TRUE(answer && answer->ok()) << (answer ? answer->line : "");
    EXPECT_EQ(answer->result()["fds"], 1);
    ASSERT_EQ(answer->fds.size(), 1u);
    const int fd = answer->fds[0].get();
    struct stat st {};
    ASSERT_EQ(::fstat(fd, &st), 0);
    EXPECT_EQ(st.st_size, 3 * 4096);
    void* map = ::mmap(nullptr, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(map, MAP_FAILED);
    const auto* bytes = static_cast<const std::uint8_t*>(map);
    for (std::size_t i = 0; i < 3 * 4096; ++i)
      ASSERT_EQ(bytes[i], testing::pattern_byte(5, i)) << "byte " << i;
    ::munmap(map, 3 * 4096);
  }
  // Pipelined: two answers with descriptors sent before either is read each
  // get their own.
  ASSERT_TRUE(client->send({{"id", "a"}, {"action", "memfd"}, {"params", {{"seed", 1}, {"size", 64}}}}));
  ASSERT_TRUE(client->send({{"id", "b"}, {"action", "memfds"}, {"params", {{"count", 3}}}}));
  ASSERT_TRUE(client->send({{"id", "c"}, {"action", "memfd"}, {"params", {{"seed", 2}, {"size", 64}}}}));
  auto a = client->receive(), b = client->receive(), c = client->receive();
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->json["id"], "a");
  EXPECT_EQ(b->json["id"], "b");
  ASSERT_EQ(a->fds.size(), 1u);
  ASSERT_EQ(b->fds.size(), 3u);
  ASSERT_EQ(c->fds.size(), 1u);
  EXPECT_EQ(client->descriptors_waiting(), 0u);
  for (auto [answer, seed] : {std::pair{&*a, 1}, std::pair{&*c, 2}}) {
    std::uint8_t first[4] = {};
    ASSERT_EQ(::pread(answer->fds[0].get(), first, sizeof first, 0), 4);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(first[i], testing::pattern_byte(seed, i));
  }
  a.reset();
  b.reset();
  c.reset();
  // The door closed its copies: once ours are closed, nothing is left open.
  EXPECT_TRUE(eventually([&] { return testing::open_descriptors() == before; }))
      << testing::open_descriptors() << " open, " << before << " before";
}

TEST_F(UnixSocketServerTest, BadRepliesAndExceptionsAreInternalAndLeakNoDescriptor) {
  start();
  auto client = authenticated();
  const auto before = testing::open_descriptors();
  auto many = client->call("memfds", {{"count", kMaxSocketFds + 1}});
  ASSERT_TRUE(many);
  EXPECT_EQ(many->code(), "internal");
  EXPECT_NE(many->message().find("16"), std::string::npos) << many->message();
  EXPECT_TRUE(eventually([&] { return testing::open_descriptors() == before; }));
  auto sixteen = client->call("memfds", {{"count", kMaxSocketFds}});
  ASSERT_TRUE(sixteen && sixteen->ok()) << (sixteen ? sixteen->line : "");
  EXPECT_EQ(sixteen->fds.size(), kMaxSocketFds);
  sixteen.reset();

  for (std::string_view action : {"throw", "throw_any", "array"}) {
    auto answer = client->call(action);
    ASSERT_TRUE(answer) << action;
    EXPECT_EQ(answer->code(), "internal") << answer->line;
  }
  // Only the door says how many descriptors came along.
  auto claims = client->call("claims_fds");
  ASSERT_TRUE(claims && claims->ok());
  EXPECT_FALSE(claims->result().contains("fds")) << claims->line;
  auto refused = client->call("refuse");
  EXPECT_EQ(refused->code(), "permission_denied");
  EXPECT_EQ(client->call("no_such_action")->code(), "not_found");
  EXPECT_TRUE(client->call("echo")->ok());  // the connection survived all of it
  EXPECT_TRUE(eventually([&] { return testing::open_descriptors() == before; }));
}

TEST_F(UnixSocketServerTest, GarbageIsAnsweredAndTheConnectionStaysUsable) {
  start();
  auto client = authenticated();
  struct Case {
    std::string line;
    json id;
  };
  for (const auto& c : {Case{"not json", nullptr}, Case{"[1, 2]", nullptr}, Case{"\xff\xfe\x01", nullptr},
                        Case{R"({"id": "7", "action": 5})", "7"}, Case{R"({"id": "8", "action": "echo", "params": []})", "8"},
                        Case{R"({"id": 9})", 9}, Case{std::string(2000, '[') + "]", nullptr},
                        Case{R"({"id": "z", "action": "e\u0000cho"})", "z"},
                        Case{std::string("{\"id\": \"z\", \"action\": \"e\0cho\"}", 30), nullptr}}) {
    ASSERT_TRUE(client->send_line(c.line));
    auto answer = client->receive();
    ASSERT_TRUE(answer) << c.line;
    EXPECT_EQ(answer->code(), "invalid_argument") << answer->line;
    EXPECT_EQ(answer->json["id"], c.id) << answer->line;
  }
  // Blank lines are no requests; CRLF ends a line as LF does.
  ASSERT_TRUE(client->send_raw("\n  \n\r\n{\"id\": \"crlf\", \"action\": \"echo\"}\r\n"));
  auto crlf = client->receive();
  ASSERT_TRUE(crlf && crlf->ok()) << (crlf ? crlf->line : "");
  EXPECT_EQ(crlf->json["id"], "crlf");
  EXPECT_TRUE(client->call("echo")->ok());
}

TEST_F(UnixSocketServerTest, AnOverLongLineIsRefusedAndClosesTheConnection) {
  start();
  auto client = authenticated();
  // Exactly at the limit is a request like any other.
  std::string request = R"({"id": "max", "action": "echo", "params": {"pad": ""}})";
  request.insert(request.size() - 3, std::string(kMaxSocketLine - request.size(), 'p'));
  ASSERT_EQ(request.size(), kMaxSocketLine);
  ASSERT_TRUE(client->send_line(request));
  auto at_limit = client->receive();
  ASSERT_TRUE(at_limit && at_limit->ok()) << (at_limit ? at_limit->line.substr(0, 200) : "");

  ASSERT_TRUE(client->send_line(std::string(kMaxSocketLine + 1, 'x')));
  auto too_long = client->receive();
  ASSERT_TRUE(too_long);
  EXPECT_EQ(too_long->code(), "payload_too_large");
  EXPECT_TRUE(client->wait_closed());

  // A line that never ends is cut off too, before it is whole.
  auto endless = authenticated();
  ASSERT_TRUE(endless->send_raw(std::string(3 * kMaxSocketLine, '{')));
  auto cut = endless->receive();
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->code(), "payload_too_large");
  EXPECT_TRUE(endless->wait_closed());
  EXPECT_TRUE(handler_.wait_closed(2));
}

TEST_F(UnixSocketServerTest, TwoHundredClientsAtOnce) {
  start(CallerResolver("", {}));
  constexpr int kClients = 200;
  std::latch all_said_hello(kClients);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i)
    threads.emplace_back([&, i] {
      SocketClient client(path_);
      const std::string owner = "client-" + std::to_string(i);
      auto hello = client.hello({{"owner", owner}});
      if (!hello || !hello->ok()) ++failures;
      all_said_hello.arrive_and_wait();
      for (int k = 0; k < 5; ++k) {
        auto echo = client.call("echo", {{"k", k}, {"i", i}});
        if (!echo || !echo->ok() || echo->result()["owner"] != owner || echo->result()["params"]["k"] != k)
          ++failures;
      }
      auto fd = client.call("memfd", {{"seed", i}, {"size", 16}});
      std::uint8_t byte = 0;
      if (!fd || fd->fds.size() != 1 || ::pread(fd->fds[0].get(), &byte, 1, 7) != 1 ||
          byte != testing::pattern_byte(static_cast<std::uint64_t>(i), 7))
        ++failures;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(handler_.admitted(), static_cast<std::size_t>(kClients));
  ASSERT_TRUE(handler_.wait_closed(kClients));
  for (const auto& [connection, times] : handler_.closed_counts()) EXPECT_EQ(times, 1) << connection;
  EXPECT_TRUE(eventually([&] { return server_->connections() == 0; }));
}

TEST_F(UnixSocketServerTest, ClosedIsCalledOncePerAdmittedConnectionStopIncluded) {
  start();
  auto first = authenticated(), second = authenticated("bob-token"), third = authenticated();
  auto anonymous = connect();  // never says hello: never admitted, never closed()
  ASSERT_TRUE(anonymous->connected());
  first->close();
  ASSERT_TRUE(handler_.wait_closed(1));
  EXPECT_EQ(handler_.closed_counts().size(), 1u);
  EXPECT_TRUE(eventually([&] { return server_->connections() == 3; }));

  server_->stop();
  auto closed = handler_.closed_counts();
  EXPECT_EQ(closed.size(), 3u);
  for (const auto& [connection, times] : closed) EXPECT_EQ(times, 1) << connection;
  EXPECT_TRUE(second->wait_closed());
  EXPECT_TRUE(third->wait_closed());
  EXPECT_TRUE(anonymous->wait_closed());
  EXPECT_EQ(server_->connections(), 0u);
  EXPECT_FALSE(std::filesystem::exists(path_));  // the file went with the socket
  server_->stop();                                // idempotent
  EXPECT_EQ(handler_.closed_counts().size(), 3u);
}

TEST_F(UnixSocketServerTest, TheSocketFileIsMode0660AndStartsOnce) {
  start();
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  EXPECT_EQ(server_->path(), path_);
  auto twice = server_->start();
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, ErrorCode::conflict);
}

TEST_F(UnixSocketServerTest, AStaleSocketFileIsReplaced) {
  // A socket file nobody listens on, as a daemon that died leaves it.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);
  }
  ASSERT_TRUE(std::filesystem::exists(path_));
  start();
  EXPECT_TRUE(authenticated()->call("echo")->ok());
}

TEST_F(UnixSocketServerTest, ALiveSocketOrAnotherFileIsNotTouched) {
  start();
  TestHandler other_handler;
  UnixSocketServer second(path_, other_handler, CallerResolver("", kTokens));
  auto refused = second.start();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::conflict);
  EXPECT_NE(refused.error().message.find("another process"), std::string::npos) << refused.error().message;
  second.stop();
  // The first still serves, on its file.
  EXPECT_TRUE(authenticated()->call("echo")->ok());

  const std::string plain = dir_.file("plain");
  std::ofstream(plain) << "not a socket";
  UnixSocketServer third(plain, other_handler, CallerResolver("", kTokens));
  auto not_socket = third.start();
  ASSERT_FALSE(not_socket);
  EXPECT_EQ(not_socket.error().code, ErrorCode::conflict);
  EXPECT_TRUE(std::filesystem::is_regular_file(plain));
}

TEST_F(UnixSocketServerTest, PathsThatCannotBeSocketsAreRefused) {
  TestHandler h;
  UnixSocketServer empty("", h, CallerResolver("", {}));
  EXPECT_EQ(empty.start().error().code, ErrorCode::invalid_argument);
  UnixSocketServer too_long("/tmp/" + std::string(120, 's'), h, CallerResolver("", {}));
  EXPECT_EQ(too_long.start().error().code, ErrorCode::invalid_argument);
  UnixSocketServer no_dir(dir_.file("missing/memd.sock"), h, CallerResolver("", {}));
  EXPECT_EQ(no_dir.start().error().code, ErrorCode::unavailable);
}

TEST_F(UnixSocketServerTest, ConnectionsPastTheLimitAreRefused) {
  SocketOptions options;
  options.max_connections = 4;
  start(CallerResolver("", kTokens), options);
  std::vector<std::unique_ptr<SocketClient>> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(authenticated());
  auto extra = connect();
  auto refusal = extra->receive();
  ASSERT_TRUE(refusal);
  EXPECT_EQ(refusal->code(), "unavailable");
  EXPECT_TRUE(extra->wait_closed());
  for (auto& c : clients) EXPECT_TRUE(c->call("echo")->ok());

  clients[0]->close();
  ASSERT_TRUE(eventually([&] { return server_->connections() == 3; }));
  EXPECT_TRUE(authenticated()->call("echo")->ok());
}

TEST_F(UnixSocketServerTest, ASilentPeerIsClosedAfterTheHelloTimeout) {
  SocketOptions options;
  options.hello_timeout = 200ms;
  start(CallerResolver("", kTokens), options);
  auto silent = connect();
  auto greeted = authenticated();
  auto notice = silent->receive(5s);
  ASSERT_TRUE(notice);
  EXPECT_EQ(notice->code(), "unauthenticated");
  EXPECT_TRUE(silent->wait_closed());
  // Said hello: no timeout applies (an importer holds its connection open).
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(greeted->call("echo")->ok());
}

TEST_F(UnixSocketServerTest, APeerThatDoesNotReadHoldsUpNoOne) {
  SocketOptions options;
  options.max_pending_output = 64 * 1024;
  start(CallerResolver("", kTokens), options);
  auto greedy = authenticated();
  // Requests whose answers it never reads, as fast as the socket takes them,
  // until the door stops reading it (the send would block).
  const std::string line =
      json({{"id", "g"}, {"action", "echo"}, {"params", {{"pad", std::string(1024, 'g')}}}}).dump() + "\n";
  std::size_t sent = 0;
  for (int i = 0; i < 100'000; ++i) {
    const ssize_t n = ::send(greedy->fd(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) break;
    sent += static_cast<std::size_t>(n);
    if (static_cast<std::size_t>(n) < line.size()) break;  // the rest would wait: leave that line unfinished
  }
  EXPECT_GT(sent, 64u * 1024);
  auto other = authenticated("bob-token");
  const auto t0 = std::chrono::steady_clock::now();
  auto echo = other->call("echo");
  ASSERT_TRUE(echo && echo->ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_EQ(server_->connections(), 2u);  // the greedy one is held back, not dropped
  // Once it reads, it is answered again.
  std::size_t answers = 0;
  while (auto answer = greedy->receive(200ms)) {
    ASSERT_TRUE(answer->ok()) << answer->line.substr(0, 200);
    ++answers;
  }
  EXPECT_GT(answers, 0u);
}

TEST_F(UnixSocketServerTest, APeerThatClosesAfterItsRequestsIsStillServed) {
  start();
  auto client = authenticated();
  // Sent without waiting, then the write side closed: each is still handled.
  ASSERT_TRUE(client->send_raw(R"({"id": "1", "action": "echo"})"
                               "\n"
                               R"({"id": "2", "action": "echo"})"));
  ASSERT_EQ(::shutdown(client->fd(), SHUT_WR), 0);
  auto one = client->receive(), two = client->receive();
  ASSERT_TRUE(one && two);
  EXPECT_EQ(one->json["id"], "1");
  EXPECT_EQ(two->json["id"], "2");  // the last line lacked its newline
  EXPECT_TRUE(client->wait_closed());
  EXPECT_TRUE(handler_.wait_closed(1));
}

}  // namespace
}  // namespace memd
