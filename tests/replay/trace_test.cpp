// The trace loader: real format, gzip and plain, and hostile files.
#include "trace.hpp"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <string>

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
