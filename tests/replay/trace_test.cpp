// The trace loader: real format, gzip and plain, and hostile files.
#include "trace.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include "pass_summary.hpp"

namespace memd::replay {
namespace {

std::string write_file(const std::string& name, const std::string& body, bool gzip) {
  std::string path = ::testing::TempDir() + name;
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, body.data(), static_cast<unsigned>(body.size()));
    gzclose(f);
  } else {
    std::ofstream(path) << body;
  }
  return path;
}

TEST(Trace, ParsesEventsAndPeakLive) {
  for (bool gz : {true, false}) {
    auto path = write_file(gz ? "ok.txt.gz" : "ok.txt", "a 7 1024\na 9 512\nf 7\na 7 4096\nf 9\nf 7\n", gz);
    auto t = load_trace(path);
    ASSERT_TRUE(t) << t.error().message;
    EXPECT_EQ(t->ops.size(), 6u);
    EXPECT_EQ(t->allocations, 3u);
    EXPECT_EQ(t->peak_live_bytes, 4096u + 512u);
    EXPECT_LE(t->slots, 2u);  // slots are reused after a free
  }
}

TEST(Trace, ScaledCopyRoundsSizesAndRecomputesPeakLive) {
  auto path = write_file("scale.txt", "a 7 1024\na 9 512\nf 7\na 7 4096\nf 9\nf 7\n", false);
  auto t = load_trace(path);
  ASSERT_TRUE(t) << t.error().message;
  auto half = scale_trace(*t, 0.5);
  EXPECT_EQ(half.name, t->name + "_x0.5");
  ASSERT_EQ(half.ops.size(), 6u);
  EXPECT_EQ(half.ops[0].size, 512u);
  EXPECT_EQ(half.ops[1].size, 512u) << "never below 512";
  EXPECT_EQ(half.ops[3].size, 2048u);
  EXPECT_EQ(half.peak_live_bytes, 2048u + 512u) << "slot 7 reused at its new size";
  auto odd = scale_trace(*t, 1.3);
  EXPECT_EQ(odd.ops[0].size, 1024u) << "1331 rounds down to 1024";
  EXPECT_EQ(odd.ops[3].size, 5120u) << "5324 rounds down to 5120";
  EXPECT_EQ(odd.peak_live_bytes, 5120u + 512u);
}

TEST(Trace, PrefixStopsWhereLiveFirstReachesTheFractionAndFreesTheRest) {
  // live: 1024, 1536, 512, 4608 (peak), 4096, 0
  auto path = write_file("prefix.txt", "a 7 1024\na 9 512\nf 7\na 7 4096\nf 9\nf 7\n", false);
  auto t = load_trace(path);
  ASSERT_TRUE(t) << t.error().message;
  ASSERT_EQ(t->peak_live_bytes, 4608u);

  auto third = prefix_trace(*t, 1.0 / 3);  // 1536 bytes: reached by the second event
  EXPECT_EQ(third.name, t->name + "_to33.3333");
  ASSERT_EQ(third.ops.size(), 4u) << "two events, then a free of each live block";
  EXPECT_TRUE(third.ops[0].allocate);
  EXPECT_TRUE(third.ops[1].allocate);
  EXPECT_FALSE(third.ops[2].allocate);
  EXPECT_FALSE(third.ops[3].allocate);
  EXPECT_NE(third.ops[2].slot, third.ops[3].slot);
  EXPECT_EQ(third.peak_live_bytes, 1536u);
  EXPECT_EQ(third.allocations, 2u);

  // A fraction the trace only reaches at its peak keeps the events up to it.
  auto most = prefix_trace(*t, 0.99);
  ASSERT_EQ(most.ops.size(), 6u) << "4 events up to the peak, then 2 frees";
  EXPECT_EQ(most.peak_live_bytes, 4608u);
  EXPECT_EQ(most.allocations, 3u);

  auto all = prefix_trace(*t, 1.0);
  EXPECT_EQ(all.peak_live_bytes, t->peak_live_bytes);
  EXPECT_EQ(all.ops.size(), 6u);

  // Every prefix replays to nothing live: each allocation is freed once.
  for (const auto& p : {third, most, all}) {
    std::vector<int> balance(p.slots, 0);
    for (const auto& op : p.ops) balance[op.slot] += op.allocate ? 1 : -1;
    for (int b : balance) EXPECT_EQ(b, 0) << p.name;
  }
}

