// Content hashes of components: the bytes of the ranges in order decide the
// hash, whatever the layout; a byte that differs is seen by the hash and by
// same_bytes; the cache answers without reading while the file's identity
// holds and misses once it changes; the persisted cache survives a restart
// and a corrupt file costs only its bad lines.
#include "models/content_hash.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <array>
#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>
#include <vector>

#include "safetensors_writer.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;

using test_models::TempDir;

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> out(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : out) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::byte>(x);
  }
  return out;
}

fs::path write_bytes(const fs::path& p, std::span<const std::byte> bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return p;
}

std::vector<std::byte> concat(std::initializer_list<std::span<const std::byte>> parts) {
  std::vector<std::byte> out;
  for (auto p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

ModelFile open_ok(const fs::path& p) {
  auto f = ModelFile::open(p);
  EXPECT_TRUE(f) << f.error().message;
  return std::move(*f);
}

// The bytes in place, identity (size, mtime) kept: only a reread could see it.
void overwrite_keeping_identity(const fs::path& p, std::uint64_t offset, std::byte value) {
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  const int fd = ::open(p.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, &value, 1, static_cast<off_t>(offset)), 1);
  const std::array<timespec, 2> times{st.st_atim, st.st_mtim};
  ASSERT_EQ(::futimens(fd, times.data()), 0);
  ::close(fd);
}

TEST(ContentHash, PrintsAndParses32HexDigits) {
  const ContentHash h{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  EXPECT_EQ(h.to_string(), "0123456789abcdeffedcba9876543210");
  auto back = ContentHash::parse(h.to_string());
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, h);
  auto upper = ContentHash::parse("0123456789ABCDEFFEDCBA9876543210");
  ASSERT_TRUE(upper);
  EXPECT_EQ(*upper, h);
  for (std::string_view bad : {"", "0123456789abcdeffedcba987654321", "0123456789abcdeffedcba98765432100",
                               "0x23456789abcdeffedcba9876543210", "0123456789abcdeg fedcba987654321",
                               "-123456789abcdeffedcba9876543210"}) {
    auto r = ContentHash::parse(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  }
}

TEST(ContentHash, IsXxh3Of128BitsOfTheRangesConcatenated) {
  TempDir dir;
  const auto bytes = pattern(10000, 1);
  const auto f = open_ok(write_bytes(dir.path / "a.bin", bytes));
  const ModelFile* files[] = {&f};
  const HashRange ranges[] = {{0, 100, 50}, {0, 9000, 1000}, {0, 0, 0}, {0, 10, 5}};
  auto h = hash_component(files, ranges);
  ASSERT_TRUE(h) << h.error().message;
  const auto expect_bytes = concat({std::span(bytes).subspan(100, 50), std::span(bytes).subspan(9000, 1000),
                                    std::span(bytes).subspan(10, 5)});
  const XXH128_hash_t want = XXH3_128bits(expect_bytes.data(), expect_bytes.size());
  EXPECT_EQ(h->high, want.high64);
  EXPECT_EQ(h->low, want.low64);
  auto empty = hash_component(files, std::span<const HashRange>{});
  ASSERT_TRUE(empty);
  const XXH128_hash_t none = XXH3_128bits(nullptr, 0);
  EXPECT_EQ(*empty, (ContentHash{none.high64, none.low64}));
}

TEST(ContentHash, EqualBytesInDifferentFilesAndLayoutsHashEqual) {
  TempDir dir;
  const auto payload = pattern(100000, 2);
  const auto header = pattern(8, 3);
  const auto junk = pattern(3, 4);
  const auto whole = open_ok(write_bytes(dir.path / "whole.bin", concat({header, payload})));
  const auto head = open_ok(write_bytes(dir.path / "head.bin", std::span(payload).first(40000)));
  const auto tail = open_ok(write_bytes(dir.path / "tail.bin", concat({junk, std::span(payload).subspan(40000)})));
  const ModelFile* one[] = {&whole};
  const HashRange one_ranges[] = {{0, 8, 100000}};
  const ModelFile* two[] = {&tail, &head};
  const HashRange two_ranges[] = {{1, 0, 25000}, {1, 25000, 15000}, {0, 3, 60000}};
  auto a = hash_component(one, one_ranges);
  auto b = hash_component(two, two_ranges);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
  auto same = same_bytes(one, one_ranges, two, two_ranges);
  ASSERT_TRUE(same) << same.error().message;
  EXPECT_TRUE(*same);
}

TEST(ContentHash, OneDifferentByteChangesTheHashAndSameBytesSaysSo) {
  TempDir dir;
  // Over one hash chunk (8 MiB) and two compare chunks (4 MiB), the difference
  // past the first compare chunk.
  auto bytes = pattern((9u << 20) + 13, 5);
  const auto a = open_ok(write_bytes(dir.path / "a.bin", bytes));
  bytes[(5u << 20) + 7] ^= std::byte{1};
  const auto b = open_ok(write_bytes(dir.path / "b.bin", bytes));
  const ModelFile* fa[] = {&a};
  const ModelFile* fb[] = {&b};
  const HashRange all[] = {{0, 0, bytes.size()}};
  auto ha = hash_component(fa, all);
  auto hb = hash_component(fb, all);
  ASSERT_TRUE(ha && hb);
  EXPECT_NE(*ha, *hb);
  auto same = same_bytes(fa, all, fb, all);
  ASSERT_TRUE(same);
  EXPECT_FALSE(*same);
  // The bytes before the difference are the same, split differently.
  const HashRange front_a[] = {{0, 0, 5u << 20}};
  const HashRange front_b[] = {{0, 0, 1000}, {0, 1000, (5u << 20) - 1000}};
  auto front = same_bytes(fa, front_a, fb, front_b);
  ASSERT_TRUE(front);
  EXPECT_TRUE(*front);
  // Lengths that differ: different, answered without reading.
  const HashRange shorter[] = {{0, 0, 100}};
  auto lengths = same_bytes(fa, all, fa, shorter);
  ASSERT_TRUE(lengths);
  EXPECT_FALSE(*lengths);
}

TEST(ContentHash, RefusesRangesOutsideTheirFile) {
  TempDir dir;
  const auto f = open_ok(write_bytes(dir.path / "a.bin", pattern(100, 6)));
  const ModelFile* files[] = {&f};
  for (const HashRange bad : {HashRange{0, 50, 51}, HashRange{0, 101, 0}, HashRange{1, 0, 1},
                              HashRange{0, ~std::uint64_t{0}, 2}}) {
    const HashRange ranges[] = {bad};
    auto h = hash_component(files, ranges);
    ASSERT_FALSE(h);
    EXPECT_EQ(h.error().code, ErrorCode::invalid_argument) << h.error().message;
    auto s = same_bytes(files, ranges, files, ranges);
    ASSERT_FALSE(s);
  }
}

TEST(ContentHashCache, AHitIsAnsweredWithoutRereading) {
  TempDir dir;
  const auto p = write_bytes(dir.path / "a.bin", pattern(4096, 7));
  const auto f = open_ok(p);
  const ModelFile* files[] = {&f};
  const HashRange ranges[] = {{0, 0, 4096}};
  ContentHashCache cache;
  auto first = hash_component(files, ranges, &cache);
  ASSERT_TRUE(first);
  EXPECT_EQ(cache.misses(), 1u);
  // Change a byte but keep size and mtime: the identity is the same, so the
  // cached hash comes back — proof nothing was read — while a hash without
  // the cache sees the new byte.
  overwrite_keeping_identity(p, 100, std::byte{0xAA});
  auto cached = hash_component(files, ranges, &cache);
  ASSERT_TRUE(cached) << cached.error().message;
  EXPECT_EQ(*cached, *first);
  EXPECT_EQ(cache.hits(), 1u);
  auto fresh = hash_component(files, ranges);
  ASSERT_TRUE(fresh);
  EXPECT_NE(*fresh, *first);
}

TEST(ContentHashCache, AFileChangedSinceOpenGetsNoHashAndAReopenMisses) {
  TempDir dir;
  const auto p = write_bytes(dir.path / "a.bin", pattern(4096, 8));
  const auto f = open_ok(p);
  const ModelFile* files[] = {&f};
  const HashRange ranges[] = {{0, 0, 4096}};
  ContentHashCache cache;
  ASSERT_TRUE(hash_component(files, ranges, &cache));
  ASSERT_EQ(::truncate(p.c_str(), 1000), 0);
  // Cached, but the file is no longer what was opened: refused, not answered.
  auto stale = hash_component(files, ranges, &cache);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, ErrorCode::invalid_file);
  EXPECT_NE(stale.error().message.find("changed"), std::string::npos) << stale.error().message;
  // Reopened, it is a new key: a miss, and the old ranges no longer fit.
  const auto again = open_ok(p);
  const ModelFile* again_files[] = {&again};
  auto reopened = hash_component(again_files, ranges, &cache);
  ASSERT_FALSE(reopened);
  EXPECT_EQ(reopened.error().code, ErrorCode::invalid_argument);
}

TEST(ContentHashCache, ARewriteWithALaterMtimeMisses) {
  TempDir dir;
  const auto bytes = pattern(4096, 9);
  const auto p = write_bytes(dir.path / "a.bin", bytes);
  ContentHashCache cache;
  const HashRange ranges[] = {{0, 0, 4096}};
  {
    const auto f = open_ok(p);
    const ModelFile* files[] = {&f};
    ASSERT_TRUE(hash_component(files, ranges, &cache));
  }
  const auto written = fs::last_write_time(p);
  write_bytes(p, bytes);  // same bytes, same size: only the mtime tells
  fs::last_write_time(p, written + std::chrono::seconds(2));
  const auto f = open_ok(p);
  const ModelFile* files[] = {&f};
  auto h = hash_component(files, ranges, &cache);
  ASSERT_TRUE(h);
  EXPECT_EQ(cache.hits(), 0u);
  EXPECT_EQ(cache.misses(), 2u);
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ContentHashCache, TwoComponentsOfOneFileAreTwoEntries) {
  TempDir dir;
  const auto f = open_ok(write_bytes(dir.path / "a.bin", pattern(2000, 10)));
  const ModelFile* files[] = {&f};
  const HashRange unet[] = {{0, 0, 1000}};
  const HashRange vae[] = {{0, 1000, 1000}};
  ContentHashCache cache;
  auto a = hash_component(files, unet, &cache);
  auto b = hash_component(files, vae, &cache);
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(cache.size(), 2u);
  auto a2 = hash_component(files, unet, &cache);
  ASSERT_TRUE(a2);
  EXPECT_EQ(*a2, *a);
  EXPECT_EQ(cache.hits(), 1u);
}

HashCacheKey key_named(std::string path, std::int64_t mtime = 1) {
  HashCacheKey key;
  key.files.push_back({std::move(path), {1, 2, 3, mtime}});
  key.ranges.push_back({0, 0, 3});
  return key;
}

TEST(ContentHashCache, DropsTheLeastRecentlyUsedPastItsCapacity) {
  ContentHashCache cache(2);
  cache.store(key_named("/a"), {0, 1});
  cache.store(key_named("/b"), {0, 2});
  ASSERT_TRUE(cache.lookup(key_named("/a")));  // /a is now the most recent
  cache.store(key_named("/c"), {0, 3});        // so /b goes
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_FALSE(cache.lookup(key_named("/b")));
  EXPECT_EQ(cache.lookup(key_named("/a")), (ContentHash{0, 1}));
  EXPECT_EQ(cache.lookup(key_named("/c")), (ContentHash{0, 3}));
  cache.store(key_named("/c"), {0, 4});  // a store over an entry replaces it
  EXPECT_EQ(cache.lookup(key_named("/c")), (ContentHash{0, 4}));
  EXPECT_EQ(cache.size(), 2u);
}

TEST(ContentHashCache, SavesAndLoadsSoASecondRunDoesNotRehash) {
  TempDir dir;
  const auto f = open_ok(write_bytes(dir.path / "model.bin", pattern(3000, 11)));
  const ModelFile* files[] = {&f};
  const HashRange parts[][1] = {{{0, 0, 1000}}, {{0, 1000, 2000}}};
  const auto state = dir.path / std::string(kHashCacheFileName);
  std::vector<ContentHash> hashes;
  {
    ContentHashCache cache;
    for (const auto& r : parts) hashes.push_back(*hash_component(files, r, &cache));
    cache.store(key_named("/negative-mtime", -5), {7, 8});
    ASSERT_TRUE(cache.save(state));
  }
  // Only the file itself is left behind: the temporary was renamed over it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()), 2);
  ContentHashCache cache;
  auto report = cache.load(state);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->loaded, 3u);
  EXPECT_EQ(report->skipped, 0u);
  for (std::size_t i = 0; i < 2; ++i) {
    auto h = hash_component(files, parts[i], &cache);
    ASSERT_TRUE(h);
    EXPECT_EQ(*h, hashes[i]);
  }
  EXPECT_EQ(cache.hits(), 2u);
  EXPECT_EQ(cache.misses(), 0u);
  EXPECT_EQ(cache.lookup(key_named("/negative-mtime", -5)), (ContentHash{7, 8}));
  // Saving again replaces the file; a missing file loads as empty.
  ASSERT_TRUE(cache.save(state));
  ContentHashCache fresh;
  auto none = fresh.load(dir.path / "absent.jsonl");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->loaded + none->skipped, 0u);
}

