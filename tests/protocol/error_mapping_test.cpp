// Every code of the closed list maps to one wire name and one HTTP status.
#include <gtest/gtest.h>

#include "protocol/error_mapping.hpp"

namespace memd {
namespace {

TEST(ErrorMapping, ObjectAndBodyShapes) {
  const Error e{ErrorCode::quota_exceeded, "owner limit"};
  EXPECT_EQ(error_object(e), (nlohmann::json{{"code", "quota_exceeded"}, {"message", "owner limit"}}));
  EXPECT_EQ(error_body(e), (nlohmann::json{{"error", error_object(e)}}));
  EXPECT_EQ(error_status(e), 507);
}

// An out_of_memory that names its snapshot carries it on the wire; equality
// sees it too.
TEST(ErrorMapping, SnapshotIdTravelsInTheErrorObject) {
  Error e{ErrorCode::out_of_memory, "out of memory (snapshot x; memd history x)"};
  e.snapshot_id = "c0ffee00-1234-4abc-8def-0123456789ab";
  EXPECT_EQ(error_object(e), (nlohmann::json{{"code", "out_of_memory"},
                                             {"message", "out of memory (snapshot x; memd history x)"},
                                             {"snapshotId", "c0ffee00-1234-4abc-8def-0123456789ab"}}));
  EXPECT_EQ(error_body(e)["error"]["snapshotId"], "c0ffee00-1234-4abc-8def-0123456789ab");
  EXPECT_EQ(error_status(e), 507);
  Error plain{ErrorCode::out_of_memory, e.message};
  EXPECT_NE(plain, e);
  EXPECT_FALSE(error_object(plain).contains("snapshotId"));
}

TEST(ErrorMapping, StatusesMatchTheDesign) {
  const std::pair<ErrorCode, int> expected[] = {
      {ErrorCode::invalid_argument, 400}, {ErrorCode::unauthenticated, 401},
      {ErrorCode::not_found, 404},        {ErrorCode::conflict, 409},
      {ErrorCode::payload_too_large, 413}, {ErrorCode::out_of_memory, 507},
      {ErrorCode::quota_exceeded, 507},   {ErrorCode::unavailable, 503},
      {ErrorCode::backend_error, 502},    {ErrorCode::internal, 500},
      {ErrorCode::permission_denied, 403}, {ErrorCode::out_of_range, 416},
      {ErrorCode::invalid_file, 422},     {ErrorCode::method_not_allowed, 405},
      {ErrorCode::uri_too_long, 414},     {ErrorCode::unsupported_media_type, 415},
      {ErrorCode::rate_limited, 429}};
  EXPECT_EQ(std::size(expected), std::size(kAllErrorCodes)) << "a code without a status here";
  for (auto [code, status] : expected) {
    EXPECT_EQ(error_status({code, ""}), status) << to_string(code);
    EXPECT_EQ(error_object({code, ""})["code"], std::string(to_string(code)));
  }
}

}  // namespace
}  // namespace memd
