// The same operations through both doors give the same results, pinned by a
// golden transcript (tests/server/golden/doors.jsonl: "> request" lines, each
// followed by "< normalised response"). MEMD_UPDATE_GOLDEN=1 rewrites the
// responses from the stdio run; REST must still match them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "server/child_process.hpp"
#include "server/doors_support.hpp"

namespace memd::testing {
namespace {

constexpr const char* kGolden = MEMD_GOLDEN_DIR "/doors.jsonl";

struct Step {
  std::string request;   // template with <id-N>
  std::string expected;  // normalised response ("" when not recorded yet)
};

std::vector<Step> load_golden() {
  std::ifstream in(kGolden);
  std::vector<Step> steps;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("> ")) steps.push_back({line.substr(2), ""});
    else if (line.starts_with("< ") && !steps.empty()) steps.back().expected = line.substr(2);
  }
  return steps;
}

TEST(Doors, StdioAndRestGiveTheGoldenResults) {
  auto steps = load_golden();
  ASSERT_GT(steps.size(), 10u);
  const bool update = std::getenv("MEMD_UPDATE_GOLDEN") != nullptr;

  // stdio door.
  {
    ChildProcess memd({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "stdio", "--owner", "golden"});
    ASSERT_TRUE(memd.started());
    Normalizer norm;
    for (auto& step : steps) {
      auto line = memd.call(norm.substitute(step.request));
      ASSERT_TRUE(line) << step.request;
      const auto got = norm.normalize(json::parse(*line)).dump();
      if (update) step.expected = got;
      else EXPECT_EQ(got, step.expected) << "stdio: " << step.request;
    }
    memd.close_stdin();
    EXPECT_EQ(memd.wait(), 0);
  }
  if (update) {
    std::ofstream out(kGolden);
    for (const auto& s : steps) out << "> " << s.request << "\n< " << s.expected << "\n";
  }

  // REST door, same steps, same owner, as the admin.
  ChildProcess memd({MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "serve", "--listen", "127.0.0.1:0"});
  auto banner = memd.read_line();
  ASSERT_TRUE(banner);
  const std::string url = banner->substr(banner->find("http://"));
  httplib::Client client(url);
  Normalizer norm;
  for (const auto& step : steps) {
    auto request = json::parse(norm.substitute(step.request));
    // The stdio host is the admin of the engine it spawned; REST asks for it.
    const auto got = norm.normalize(rest_call(client, request, "golden", /*admin=*/true)).dump();
    EXPECT_EQ(got, step.expected) << "REST: " << step.request;
  }
  memd.signal(SIGTERM);
  EXPECT_EQ(memd.wait(), 0);
}

}  // namespace
}  // namespace memd::testing
