// ModelFile: pread only, every read bounds-checked, a file truncated under
// it an error (never a signal), and what is not a regular file refused.
#include "models/model_file.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <vector>

#include "safetensors_writer.hpp"

namespace memd {
namespace {

namespace fs = std::filesystem;

using test_models::TempDir;

fs::path write_file(const fs::path& p, std::size_t bytes) {
  std::ofstream out(p, std::ios::binary);
  for (std::size_t i = 0; i < bytes; ++i) out.put(static_cast<char>(i * 7 + 3));
  return p;
}

TEST(ModelFile, ReadsRangesAndRefusesReadsPastItsEnd) {
  TempDir dir;
  auto f = ModelFile::open(write_file(dir.path / "a.bin", 1000));
  ASSERT_TRUE(f) << f.error().message;
  EXPECT_EQ(f->size(), 1000u);
  std::vector<std::byte> buf(10);
  ASSERT_TRUE(f->read_at(990, buf));
  for (std::size_t i = 0; i < buf.size(); ++i) EXPECT_EQ(buf[i], static_cast<std::byte>((990 + i) * 7 + 3));
  auto past = f->read_at(991, buf);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, ErrorCode::invalid_argument);
  EXPECT_NE(past.error().message.find("past its end"), std::string::npos);
  EXPECT_FALSE(f->read_at(~std::uint64_t{0} - 2, buf)) << "offset + size overflows";
}

TEST(ModelFile, ATruncatedFileIsAnErrorNotASignal) {
  TempDir dir;
  const auto p = write_file(dir.path / "t.bin", 1 << 20);
  auto f = ModelFile::open(p);
  ASSERT_TRUE(f);
  ASSERT_EQ(::truncate(p.c_str(), 4096), 0);
  std::vector<std::byte> buf(8192);
  auto r = f->read_at(0, buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_file);
  EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;
  auto now = f->current_identity();
  ASSERT_TRUE(now);
  EXPECT_NE(*now, f->identity());
  EXPECT_EQ(now->size, 4096u);
}

TEST(ModelFile, RefusesWhatIsNotARegularFile) {
  TempDir dir;
  const auto fifo = dir.path / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto r = ModelFile::open(fifo);  // must not block waiting for a writer
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  auto zero = ModelFile::open("/dev/zero");
  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().code, ErrorCode::invalid_argument);
  auto d = ModelFile::open(dir.path);
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().code, ErrorCode::invalid_argument);
  fs::create_symlink(write_file(dir.path / "real.bin", 10), dir.path / "link.bin");
  auto link = ModelFile::open(dir.path / "link.bin");
  ASSERT_FALSE(link);
  EXPECT_EQ(link.error().code, ErrorCode::invalid_argument);
  auto missing = ModelFile::open(dir.path / "none.bin");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
}

TEST(ModelFile, IdentityChangesWhenTheFileIsRewritten) {
  TempDir dir;
  const auto p = write_file(dir.path / "w.bin", 100);
  auto before = identify_file(p);
  ASSERT_TRUE(before);
  auto f = ModelFile::open(p);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->identity(), *before);
  const auto written = fs::last_write_time(p);
  fs::remove(p);
  write_file(p, 100);  // same size, new file (the inode may be reused, and a
                       // coarse clock may give the same mtime: set a later one)
  fs::last_write_time(p, written + std::chrono::seconds(2));
  auto after = identify_file(p);
  ASSERT_TRUE(after);
  EXPECT_NE(*after, *before);
}

}  // namespace
}  // namespace memd
