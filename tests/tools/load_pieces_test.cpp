// memd-load's pure pieces under hostile input: the byte pattern, /proc and
// daemon JSON parsing, percentiles, the flags, and the soak's mix weights,
// holdings and model file (tools/load).
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <span>
#include <string>
#include <vector>

#include "daemon_json.hpp"
#include "latency.hpp"
#include "load_options.hpp"
#include "pattern.hpp"
#include "proc_stats.hpp"
#include "soak_holdings.hpp"
#include "soak_mix.hpp"

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

TEST(LoadProc, CpuTicksComeFromAfterTheLastParenthesis) {
  // A command name with spaces and ')' must not shift the fields.
  const std::string line = "123 (memd) x (y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0 100 1000 10\n";
  EXPECT_EQ(parse_proc_stat_cpu_ticks(line), 300u);
  EXPECT_EQ(parse_proc_stat_cpu_ticks("1 (a) R 0 0 0 0 0 0 0 0 0 0 7 8"), 15u);
  for (const char* bad : {"", "1 memd R 1 2 3", "1 (memd) S 1 2 3 4 5 6 7 8 9 10 -1 50",
                          "1 (memd) S 1 2 3 4 5 6 7 8 9 10 25x 50", "1 (memd) S 1 2 3 4 5 6 7 8 9 10 250",
                          "1 (memd) S 1 2 3 4 5 6 7 8 9 10 99999999999999999999 1", "1 (memd)"})
    EXPECT_FALSE(parse_proc_stat_cpu_ticks(bad)) << bad;
  const auto own = read_proc_cpu_seconds(::getpid());
  ASSERT_TRUE(own);
  EXPECT_GE(*own, 0.0);
}

// ---- the soak (--mode soak) and the rate run (--mode rate) -----------------

TEST(SoakMix, ParsesWeightsAndLeavesTheRestAtZero) {
  std::string why;
  auto m = parse_soak_mix("rw=4,model=1,session=0", why);
  ASSERT_TRUE(m) << why;
  EXPECT_EQ(m->weight[static_cast<std::size_t>(Scenario::rw)], 4u);
  EXPECT_EQ(m->weight[static_cast<std::size_t>(Scenario::model)], 1u);
  EXPECT_EQ(m->weight[static_cast<std::size_t>(Scenario::transfer)], 0u);
  EXPECT_EQ(m->total(), 5u);
  EXPECT_EQ(format_soak_mix(*m), "rw=4,transfer=0,move=0,copy=0,export=0,status=0,model=1,session=0");
  auto all = parse_soak_mix(format_soak_mix(default_soak_mix()), why);
  ASSERT_TRUE(all) << why;
  EXPECT_EQ(all->weight, default_soak_mix().weight);
  auto most = parse_soak_mix("export=1000", why);
  ASSERT_TRUE(most) << why;
  EXPECT_EQ(most->total(), 1000u);
}

TEST(SoakMix, RefusesHostileWeightsSayingWhy) {
  struct Case {
    std::string text, says;
  };
  const std::vector<Case> cases = {
      {"", "name=weight"},
      {"rw", "not name=weight"},
      {"=3", "not name=weight"},
      {"rw=", "whole number"},
      {"rw=-1", "whole number"},
      {"rw=+1", "whole number"},
      {"rw=1.5", "whole number"},
      {"rw=1001", "whole number"},
      {"rw=99999999999999999999", "whole number"},
      {"rw=0x10", "whole number"},
      {"rw= 1", "whole number"},
      {"rw=1,", "not name=weight"},
      {",rw=1", "not name=weight"},
      {"rw=1,,copy=1", "not name=weight"},
      {"RW=1", "not a scenario"},
      {"rw=1,rw=2", "twice"},
      {"rw=0,copy=0", "every weight is 0"},
      {"reboot=1", "not a scenario"},
      {std::string("rw\0=1", 5), "not a scenario"},
      {std::string(600, 'a'), "at most 512"},
  };
  for (const auto& c : cases) {
    std::string why;
    EXPECT_FALSE(parse_soak_mix(c.text, why)) << c.text;
    EXPECT_NE(why.find(c.says), std::string::npos) << c.text << " -> " << why;
  }
}

