// The component loader on host devices: runs in any order land at their
// buffer offsets byte for byte, several readers at once; a file truncated
// during the load, a cancel and runs outside the file or the buffer are
// clean errors.
#include "models/component_loader.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "../transfer/transfer_test_support.hpp"
#include "models/dtype_convert.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;
using transfer_test::Env;
using transfer_test::pattern;

const DeviceId kDev = DeviceId::host(0);

struct TempFile {
  fs::path path;
  std::vector<std::byte> bytes;
  TempFile(std::uint64_t n, std::uint64_t seed) : bytes(pattern(n, seed)) {
    char tmpl[] = "/tmp/memd-loader-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    path = tmpl;
    ::close(fd);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                 static_cast<std::streamsize>(bytes.size()));
  }
  ~TempFile() { fs::remove(path); }
};

struct Target {
  AllocationRecord record;
  AllocationHold hold;
  LoadTarget target;
};

Target exportable(Env& env, std::uint64_t bytes) {
  AllocationRequest r;
  r.size_bytes = bytes;
  r.device = kDev;
  r.exportable = true;  // as a component is: memory of its own, never moved
  auto rec = env.manager->allocate(r);
  EXPECT_TRUE(rec) << rec.error().message;
  auto hold = env.manager->hold(rec->id);
  EXPECT_TRUE(hold);
  std::shared_lock io(hold->entry().io);
  const auto at = hold->location();
  return {*rec, std::move(*hold), {at.backend, at.ptr, bytes}};
}

TEST(ComponentLoader, RunsLandAtTheirOffsetsByteForByte) {
  Env env;
  TempFile a(40 * kMiB + 123, 1), b(3 * kMiB, 2);
  std::vector<ModelFile> files;
  files.push_back(*ModelFile::open(a.path));
  files.push_back(*ModelFile::open(b.path));
  // Out of order, across two files, starting mid-file, with a gap between.
  const std::vector<CopyRun> runs = {{1, 100, 0, 2 * kMiB},
                                     {0, 1000, 2 * kMiB + 256, 30 * kMiB},
                                     {0, 35 * kMiB, 33 * kMiB, 5 * kMiB + 123}};
  const std::uint64_t total = 38 * kMiB + 123;
  auto t = exportable(env, total);
  LoadProgress progress;
  LoaderOptions o;
  o.readers = 3;
  auto ok = load_component(files, runs, t.target, kDev, env.engine->stream_pool(),
                           env.engine->staging_buffers(), progress, o);
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(progress.bytes_read.load(), 37 * kMiB + 123);
  EXPECT_EQ(progress.bytes_copied.load(), 37 * kMiB + 123);
  const auto got = env.bytes(t.record);
  for (const auto& r : runs) {
    const auto& src = r.file == 0 ? a.bytes : b.bytes;
    ASSERT_TRUE(std::equal(src.begin() + static_cast<std::ptrdiff_t>(r.file_offset),
                           src.begin() + static_cast<std::ptrdiff_t>(r.file_offset + r.bytes),
                           got.begin() + static_cast<std::ptrdiff_t>(r.buffer_offset)))
        << "run at buffer offset " << r.buffer_offset;
  }
  t.hold.release();
  EXPECT_TRUE(env.manager->deallocate(t.record.id));
}