// Leaves slot of ID 1 (the 256-byte block) live at its end: live 256, 1280,
// 256, 2304 (peak), 256.
Trace leaves_one_live() {
  auto path = write_file("leaves.txt", "a 1 256\na 2 1024\nf 2\na 3 2048\nf 3\n", false);
  auto t = load_trace(path);
  EXPECT_TRUE(t) << t.error().message;
  return *t;
}

TEST(Trace, RepeatRenamesSlotsPerPassAndKeepsPassOne) {
  const Trace t = leaves_one_live();
  const Trace r = repeat_trace(t, 3, 0.0, 1);
  EXPECT_EQ(r.name, t.name);
  ASSERT_EQ(r.ops.size(), 3 * t.ops.size());
  EXPECT_EQ(r.slots, 3 * t.slots);
  EXPECT_EQ(r.allocations, 3 * t.allocations);
  ASSERT_EQ(r.pass_starts, (std::vector<std::size_t>{0, t.ops.size(), 2 * t.ops.size()}));
  for (std::size_t pass = 0; pass < 3; ++pass)
    for (std::size_t i = 0; i < t.ops.size(); ++i) {
      const TraceOp& o = r.ops[pass * t.ops.size() + i];
      EXPECT_EQ(o.allocate, t.ops[i].allocate);
      EXPECT_EQ(o.slot, t.ops[i].slot + pass * t.slots) << "pass " << pass << " op " << i;
      EXPECT_EQ(o.size, t.ops[i].size) << "jitter 0 copies exactly";
    }
  // Pass k's slots are all its own.
  for (std::size_t pass = 0; pass < 3; ++pass)
    for (std::size_t i = 0; i < t.ops.size(); ++i) {
      const auto slot = r.ops[pass * t.ops.size() + i].slot;
      EXPECT_GE(slot, pass * t.slots);
      EXPECT_LT(slot, (pass + 1) * t.slots);
    }
  auto ranges = pass_ranges(r);
  ASSERT_EQ(ranges.size(), 3u);
  EXPECT_EQ(ranges[2].second, r.ops.size());
  EXPECT_EQ(pass_ranges(t).size(), 1u) << "a loaded trace is one pass";
}

TEST(Trace, RepeatPeakLiveCountsWhatEachPassLeavesLive) {
  const Trace t = leaves_one_live();
  ASSERT_EQ(t.peak_live_bytes, 2304u);
  // Pass k peaks at 2304 on top of k blocks of 256 left by the earlier passes.
  EXPECT_EQ(repeat_trace(t, 1, 0.0, 1).peak_live_bytes, 2304u);
  EXPECT_EQ(repeat_trace(t, 3, 0.0, 1).peak_live_bytes, 2304u + 2 * 256u);
  EXPECT_EQ(repeat_trace(t, 1, 0.0, 1).ops.size(), t.ops.size());
}

TEST(Trace, RepeatJitterIsBoundedSeededAndSparesPassOne) {
  auto path = write_file("jitter.txt", "a 1 1000000\nf 1\na 2 3\nf 2\na 3 1\nf 3\n", false);
  auto loaded = load_trace(path);
  ASSERT_TRUE(loaded) << loaded.error().message;
  const Trace& t = *loaded;
  const int passes = 50;
  const double jitter = 0.1;
  const Trace a = repeat_trace(t, passes, jitter, 7);
  const Trace b = repeat_trace(t, passes, jitter, 7);
  const Trace c = repeat_trace(t, passes, jitter, 8);
  ASSERT_EQ(a.ops.size(), passes * t.ops.size());
  for (std::size_t i = 0; i < t.ops.size(); ++i) EXPECT_EQ(a.ops[i].size, t.ops[i].size) << "pass 1 as recorded";
  bool moved = false, differs = false;
  std::uint64_t live = 0, peak = 0;
  std::vector<std::uint64_t> size_of(a.slots, 0);
  for (std::size_t i = 0; i < a.ops.size(); ++i) {
    const TraceOp& o = a.ops[i];
    EXPECT_EQ(o.size, b.ops[i].size) << "same seed, same sizes";
    if (o.size != c.ops[i].size) differs = true;
    if (o.allocate) {
      const auto recorded = static_cast<double>(t.ops[i % t.ops.size()].size);
      EXPECT_GE(o.size, 1u);
      EXPECT_GE(static_cast<double>(o.size), std::floor(recorded * (1 - jitter)));
      EXPECT_LE(static_cast<double>(o.size), std::ceil(recorded * (1 + jitter)));
      if (o.size != t.ops[i % t.ops.size()].size) moved = true;
      size_of[o.slot] = o.size;
      live += o.size;
      peak = std::max(peak, live);
    } else {
      live -= size_of[o.slot];
    }
  }
  EXPECT_TRUE(moved) << "some later size jittered";
  EXPECT_TRUE(differs) << "another seed draws other sizes";
  EXPECT_EQ(a.peak_live_bytes, peak) << "peak live of the jittered run";
  EXPECT_GT(a.peak_live_bytes, t.peak_live_bytes) << "some pass drew above 1x for the 1 MB block";
}

