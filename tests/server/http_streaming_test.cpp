// The data routes streamed (issue 12): uploads and downloads far larger than
// a piece keep every byte, with Content-Length and chunked, at offsets that
// do not line up with pieces; an upload that cannot fit is refused before its
// body is read (and writes nothing); a body that stops half-way or runs past
// the end leaves the daemon serving; HEAD answers a download's length; slow
// readers of big downloads hold no worker, so others are served meanwhile;
// a download whose allocation is freed mid-way is cut short, never padded.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/http/data_streams.hpp"
#include "server/http_test_support.hpp"

namespace memd::testing {
namespace {

std::string request(std::string_view method, const std::string& target, std::string_view extra_headers = {},
                    std::string_view body = {}) {
  std::string out = std::string(method) + " " + target + " HTTP/1.1\r\nHost: memd\r\n" + std::string(extra_headers);
  if (!body.empty() || method == "PUT" || method == "POST")
    out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return out + "\r\n" + std::string(body);
}

// Allocates `size` bytes on host:0 over `client`; the id, or "" on failure.
std::string allocate(Socket& client, std::uint64_t size) {
  const std::string body = R"({"sizeBytes": )" + std::to_string(size) + R"(, "deviceId": "host:0"})";
  if (!client.send(request("POST", "/api/memory/allocations", "Content-Type: application/json\r\n", body)))
    return "";
  const auto answer = client.response();
  if (!answer || !answer->starts_with("HTTP/1.1 201")) return "";
  return nlohmann::json::parse(body_of(*answer))["allocationId"];
}

std::string data_path(const std::string& id, std::string_view query = {}) {
  return "/api/memory/allocations/" + id + "/data" + std::string(query);
}

// `bytes` as a chunked body with chunk sizes that vary and straddle pieces.
std::string chunked(std::string_view bytes) {
  std::string out;
  std::size_t at = 0, step = 1;
  while (at < bytes.size()) {
    const std::size_t n = std::min(bytes.size() - at, (step * 7919) % 150'000 + 1);
    char size[32];
    std::snprintf(size, sizeof size, "%zx\r\n", n);
    out += size;
    out.append(bytes.substr(at, n));
    out += "\r\n";
    at += n;
    ++step;
  }
  return out + "0\r\n\r\n";
}

TEST(HttpStreaming, LargeBodiesKeepEveryByteWithContentLengthAndChunked) {
  Server server;
  ASSERT_NE(server.port(), 0);
  Socket client(server.port());
  // Not a multiple of either piece size, so the last pieces are partial.
  constexpr std::size_t kSize = 24 * kMiB + 12345;
  const std::string id = allocate(client, kSize);
  ASSERT_FALSE(id.empty());
  const std::string bytes = pattern_bytes(kSize, 7);

  ASSERT_TRUE(client.send(request("PUT", data_path(id), "Content-Type: application/octet-stream\r\n", bytes)));
  auto put = client.response(milliseconds(60'000));
  ASSERT_TRUE(answered_ok(put)) << put.value_or("(no answer)").substr(0, 300);
  const auto written = nlohmann::json::parse(body_of(*put));
  EXPECT_EQ(written["bytesWritten"], kSize);
  EXPECT_EQ(written["offset"], 0);

  ASSERT_TRUE(client.send(request("GET", data_path(id))));
  auto get = client.response(milliseconds(60'000));
  ASSERT_TRUE(answered_ok(get));
  EXPECT_NE(get->find("Content-Length: " + std::to_string(kSize)), std::string::npos);
  EXPECT_TRUE(body_of(*get) == bytes) << "the download differs from the upload";

  // A window that starts and ends inside pieces.
  constexpr std::size_t kOffset = 777, kLength = 5 * kMiB + 3;
  ASSERT_TRUE(client.send(
      request("GET", data_path(id, "?offset=" + std::to_string(kOffset) + "&length=" + std::to_string(kLength)))));
  auto window = client.response(milliseconds(60'000));
  ASSERT_TRUE(answered_ok(window));
  EXPECT_TRUE(body_of(*window) == bytes.substr(kOffset, kLength));

  // Chunked, at an offset, in chunks that straddle pieces; the same
  // connection goes on afterwards.
  const std::string update = pattern_bytes(3 * kMiB + 5, 11);
  ASSERT_TRUE(client.send("PUT " + data_path(id, "?offset=3") +
                          " HTTP/1.1\r\nHost: memd\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(update)));
  auto chunked_put = client.response(milliseconds(60'000));
  ASSERT_TRUE(answered_ok(chunked_put)) << chunked_put.value_or("(no answer)");
  EXPECT_EQ(nlohmann::json::parse(body_of(*chunked_put))["bytesWritten"], update.size());
  ASSERT_TRUE(client.send(request("GET", data_path(id, "?length=" + std::to_string(update.size() + 6)))));
  auto back = client.response(milliseconds(60'000));
  ASSERT_TRUE(answered_ok(back));
  EXPECT_TRUE(body_of(*back) == bytes.substr(0, 3) + update + bytes.substr(3 + update.size(), 3));
}

TEST(HttpStreaming, AnUploadThatCannotFitIsRefusedBeforeItsBodyAndWritesNothing) {
  Server server;
  ASSERT_NE(server.port(), 0);
  Socket setup(server.port());
  const std::string id = allocate(setup, 4096);
  ASSERT_FALSE(id.empty());
  const std::string original = pattern_bytes(4096, 3);
  ASSERT_TRUE(setup.send(request("PUT", data_path(id), {}, original)));
  ASSERT_TRUE(answered_ok(setup.response()));

  // The header alone: the answer comes without a body byte sent.
  {
    Socket client(server.port());
    ASSERT_TRUE(client.send("PUT " + data_path(id) + " HTTP/1.1\r\nHost: memd\r\nContent-Length: 8192\r\n\r\n"));
    const auto answer = client.response(milliseconds(3000));
    ASSERT_TRUE(answer) << "no answer before the body";
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 416")) << *answer;
    EXPECT_NE(answer->find("out_of_range"), std::string::npos) << *answer;
  }
  // Past the end from an offset, with Expect: 100-continue: the refusal, not
  // a 100, so the client never sends the body.
  {
    Socket client(server.port());
    ASSERT_TRUE(client.send("PUT " + data_path(id, "?offset=4000") +
                            " HTTP/1.1\r\nHost: memd\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"));
    const auto answer = client.response(milliseconds(3000));
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 416")) << *answer;
  }
  // A client that sends its body anyway: still refused, and none of it lands.
  {
    Socket client(server.port());
    ASSERT_TRUE(client.send(request("PUT", data_path(id), {}, pattern_bytes(4097, 5))));
    const auto answer = client.response();
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 416")) << *answer;
  }
  // An unknown allocation: 404, before the body.
  {
    Socket client(server.port());
    ASSERT_TRUE(client.send("PUT " + data_path("00000000-0000-4000-8000-000000000000") +
                            " HTTP/1.1\r\nHost: memd\r\nContent-Length: 10\r\n\r\n"));
    const auto answer = client.response(milliseconds(3000));
    ASSERT_TRUE(answer);
    EXPECT_TRUE(answer->starts_with("HTTP/1.1 404")) << *answer;
  }
  ASSERT_TRUE(setup.send(request("GET", data_path(id))));
  const auto after = setup.response();
  ASSERT_TRUE(answered_ok(after));
  EXPECT_TRUE(body_of(*after) == original) << "a refused upload changed the allocation";
}

TEST(HttpStreaming, AChunkedUploadRunningPastTheEndIsStoppedWith416) {
  Server server;
  ASSERT_NE(server.port(), 0);
  Socket client(server.port());
  const std::string id = allocate(client, kMiB);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(client.send("PUT " + data_path(id) + " HTTP/1.1\r\nHost: memd\r\nTransfer-Encoding: chunked\r\n\r\n" +
                          chunked(pattern_bytes(2 * kMiB, 9))));
  const auto answer = client.response(milliseconds(10'000));
  ASSERT_TRUE(answer);
  EXPECT_TRUE(answer->starts_with("HTTP/1.1 416")) << *answer;
  EXPECT_NE(answer->find("were written"), std::string::npos) << "the message says how much landed: " << *answer;
  EXPECT_TRUE(client.closed_within(milliseconds(5000)));
  Socket other(server.port());
  ASSERT_TRUE(other.send(kHealthz));
  EXPECT_TRUE(answered_ok(other.response()));
}

TEST(HttpStreaming, ABodyThatStopsHalfWayLeavesTheDaemonServing) {
  Server server;
  ASSERT_NE(server.port(), 0);
  Socket setup(server.port());
  const std::string id = allocate(setup, 8 * kMiB);
  ASSERT_FALSE(id.empty());
  for (int round = 0; round < 3; ++round) {
    Socket client(server.port());
    ASSERT_TRUE(client.send("PUT " + data_path(id) + " HTTP/1.1\r\nHost: memd\r\nContent-Length: 8388608\r\n\r\n"));
    ASSERT_TRUE(client.send(pattern_bytes(kMiB + 100, static_cast<std::uint32_t>(round))));
    client.close();  // mid-body
  }
  // The daemon answers, and the allocation takes a whole upload afterwards.
  ASSERT_TRUE(setup.send(kHealthz));
  ASSERT_TRUE(answered_ok(setup.response()));
  const std::string bytes = pattern_bytes(8 * kMiB, 42);
  ASSERT_TRUE(setup.send(request("PUT", data_path(id), {}, bytes)));
  ASSERT_TRUE(answered_ok(setup.response(milliseconds(30'000))));
  ASSERT_TRUE(setup.send(request("GET", data_path(id))));
  const auto back = setup.response(milliseconds(30'000));
  ASSERT_TRUE(answered_ok(back));
  EXPECT_TRUE(body_of(*back) == bytes);
}

TEST(HttpStreaming, HeadOnDataAnswersTheLengthWithoutTheBody) {
  Server server;
  ASSERT_NE(server.port(), 0);
  Socket client(server.port());
  const std::string id = allocate(client, 3 * kMiB + 1);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(client.send(request("HEAD", data_path(id, "?offset=1")) + std::string(kHealthz)));
  const auto head = client.header_only();
  ASSERT_TRUE(head);
  EXPECT_TRUE(head->starts_with("HTTP/1.1 200")) << *head;
  EXPECT_NE(head->find("Content-Length: " + std::to_string(3 * kMiB)), std::string::npos) << *head;
  EXPECT_NE(head->find("application/octet-stream"), std::string::npos) << *head;
  // No body came: the next bytes are the pipelined /healthz's answer.
  const auto next = client.response();
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->starts_with("HTTP/1.1 200")) << next->substr(0, 100);
  EXPECT_NE(next->find("\"status\""), std::string::npos) << next->substr(0, 300);
  // HEAD of a read outside the allocation: the error's status, no body.
  ASSERT_TRUE(client.send(request("HEAD", data_path(id, "?offset=4194304")) + std::string(kHealthz)));
  const auto refused = client.header_only();
  ASSERT_TRUE(refused);
  EXPECT_TRUE(refused->starts_with("HTTP/1.1 416")) << *refused;
  EXPECT_TRUE(answered_ok(client.response()));
}

// Slow readers of big downloads park their connections, not the workers: with
// two workers and twelve stalled downloads (each past what the socket buffers
// hold), other requests are still served, and every download completes byte
// for byte once it is read.
TEST(HttpStreaming, SlowReadersHoldNoWorker) {
  HttpOptions options;
  options.threads = 2;
  Server server(options, 128 * kMiB);
  ASSERT_NE(server.port(), 0);
  Socket setup(server.port());
  constexpr std::size_t kSize = 16 * kMiB;
  const std::string id = allocate(setup, kSize);
  ASSERT_FALSE(id.empty());
  const std::string bytes = pattern_bytes(kSize, 21);
  ASSERT_TRUE(setup.send(request("PUT", data_path(id), {}, bytes)));
  ASSERT_TRUE(answered_ok(setup.response(milliseconds(30'000))));

  std::vector<Socket> readers;
  for (int i = 0; i < 12; ++i) {
    readers.emplace_back(server.port());
    readers.back().set_receive_buffer(256 * 1024);
    ASSERT_TRUE(readers.back().send(request("GET", data_path(id))));
  }
  std::this_thread::sleep_for(milliseconds(300));  // let them stall on full sockets
  const auto start = Clock::now();
  ASSERT_TRUE(setup.send(kHealthz));
  EXPECT_TRUE(answered_ok(setup.response(milliseconds(5000))));
  EXPECT_LT(std::chrono::duration_cast<milliseconds>(Clock::now() - start).count(), 1000);
  for (auto& reader : readers) {
    const auto got = reader.response(milliseconds(60'000));
    ASSERT_TRUE(answered_ok(got));
    EXPECT_TRUE(body_of(*got) == bytes);
  }
}

// A download whose allocation is freed while it streams stops short and
// closes: the client sees fewer bytes than Content-Length promised, never a
// complete-looking body with wrong bytes.
TEST(HttpStreaming, ADownloadWhoseAllocationIsFreedIsCutShort) {
  Server server(HttpOptions{}, 128 * kMiB);
  ASSERT_NE(server.port(), 0);
  Socket setup(server.port());
  constexpr std::size_t kSize = 48 * kMiB;
  const std::string id = allocate(setup, kSize);
  ASSERT_FALSE(id.empty());
  Socket reader(server.port());
  reader.set_receive_buffer(256 * 1024);
  ASSERT_TRUE(reader.send(request("GET", data_path(id))));
  const auto header = reader.header_only();
  ASSERT_TRUE(header);
  ASSERT_TRUE(header->starts_with("HTTP/1.1 200")) << *header;
  ASSERT_TRUE(setup.send(request("DELETE", "/api/memory/allocations/" + id)));
  ASSERT_TRUE(answered_ok(setup.response()));
  const std::string rest = reader.until_closed(milliseconds(20'000));
  EXPECT_LT(rest.size(), kSize) << "the body ran to its full length after the free";
  EXPECT_GT(rest.size(), 0u);
}

// A reader at a steady rate above the policy's floor (a piece's worth per
// write timeout) is not cut, however long one piece waits for room in the
// send buffer; a reader that takes nothing is cut within a few timeouts.
// (The load that broke this, 1,000 readers at 32 KiB/s under TCP memory
// pressure, cannot be made here; this pins the policy the fix implements.)
Socket slow_download(int port, const std::string& target) {
  Socket socket(port);
  socket.set_receive_buffer(128 * 1024);
  if (socket.ok() && !socket.send(request("GET", target))) socket.close();
  return socket;
}

// Reads up to `bytes` at most `step` per `every`; the bytes read (to EOF).
std::uint64_t read_paced(Socket& socket, std::uint64_t bytes, std::size_t step, milliseconds every) {
  std::vector<char> buffer(step);
  std::uint64_t got = 0;
  auto due = Clock::now();
  while (got < bytes) {
    std::this_thread::sleep_until(due);
    due += every;
    pollfd p{socket.fd(), POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) break;
    const ssize_t n = ::recv(socket.fd(), buffer.data(), std::min<std::uint64_t>(step, bytes - got), 0);
    if (n <= 0) break;
    got += static_cast<std::uint64_t>(n);
  }
  return got;
}

TEST(HttpStreaming, ASteadySlowReaderOutlastsTheWriteTimeoutAndAStalledOneIsCut) {
  HttpOptions options;
  options.write_timeout = milliseconds(300);  // floor: 64 KiB per 300 ms, ~213 KiB/s
  Server server(options, 64 * kMiB);
  ASSERT_NE(server.port(), 0);
  Socket setup(server.port());
  constexpr std::size_t kSize = 8 * kMiB;  // past what the socket buffers hold
  const std::string id = allocate(setup, kSize);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(setup.send(request("PUT", data_path(id), {}, pattern_bytes(kSize, 5))));
  ASSERT_TRUE(answered_ok(setup.response(milliseconds(30'000))));

  // 64 KiB per 25 ms (2.5 MiB/s) for ~3.2 s, ten write timeouts.
  Socket steady = slow_download(server.port(), data_path(id));
  ASSERT_TRUE(steady.ok());
  const std::uint64_t header_and_body = kSize + 1024;  // the header is well under 1 KiB
  const std::uint64_t got = read_paced(steady, header_and_body, 64 * 1024, milliseconds(25));
  steady.close();
  EXPECT_GT(got, kSize);

  // Takes nothing for 10 write timeouts: the server gives up, the body ends short.
  Socket stalled = slow_download(server.port(), data_path(id));
  ASSERT_TRUE(stalled.ok());
  std::this_thread::sleep_for(milliseconds(3000));  // 10 timeouts
  const std::uint64_t left = read_paced(stalled, header_and_body, 1 << 20, milliseconds(0));
  stalled.close();
  EXPECT_LT(left, kSize);
  setup.send(kHealthz);
  EXPECT_TRUE(answered_ok(setup.response(milliseconds(5000))));
}

}  // namespace
}  // namespace memd::testing
