// Base64 round trips and strict rejection.
#include <gtest/gtest.h>

#include "protocol/base64.hpp"

namespace memd {
namespace {

std::vector<std::byte> bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), reinterpret_cast<const std::byte*>(s.data()) + s.size()};
}

TEST(Base64, KnownVectors) {
  EXPECT_EQ(base64_encode(bytes("")), "");
  EXPECT_EQ(base64_encode(bytes("f")), "Zg==");
  EXPECT_EQ(base64_encode(bytes("fo")), "Zm8=");
  EXPECT_EQ(base64_encode(bytes("foo")), "Zm9v");
  EXPECT_EQ(base64_encode(bytes("foobar")), "Zm9vYmFy");
  EXPECT_EQ(*base64_decode("Zm9vYmE="), bytes("fooba"));
  EXPECT_EQ(*base64_decode(""), bytes(""));
}

TEST(Base64, RoundTripsEveryByte) {
  std::vector<std::byte> all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<std::byte>(i));
  for (std::size_t n = 0; n < all.size(); n += 37) {
    std::span<const std::byte> part(all.data(), n);
    auto back = base64_decode(base64_encode(part));
    ASSERT_TRUE(back);
    EXPECT_TRUE(std::equal(back->begin(), back->end(), part.begin(), part.end()));
  }
}

TEST(Base64, RejectsInvalid) {
  for (std::string_view bad : {"Zg=", "Zg===", "Z===", "Zm9v!", "Zm 9", "=Zm9", "Zg==Zg==", "Zm=v"}) {
    auto r = base64_decode(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument);
  }
}

}  // namespace
}  // namespace memd