TEST(ContentHashCache, LoadSkipsCorruptLinesAndCountsThem) {
  TempDir dir;
  const HashCacheEntry good{key_named("/good"), {1, 2}};
  const HashCacheEntry last{key_named("/last"), {3, 4}};
  const auto good_line = format_hash_cache_line(good);
  std::string text;
  text += good_line + "\n";
  text += "{not json\n";
  text += good_line.substr(0, good_line.size() / 2) + "\n";  // cut off mid-line
  text += "\n";                                                // blank: not counted
  auto v2 = good_line;
  v2.replace(v2.find("\"v\":1"), 5, "\"v\":2");
  text += v2 + "\n";
  text += std::string(kMaxHashCacheLineBytes + 10, 'x') + "\n";  // over the cap
  text += "[1,2,3]\n";
  text += format_hash_cache_line(last);  // no final newline
  const auto p = dir.path / "cache.jsonl";
  {
    std::ofstream out(p, std::ios::binary);
    out << text;
  }
  ContentHashCache cache;
  auto report = cache.load(p);
  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->loaded, 2u);
  EXPECT_EQ(report->skipped, 5u);
  EXPECT_EQ(cache.lookup(good.key), good.hash);
  EXPECT_EQ(cache.lookup(last.key), last.hash);
}

TEST(HashCacheLine, FormatsAndParsesBack) {
  HashCacheEntry e;
  e.hash = {~std::uint64_t{0}, 0};
  e.key.files.push_back({"/models/sdxl/unet.safetensors", {~std::uint64_t{0}, 42, 1u << 31, -1}});
  e.key.files.push_back({"/models/ünïcode \"quoted\".bin", {1, 2, 3, 4}});
  e.key.ranges = {{1, 0, 5}, {0, ~std::uint64_t{0}, 7}};
  const auto line = format_hash_cache_line(e);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto back = parse_hash_cache_line(line);
  ASSERT_TRUE(back) << back.error().message << "\n" << line;
  EXPECT_EQ(*back, e);
}