TEST(ComponentLoader, NarrowedRunsLandConvertedAsTheReferenceDoes) {
  Env env;
  // 20 MiB + 4 bytes of F32 bit patterns: several staging chunks, the last
  // one short; a plain run after it.
  TempFile a(20 * kMiB + 4, 5);
  std::vector<ModelFile> files;
  files.push_back(*ModelFile::open(a.path));
  for (Dtype to : {Dtype::F16, Dtype::BF16}) {
    const std::vector<CopyRun> runs = {{0, 4, 0, 20 * kMiB, to}, {0, 0, 10 * kMiB + 256, 4, std::nullopt}};
    const std::uint64_t total = 10 * kMiB + 512;
    auto t = exportable(env, total);
    LoadProgress progress;
    LoaderOptions o;
    o.readers = 3;
    auto ok = load_component(files, runs, t.target, kDev, env.engine->stream_pool(), env.engine->staging_buffers(),
                             progress, o);
    ASSERT_TRUE(ok) << ok.error().message;
    EXPECT_EQ(progress.bytes_read.load(), 20 * kMiB + 4) << "file bytes read";
    EXPECT_EQ(progress.bytes_copied.load(), 10 * kMiB + 4) << "buffer bytes landed";
    std::vector<std::byte> want(10 * kMiB);
    ASSERT_TRUE(convert_f32(std::span(a.bytes).subspan(4, 20 * kMiB), want, to));
    const auto got = env.bytes(t.record);
    EXPECT_TRUE(std::equal(want.begin(), want.end(), got.begin())) << to_string(to);
    EXPECT_TRUE(std::equal(a.bytes.begin(), a.bytes.begin() + 4, got.begin() + 10 * kMiB + 256));
    t.hold.release();
    EXPECT_TRUE(env.manager->deallocate(t.record.id));
  }
  // A narrowed run must be whole floats and narrow to F16 or BF16.
  auto t = exportable(env, 10 * kMiB);
  LoadProgress progress;
  for (const CopyRun& bad : {CopyRun{0, 0, 0, 6, Dtype::F16}, CopyRun{0, 0, 0, 8, Dtype::F64}}) {
    auto r = load_component(files, std::vector<CopyRun>{bad}, t.target, kDev, env.engine->stream_pool(),
                            env.engine->staging_buffers(), progress);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  }
  EXPECT_EQ(progress.bytes_read.load(), 0u);
  t.hold.release();
  EXPECT_TRUE(env.manager->deallocate(t.record.id));
}

TEST(ComponentLoader, AFileTruncatedDuringTheLoadFailsCleanly) {
  Env env;
  TempFile a(24 * kMiB, 3);
  std::vector<ModelFile> files;
  files.push_back(*ModelFile::open(a.path));
  ASSERT_EQ(::truncate(a.path.c_str(), 8 * kMiB), 0);  // after open, which saw 24 MiB
  auto t = exportable(env, 24 * kMiB);
  LoadProgress progress;
  const std::vector<CopyRun> runs = {{0, 0, 0, 24 * kMiB}};
  auto r = load_component(files, runs, t.target, kDev, env.engine->stream_pool(), env.engine->staging_buffers(),
                          progress);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_file);
  EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;
  EXPECT_LE(progress.bytes_copied.load(), 8 * kMiB);
  EXPECT_EQ(env.engine->staging().buffers_in_use, 0u) << "every staging buffer went back";
  t.hold.release();
  EXPECT_TRUE(env.manager->deallocate(t.record.id));
}

TEST(ComponentLoader, CancelAndRunsOutsideTheFileOrBufferAreRefused) {
  Env env;
  TempFile a(4 * kMiB, 4);
  std::vector<ModelFile> files;
  files.push_back(*ModelFile::open(a.path));
  auto t = exportable(env, 4 * kMiB);
  auto& streams = env.engine->stream_pool();
  auto& staging = env.engine->staging_buffers();
  LoadProgress progress;
  auto past_file = load_component(files, std::vector<CopyRun>{{0, 1, 0, 4 * kMiB}}, t.target, kDev, streams,
                                  staging, progress);
  ASSERT_FALSE(past_file);
  EXPECT_EQ(past_file.error().code, ErrorCode::invalid_argument);
  auto past_buffer = load_component(files, std::vector<CopyRun>{{0, 0, 1, 4 * kMiB}}, t.target, kDev, streams,
                                    staging, progress);
  ASSERT_FALSE(past_buffer);
  EXPECT_EQ(past_buffer.error().code, ErrorCode::invalid_argument);
  auto no_file = load_component(files, std::vector<CopyRun>{{1, 0, 0, 1}}, t.target, kDev, streams, staging,
                                progress);
  ASSERT_FALSE(no_file);
  auto overflow = load_component(files, std::vector<CopyRun>{{0, ~std::uint64_t{0}, 0, 2}}, t.target, kDev,
                                 streams, staging, progress);
  ASSERT_FALSE(overflow);
  EXPECT_EQ(progress.bytes_read.load(), 0u) << "refused before any read";
  progress.cancel = true;
  auto cancelled = load_component(files, std::vector<CopyRun>{{0, 0, 0, 4 * kMiB}}, t.target, kDev, streams,
                                  staging, progress);
  ASSERT_FALSE(cancelled);
  EXPECT_EQ(cancelled.error().code, ErrorCode::unavailable);
  t.hold.release();
  EXPECT_TRUE(env.manager->deallocate(t.record.id));
}

}  // namespace
}  // namespace memd
