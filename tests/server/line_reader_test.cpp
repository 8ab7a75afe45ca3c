// Bounded line reading: long lines are dropped without being buffered.
#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

#include "server/stdio/line_reader.hpp"

namespace memd {
namespace {

TEST(LineReader, LinesTooLongAndLastLine) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::thread writer([w = fds[1]] {
    std::string text = "one\r\n" + std::string(5000, 'x') + "\nthree\n\nlast";
    [[maybe_unused]] auto n = ::write(w, text.data(), text.size());
    ::close(w);
  });
  LineReader reader(fds[0], 100, 7);  // tiny chunks: lines straddle reads
  std::string line;
  EXPECT_EQ(reader.next(line), LineReader::Status::Line);
  EXPECT_EQ(line, "one");
  EXPECT_EQ(reader.next(line), LineReader::Status::TooLong);
  EXPECT_EQ(reader.next(line), LineReader::Status::Line);
  EXPECT_EQ(line, "three");
  EXPECT_EQ(reader.next(line), LineReader::Status::Line);
  EXPECT_EQ(line, "");
  EXPECT_EQ(reader.next(line), LineReader::Status::Line);
  EXPECT_EQ(line, "last");
  EXPECT_EQ(reader.next(line), LineReader::Status::Eof);
  writer.join();
  ::close(fds[0]);
}

}  // namespace
}  // namespace memd