TEST(PassSummary, FirstPassAndLaterPassesApart) {
  std::vector<PassFigures> passes(3);
  passes[0] = {100, 10000, 5, 0, 9, 0};
  passes[1] = {100, 2000, 1, 1, 1, 2};
  passes[2] = {100, 4000, 0, 3, 0, 3};
  const PassSummary s = summarise_passes(passes);
  EXPECT_EQ(s.passes, 3);
  EXPECT_DOUBLE_EQ(s.ns_per_op_first, 100.0);
  EXPECT_DOUBLE_EQ(s.ns_per_op_later, 30.0);
  ASSERT_TRUE(s.counted);
  EXPECT_EQ(s.map_calls_first, 5);
  EXPECT_EQ(s.mapped_units_first, 9);
  EXPECT_DOUBLE_EQ(s.map_calls_later_per_pass, 0.5);
  EXPECT_DOUBLE_EQ(s.unmap_calls_later_per_pass, 2.0);
  EXPECT_DOUBLE_EQ(s.unmapped_units_later_per_pass, 2.5);
  EXPECT_EQ(s.map_unmap_calls_later_max, 3);

  // Baselines count nothing: times only.
  std::vector<PassFigures> timed(2);
  timed[0].ops = timed[1].ops = 10;
  timed[0].ns = 50;
  timed[1].ns = 20;
  const PassSummary u = summarise_passes(timed);
  EXPECT_FALSE(u.counted);
  EXPECT_DOUBLE_EQ(u.ns_per_op_first, 5.0);
  EXPECT_DOUBLE_EQ(u.ns_per_op_later, 2.0);

  const PassSummary one = summarise_passes({timed[0]});
  EXPECT_LT(one.ns_per_op_later, 0) << "no later passes";
}

TEST(Trace, RejectsMalformedAndInconsistentFiles) {
  const char* bad[] = {
      "a 1\n",                     // missing size
      "a 1 12 3\n",                // trailing field
      "a 1 -5\n",                  // negative size
      "x 1 5\n",                   // unknown event
      "f 3\n",                     // free of an unknown id
      "a 1 5\na 1 5\n",            // id reused while live
      "a 1 99999999999999999999\n",  // overflows 64 bits
      "a one 5\n",
  };
  int i = 0;
  for (const char* body : bad) {
    auto path = write_file("bad" + std::to_string(i++) + ".txt", body, false);
    auto t = load_trace(path);
    ASSERT_FALSE(t) << body;
    EXPECT_EQ(t.error().code, ErrorCode::invalid_argument) << body;
    EXPECT_NE(t.error().message.find(".txt:"), std::string::npos) << t.error().message;  // names the line
  }
}

TEST(Trace, MissingFileAndOverlongLinesAreErrors) {
  auto missing = load_trace("/nonexistent/trace.gz");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  auto path = write_file("long.txt", "a 1 " + std::string(10000, '7') + "\n", false);
  EXPECT_FALSE(load_trace(path));
}

TEST(Trace, CorruptGzipIsAnError) {
  std::string body = "a 1 512\nf 1\n";
  auto path = write_file("corrupt.txt.gz", body, true);
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(12);
  f.write("\xff\xff\xff\xff\xff\xff", 6);
  f.close();
  EXPECT_FALSE(load_trace(path));
}

}  // namespace
}  // namespace memd::replay