TEST(HashCacheLine, RefusesMalformedEntries) {
  const std::string hash = "\"hash\":\"0123456789abcdeffedcba9876543210\"";
  const std::string file = R"({"path":"/m/a","dev":1,"ino":2,"size":3,"mtimeNs":4})";
  auto line = [&](std::string files, std::string ranges, std::string extra = "\"v\":1,") {
    return "{" + extra + hash + ",\"files\":[" + files + "],\"ranges\":[" + ranges + "]}";
  };
  ASSERT_TRUE(parse_hash_cache_line(line(file, "[0,0,3]")));
  for (const std::string& bad : {
           line(file, "[1,0,3]"),                                          // names a file not listed
           line(file, "[0,0]"),                                            // not a triple
           line(file, "[0,-1,3]"),                                         // negative offset
           line(file, "[0,0.5,3]"),                                        // not an integer
           line(file, "[0,0,3]", ""),                                      // no version
           line(file, "[0,0,3]", "\"v\":\"1\","),                          // version not a number
           line(R"({"path":"","dev":1,"ino":2,"size":3,"mtimeNs":4})", ""),       // empty path
           line(R"({"path":"/a\u0000b","dev":1,"ino":2,"size":3,"mtimeNs":4})", ""),  // NUL
           line(R"({"path":"/a","dev":1,"ino":2,"size":-3,"mtimeNs":4})", ""),     // negative size
           line(R"({"path":"/a","dev":1,"ino":2,"size":3,"mtimeNs":9223372036854775808})", ""),
           line(R"({"path":"/a","dev":1,"ino":2,"size":3})", ""),                  // no mtime
           line(R"("/a")", ""),                                                     // not an object
           std::string("{\"v\":1,\"hash\":\"00\",\"files\":[],\"ranges\":[]}"),     // short hash
           std::string("\"just a string\""),
           std::string("{\"v\":1,\"hash\":\"0123456789abcdeffedcba9876543210\",\"files\":[],\"ranges\":[],"),
       }) {
    auto r = parse_hash_cache_line(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
    }
  }
  EXPECT_FALSE(parse_hash_cache_line(std::string(kMaxHashCacheLineBytes + 1, ' ')));
}

TEST(ContentHashCache, IsSafeToShareBetweenThreads) {
  TempDir dir;
  const auto f = open_ok(write_bytes(dir.path / "a.bin", pattern(64 * 1024, 12)));
  const ModelFile* files[] = {&f};
  ContentHashCache cache(8);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (std::uint64_t i = 0; i < 40; ++i) {
        const HashRange r[] = {{0, ((i + static_cast<std::uint64_t>(t)) % 16) * 4096, 4096}};
        auto a = hash_component(files, r, &cache);
        auto b = hash_component(files, r);
        if (!a || !b || *a != *b) ++failures;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(cache.size(), 8u);
  EXPECT_EQ(cache.hits() + cache.misses(), 160u);
}

}  // namespace
}  // namespace memd
