// memd-load's pure pieces under hostile input: the byte pattern, /proc and
// daemon JSON parsing, percentiles and the flags (tools/load).
#include <gtest/gtest.h>

#include <unistd.h>

#include <string>
#include <vector>

#include "daemon_json.hpp"
#include "latency.hpp"
#include "load_options.hpp"
#include "pattern.hpp"
#include "proc_stats.hpp"

namespace memd::load {
namespace {

std::vector<std::byte> stream(std::uint64_t seed, std::uint64_t offset, std::size_t n) {
  std::vector<std::byte> out(n);
  fill_pattern(seed, offset, out);
  return out;
}

TEST(LoadPattern, PiecesAtAnyOffsetAgreeWithTheWhole) {
  const auto whole = stream(7, 0, 4096);
  for (std::size_t at : {0u, 1u, 7u, 8u, 13u, 1000u, 4095u}) {
    for (std::size_t n : {0u, 1u, 3u, 8u, 17u, 100u}) {
      if (at + n > whole.size()) continue;
      const auto piece = stream(7, at, n);
      EXPECT_TRUE(std::equal(piece.begin(), piece.end(), whole.begin() + static_cast<std::ptrdiff_t>(at)))
          << at << "+" << n;
      EXPECT_FALSE(find_mismatch(7, at, piece)) << at << "+" << n;
    }
  }
}

TEST(LoadPattern, EveryFlippedByteAndOtherSeedsAreFound) {
  auto data = stream(3, 5, 40'000);  // spans more than one 16 KiB check chunk
  for (std::size_t i : {0u, 1u, 16383u, 16384u, 39'999u}) {
    data[i] ^= std::byte{0x20};
    const auto bad = find_mismatch(3, 5, data);
    ASSERT_TRUE(bad);
    EXPECT_EQ(*bad, i);
    data[i] ^= std::byte{0x20};
  }
  EXPECT_FALSE(find_mismatch(3, 5, data));
  EXPECT_TRUE(find_mismatch(4, 5, data));  // another allocation's bytes
  EXPECT_TRUE(find_mismatch(3, 6, data));  // the right bytes at the wrong place
}

TEST(LoadProcStats, ParsesStatusAndRefusesOtherShapes) {
  const auto mem = parse_proc_status("Name:\tmemd\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n");
  ASSERT_TRUE(mem);
  EXPECT_EQ(mem->rss_bytes, 1024u * 1024);
  EXPECT_EQ(mem->hwm_bytes, 2048u * 1024);
  for (const char* bad : {"", "VmRSS: 1 kB\n", "VmRSS:\tx kB\nVmHWM:\t1 kB\n", "VmRSS:\t1 MB\nVmHWM:\t1 kB\n",
                          "VmRSS:\t-1 kB\nVmHWM:\t1 kB\n", "VmRSS:\t99999999999999999999 kB\nVmHWM:\t1 kB\n",
                          "VmRSS:\t18014398509481984 kB\nVmHWM:\t1 kB\n", "VmRSSX:\t1 kB\nVmHWM:\t1 kB\n"})
    EXPECT_FALSE(parse_proc_status(bad)) << bad;
  const auto self = read_proc_memory(::getpid());
  ASSERT_TRUE(self);
  EXPECT_GT(self->rss_bytes, 0u);
  EXPECT_GE(self->hwm_bytes, self->rss_bytes);
  EXPECT_FALSE(read_proc_memory(-1));
  EXPECT_TRUE(read_mem_available());
  EXPECT_TRUE(read_open_files_limit(::getpid()));
}

TEST(LoadDaemonJson, ReadsOnlyTheShapesItKnows) {
  EXPECT_EQ(allocated_bytes(R"({"devices":[{"allocatedBytes":5},{"allocatedBytes":7}],"health":"Healthy"})"), 12u);
  EXPECT_EQ(allocated_bytes(R"({"devices":[]})"), 0u);
  for (const char* bad : {"", "null", "[]", "{", R"({"devices":{}})", R"({"devices":[1]})",
                          R"({"devices":[{"allocatedBytes":-1}]})", R"({"devices":[{"allocatedBytes":"5"}]})",
                          R"({"devices":[{"allocatedBytes":1.5}]})", R"({"devices":[{}]})",
                          R"({"devices":[{"allocatedBytes":9223372036854775807}]})"})
    EXPECT_FALSE(allocated_bytes(bad)) << bad;
  const std::string guid = "a1b2c3d4-e5f6-4890-abcd-ef1234567890";
  EXPECT_EQ(allocation_id(R"({"allocationId":")" + guid + R"("})"), guid);
  for (const std::string& bad : {std::string(R"({"allocationId":"../../healthz"})"),
                                std::string(R"({"allocationId":"a1b2c3d4-e5f6-4890-abcd-ef123456789g"})"),
                                std::string(R"({"allocationId":"a1b2c3d4/e5f6-4890-abcd-ef1234567890"})"),
                                std::string(R"({"allocationId":7})"), std::string("[]"), std::string("x")})
    EXPECT_FALSE(allocation_id(bad)) << bad;
}

TEST(LoadLatency, NearestRankPercentiles) {
  std::vector<std::int64_t> ns;
  for (int i = 100; i >= 1; --i) ns.push_back(i * 1'000'000);
  const auto s = summarize(ns);
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.p50_ms, 50);
  EXPECT_DOUBLE_EQ(s.p99_ms, 99);
  EXPECT_DOUBLE_EQ(s.max_ms, 100);
  EXPECT_EQ(summarize({}).count, 0u);
  EXPECT_DOUBLE_EQ(summarize({3'000'000}).p99_ms, 3);
}

ParsedFlags flags(std::vector<std::string> args) {
  args.insert(args.begin(), "memd-load");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  return parse_load_flags(static_cast<int>(argv.size()), argv.data());
}

TEST(LoadFlags, RefusesWhatItCannotRunNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{}, "--spawn"},
      {{"--spawn", "memd", "--url", "http://127.0.0.1:1", "--pid", "1"}, "--spawn"},
      {{"--url", "http://127.0.0.1:7870"}, "--pid"},
      {{"--url", "http://10.0.0.1:7870", "--pid", "1"}, "loopback"},
      {{"--url", "http://127.0.0.1.evil.com:80", "--pid", "1"}, "loopback"},
      {{"--url", "https://127.0.0.1:7870", "--pid", "1"}, "http://"},
      {{"--url", "http://127.0.0.1:0", "--pid", "1"}, "port"},
      {{"--url", "http://127.0.0.1:99999", "--pid", "1"}, "port"},
      {{"--url", "http://127.0.0.1", "--pid", "1"}, "port"},
      {{"--url", "http://127.0.0.1:7870", "--pid", "-4"}, "--pid"},
      {{"--spawn", "memd", "--pid", "4"}, "--pid"},
      {{"--spawn", "memd", "--idle", "-1"}, "--idle"},
      {{"--spawn", "memd", "--idle", "1e6"}, "--idle"},
      {{"--spawn", "memd", "--idle", "60001"}, "--idle"},
      {{"--spawn", "memd", "--slow", ""}, "--slow"},
      {{"--spawn", "memd", "--clients", "1025"}, "--clients"},
      {{"--spawn", "memd", "--big-count", "0"}, "--big-count"},
      {{"--spawn", "memd", "--big-size", "1KiB"}, "--big-size"},
      {{"--spawn", "memd", "--big-size", "65GiB"}, "--big-size"},
      {{"--spawn", "memd", "--cycle-size", "lots"}, "--cycle-size"},
      {{"--spawn", "memd", "--duration", "-5s"}, "--duration"},
      {{"--spawn", "memd", "--duration", "5h"}, "--duration"},
      {{"--spawn", "memd", "--duration", "nan"}, "--duration"},
      {{"--spawn", "memd", "--duration", "2h"}, "--duration"},
      {{"--spawn", "memd", "--duration", "1.2.3s"}, "--duration"},
      {{"--spawn", "memd", "--probe-interval", "0ms"}, "--probe-interval"},
      {{"--spawn", "memd", "--rss-limit", "1MiB"}, "--rss-limit"},
      {{"--spawn", "memd", "--device", "host:0/../x"}, "--device"},
      {{"--spawn", "memd", "--max-keepalive-ratio", "0"}, "--max-keepalive-ratio"},
      {{"--spawn", "memd", "--max-status-p99", "fast"}, "--max-status-p99"},
      {{"--spawn", "memd", "--no-such-flag"}, "--no-such-flag"},
      {{"--url", "http://127.0.0.1:7870", "--pid", "1", "--", "--threads", "4"}, "--spawn"},
  };
  for (const auto& c : cases) {
    const auto p = flags(c.args);
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    EXPECT_FALSE(p.options) << joined;
    EXPECT_EQ(p.exit_code, 2) << joined;
    EXPECT_NE(p.message.find(c.says), std::string::npos) << joined << "→ " << p.message;
  }
}

TEST(LoadFlags, AcceptsTheFullRunAndTheSmallOne) {
  auto full = flags({"--spawn", "build/memd", "--json", "out.json", "--", "--threads", "16"});
  ASSERT_TRUE(full.options) << full.message;
  EXPECT_EQ(full.options->idle, 10'000u);
  EXPECT_EQ(full.options->slow, 1'000u);
  EXPECT_EQ(full.options->clients, 16u);
  EXPECT_EQ(full.options->big_size, 256 * kMiB);
  EXPECT_EQ(full.options->duration, Millis(60'000));
  EXPECT_EQ(full.options->daemon_args, (std::vector<std::string>{"--threads", "16"}));
  auto small = flags({"--url", "http://localhost:7870/", "--pid", "42", "--idle", "200", "--duration", "1.5s",
                      "--max-status-p99", "0.5ms", "--big-size", "16MiB"});
  ASSERT_TRUE(small.options) << small.message;
  EXPECT_EQ(small.options->host, "127.0.0.1");
  EXPECT_EQ(small.options->port, 7870);
  EXPECT_EQ(small.options->duration, Millis(1'500));
  EXPECT_DOUBLE_EQ(*small.options->max_status_p99_ms, 0.5);
  auto v6 = flags({"--url", "http://[::1]:80", "--pid", "1"});
  ASSERT_TRUE(v6.options) << v6.message;
  EXPECT_EQ(v6.options->host, "::1");
  auto help = flags({"--help"});
  EXPECT_FALSE(help.options);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.message.find("--rss-limit"), std::string::npos);
}

}  // namespace
}  // namespace memd::load