TEST(SoakMix, DrawsFallOnScenariosInProportionToTheirWeights) {
  std::string why;
  auto m = parse_soak_mix("rw=3,copy=1,session=2", why);
  ASSERT_TRUE(m) << why;
  EXPECT_EQ(pick_scenario(*m, 0), Scenario::rw);
  EXPECT_EQ(pick_scenario(*m, 2), Scenario::rw);
  EXPECT_EQ(pick_scenario(*m, 3), Scenario::copy);
  EXPECT_EQ(pick_scenario(*m, 4), Scenario::session);
  EXPECT_EQ(pick_scenario(*m, 5), Scenario::session);
  EXPECT_EQ(pick_scenario(*m, 600), Scenario::session);  // out of range: the last weighted, never a zero one
  // Seeded: the same seed gives the same choices; 60,000 draws land within 2%
  // of the weights.
  SoakRandom a(9), b(9), c(10);
  EXPECT_EQ(a.next(), b.next());
  EXPECT_NE(a.next(), c.next());
  std::array<std::uint64_t, kScenarios> seen{};
  SoakRandom r(1);
  for (int i = 0; i < 60'000; ++i) ++seen[static_cast<std::size_t>(pick_scenario(*m, r.below(m->total())))];
  EXPECT_NEAR(static_cast<double>(seen[0]), 30'000, 600);
  EXPECT_NEAR(static_cast<double>(seen[3]), 10'000, 600);
  EXPECT_NEAR(static_cast<double>(seen[7]), 20'000, 600);
  EXPECT_EQ(seen[1] + seen[2] + seen[4] + seen[5] + seen[6], 0u);
}

TEST(LoadFlags, TheSoakAndRateModesRefuseWhatTheyCannotRun) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--spawn", "memd", "--mode", "chaos"}, "--mode"},
      {{"--spawn", "memd", "--mode", "SOAK"}, "--mode"},
      {{"--spawn", "memd", "--mode", ""}, "--mode"},
      {{"--spawn", "memd", "--mix", "rw=1"}, "--mix is for --mode soak"},
      {{"--spawn", "memd", "--mode", "soak", "--mix", "rw=1,rw=1"}, "--mix"},
      {{"--spawn", "memd", "--mode", "soak", "--mix", "rw=0"}, "--mix"},
      {{"--spawn", "memd", "--mode", "soak", "--seed", "-1"}, "--seed"},
      {{"--spawn", "memd", "--mode", "soak", "--seed", "18446744073709551616"}, "--seed"},
      {{"--spawn", "memd", "--mode", "soak", "--model-size", "0"}, "--model-size"},
      {{"--spawn", "memd", "--mode", "soak", "--model-size", "65MiB"}, "--model-size"},
      {{"--spawn", "memd", "--mode", "soak", "--max-rss-growth", "0"}, "--max-rss-growth"},
      {{"--spawn", "memd", "--mode", "rate", "--flooders", "0"}, "--flooders"},
      {{"--spawn", "memd", "--mode", "rate", "--flooders", "1025"}, "--flooders"},
      {{"--spawn", "memd", "--mode", "rate", "--flood-limit", "0"}, "--flood-limit"},
      {{"--spawn", "memd", "--mode", "rate", "--flood-limit", "nan"}, "--flood-limit"},
      {{"--spawn", "memd", "--mode", "rate", "--flood-limit", "inf"}, "--flood-limit"},
      {{"--spawn", "memd", "--mode", "rate", "--flood-limit", "-5"}, "--flood-limit"},
      // The probe's own 100 requests/s (20 ms) would meet a limit of 150.
      {{"--spawn", "memd", "--mode", "rate", "--flood-limit", "150"}, "twice the probe"},
      {{"--spawn", "memd", "--flood-limit", "500"}, "--flood-limit is for --mode rate"},
      {{"--url", "http://127.0.0.1:7870", "--pid", "1", "--mode", "rate", "--flood-limit", "500"}, "--spawn"},
      {{"--spawn", "memd", "--mode", "rate", "--max-flood-ratio", "0"}, "--max-flood-ratio"},
  };
  for (const auto& c : cases) {
    const auto p = flags(c.args);
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    EXPECT_FALSE(p.options) << joined;
    EXPECT_EQ(p.exit_code, 2) << joined;
    EXPECT_NE(p.message.find(c.says), std::string::npos) << joined << "→ " << p.message;
  }
  auto soak = flags({"--spawn", "memd", "--mode", "soak", "--mix", "rw=2,model=1", "--seed", "7", "--clients", "8"});
  ASSERT_TRUE(soak.options) << soak.message;
  EXPECT_EQ(soak.options->mode, Mode::soak);
  EXPECT_EQ(soak.options->mix.total(), 3u);
  EXPECT_EQ(soak.options->seed, 7u);
  auto rate = flags({"--spawn", "memd", "--mode", "rate", "--flood-limit", "500", "--flooders", "8"});
  ASSERT_TRUE(rate.options) << rate.message;
  EXPECT_EQ(rate.options->mode, Mode::rate);
  EXPECT_DOUBLE_EQ(rate.options->flood_limit, 500);
  EXPECT_EQ(rate.options->flooders, 8u);
  auto help = flags({"--help"});
  EXPECT_NE(help.message.find("soak"), std::string::npos);
  EXPECT_NE(help.message.find("--flood-limit"), std::string::npos);
}

// Two staging buffers of 8 bytes (one idle, one in use) among 4 allocations.
const char* kStatus =
    R"({"devices":[{"allocatedBytes":100,"allocations":2,"pools":[{"allocatedBytes":96},{"allocatedBytes":4}]},)"
    R"({"allocatedBytes":16,"allocations":2,"pools":[{"allocatedBytes":16}]}],"transfers":{"pending":1,"inProgress":2},)"
    R"("pinned":{"stagingBufferBytes":8,"stagingBuffersInUse":1,"stagingIdleBuffers":1}})";
const char* kUsage = R"({"total":{"allocations":4,"requestedBytes":90}})";
const char* kSessions = R"({"sessions":[{"sessionId":"x"}]})";
const char* kModels =
    R"({"models":[{"vramBytes":10,"ramBytes":0},{"vramBytes":0,"ramBytes":0}],"ramCacheBytes":5})";

TEST(SoakHoldings, ReadsEveryCountFromTheAnswers) {
  std::string why;
  auto h = parse_holdings(kStatus, kUsage, kSessions, kModels, why);
  ASSERT_TRUE(h) << why;
  EXPECT_EQ(h->allocations, 2u);
  EXPECT_EQ(h->allocated_bytes, 100u);
  EXPECT_EQ(h->pool_bytes, 100u);
  EXPECT_EQ(h->transfers_open, 3u);
  EXPECT_EQ(h->usage_allocations, 2u);
  EXPECT_EQ(h->requested_bytes, 90u);
  EXPECT_EQ(h->sessions, 1u);
  EXPECT_EQ(h->models_holding, 1u);
  EXPECT_EQ(h->model_cache_bytes, 5u);
  EXPECT_EQ(h->staging_in_use, 1u);
  EXPECT_EQ(h->staging_idle, 1u);
  // No pinned block (no pinned pool): nothing taken out.
  const std::string plain = R"({"devices":[{"allocatedBytes":7,"allocations":1,"pools":[{"allocatedBytes":7}]}],)"
                            R"("transfers":{"pending":0,"inProgress":0}})";
  auto p = parse_holdings(plain, R"({"total":{"allocations":1,"requestedBytes":7}})", kSessions, kModels, why);
  ASSERT_TRUE(p) << why;
  EXPECT_EQ(p->allocations, 1u);
  EXPECT_EQ(p->allocated_bytes, 7u);
  EXPECT_EQ(p->usage_allocations, 1u);
}

TEST(SoakHoldings, RefusesAnswersOfAnotherShape) {
  struct Case {
    std::string status, usage, sessions, models, says;
  };
  const std::vector<Case> cases = {
      {"", kUsage, kSessions, kModels, "memory_status"},
      {"[]", kUsage, kSessions, kModels, "memory_status"},
      {R"({"devices":{}})", kUsage, kSessions, kModels, "memory_status"},
      {R"({"devices":[{"allocatedBytes":-1,"allocations":0,"pools":[]}],"transfers":{"pending":0,"inProgress":0}})",
       kUsage, kSessions, kModels, "allocatedBytes"},
      {R"({"devices":[{"allocatedBytes":1.5,"allocations":0,"pools":[]}],"transfers":{"pending":0,"inProgress":0}})",
       kUsage, kSessions, kModels, "allocatedBytes"},
      {R"({"devices":[{"allocatedBytes":"1","allocations":0,"pools":[]}],"transfers":{"pending":0,"inProgress":0}})",
       kUsage, kSessions, kModels, "allocatedBytes"},
      {R"({"devices":[{"allocatedBytes":9223372036854775807,"allocations":0,"pools":[]}],"transfers":{"pending":0,"inProgress":0}})",
       kUsage, kSessions, kModels, "allocatedBytes"},
      {R"({"devices":[{"allocatedBytes":1,"allocations":0}],"transfers":{"pending":0,"inProgress":0}})", kUsage,
       kSessions, kModels, "pools"},
      {R"({"devices":[{"allocatedBytes":1,"allocations":0,"pools":[{}]}],"transfers":{"pending":0,"inProgress":0}})",
       kUsage, kSessions, kModels, "pool"},
      {R"({"devices":[]})", kUsage, kSessions, kModels, "transfers"},
      {R"({"devices":[],"transfers":{"pending":0,"inProgress":0},"pinned":{"stagingBufferBytes":8}})", kUsage,
       kSessions, kModels, "pinned"},
      {R"({"devices":[],"transfers":{"pending":0,"inProgress":0},"pinned":{"stagingBufferBytes":8,)"
       R"("stagingBuffersInUse":1,"stagingIdleBuffers":0}})",
       kUsage, kSessions, kModels, "more staging buffers"},
      {R"({"devices":[],"transfers":{"pending":0,"inProgress":0},"pinned":{"stagingBufferBytes":8,)"
       R"("stagingBuffersInUse":18446744073709551615,"stagingIdleBuffers":1}})",
       kUsage, kSessions, kModels, "pinned"},
      {kStatus, R"({"total":{"allocations":1,"requestedBytes":0}})", kSessions, kModels, "fewer allocations"},
      {kStatus, R"({"total":{}})", kSessions, kModels, "memory_usage"},
      {kStatus, "null", kSessions, kModels, "memory_usage"},
      {kStatus, kUsage, R"({"sessions":{}})", kModels, "memory_sessions"},
      {kStatus, kUsage, "{", kModels, "memory_sessions"},
      {kStatus, kUsage, kSessions, R"({"models":[]})", "ramCacheBytes"},
      {kStatus, kUsage, kSessions, R"({"models":[{"vramBytes":1}],"ramCacheBytes":0})", "ramBytes"},
  };
  for (const auto& c : cases) {
    std::string why;
    EXPECT_FALSE(parse_holdings(c.status, c.usage, c.sessions, c.models, why)) << c.status << c.usage;
    EXPECT_NE(why.find(c.says), std::string::npos) << c.status << " -> " << why;
  }
}

TEST(SoakHoldings, EveryCountAboveItsStartIsALeak) {
  DaemonHoldings start{.allocations = 2, .allocated_bytes = 100, .pool_bytes = 100, .usage_allocations = 2,
                       .requested_bytes = 90, .sessions = 0, .transfers_open = 0, .models_holding = 0,
                       .model_cache_bytes = 0};
  EXPECT_TRUE(compare_holdings(start, start).empty());
  DaemonHoldings fewer = start;
  fewer.allocations = 1;  // less than at the start is not a leak (someone else freed)
  EXPECT_TRUE(compare_holdings(start, fewer).empty());
  DaemonHoldings more = start;
  more.sessions = 1;
  more.pool_bytes = 101;
  const auto leaks = compare_holdings(start, more);
  ASSERT_EQ(leaks.size(), 2u);
  EXPECT_EQ(leaks[0], "pool allocatedBytes 100 -> 101");
  EXPECT_EQ(leaks[1], "open sessions 0 -> 1");
}

TEST(SoakModelFile, IsASafetensorsFileOfOneU8TensorHoldingThePattern) {
  const std::string f = safetensors_file(5, 1000);
  ASSERT_GE(f.size(), 8u);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(f[static_cast<std::size_t>(i)]);
  EXPECT_EQ((8 + n) % 8, 0u);  // the data starts 8-aligned
  ASSERT_EQ(f.size(), 8 + n + 1000);
  const std::string header = f.substr(8, n);
  EXPECT_NE(header.find(R"("weight":{"dtype":"U8","shape":[1000],"data_offsets":[0,1000]})"), std::string::npos)
      << header;
  const auto data = std::as_bytes(std::span(f.data() + 8 + n, 1000));
  EXPECT_FALSE(find_mismatch(5, 0, data));
  EXPECT_TRUE(find_mismatch(6, 0, data));
}

}  // namespace
}  // namespace memd::load
