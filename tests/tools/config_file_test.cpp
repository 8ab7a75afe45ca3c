// `memd … --config FILE` (issue 17, item 4): every flag from a TOML/INI file,
// top-level keys for the flags before the command and a [serve] section for
// the daemon's; flags on the command line override the file; a key that
// names no flag, a broken file or a missing one is refused before anything
// starts.
#include <gtest/gtest.h>
#include <httplib.h>

#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "server/child_process.hpp"
#include "tools/cli_run.hpp"

namespace memd::testing {
namespace {

std::filesystem::path write_config(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::path(::testing::TempDir()) /
                    ("memd_config_" + std::to_string(::getpid()) + "_" + name + ".toml");
  std::ofstream(path) << text;
  return path;
}

// The daemon's host:0 size, as `memd serve` with these arguments reports it.
std::uint64_t host0_bytes(std::vector<std::string> args) {
  args.insert(args.begin(), MEMD_BINARY);
  ChildProcess daemon(args);
  auto banner = daemon.read_line();
  if (!banner || banner->find("http://") == std::string::npos) return 0;
  httplib::Client c(banner->substr(banner->find("http://")));
  auto r = c.Get("/api/memory/status/host:0");
  daemon.signal(SIGTERM);
  (void)daemon.wait();
  if (!r || r->status != 200) return 0;
  return nlohmann::json::parse(r->body)["devices"][0].value("totalBytes", std::uint64_t{0});
}

const char* kConfig = R"(# a daemon for the tests
no-cuda = true
host-device = ["96MiB"]

[serve]
listen = "127.0.0.1:0"
socket = "off"
)";

TEST(ConfigFile, EveryFlagCanComeFromTheFile) {
  const auto path = write_config("ok", kConfig);
  // After the command (the daemon's usual spelling) and before it.
  EXPECT_EQ(host0_bytes({"serve", "--config", path.string()}), 96ull << 20);
  EXPECT_EQ(host0_bytes({"--config", path.string(), "serve"}), 96ull << 20);
}

TEST(ConfigFile, CommandLineFlagsOverrideTheFile) {
  const auto path = write_config("override", kConfig);
  EXPECT_EQ(host0_bytes({"--host-device", "72MiB", "serve", "--config", path.string()}), 72ull << 20);
}

TEST(ConfigFile, UnknownKeysBrokenAndMissingFilesAreRefused) {
  const auto unknown = write_config("unknown", "no-cuda = true\n[serve]\nlisen = \"127.0.0.1:0\"\n");
  auto r = memd("serve --config " + unknown.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("lisen"), std::string::npos) << r.out;
  const auto top = write_config("top", "bogus-flag = 3\n");
  r = memd("serve --config " + top.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("bogus-flag"), std::string::npos) << r.out;
  const auto broken = write_config("broken", "[serve\nlisten=\n");
  r = memd("serve --config " + broken.string());
  EXPECT_NE(r.code, 0) << r.out;
  r = memd("serve --config /nonexistent/memd.toml");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("/nonexistent/memd.toml"), std::string::npos) << r.out;
  // A bad value is the flag's own error, as on the command line.
  const auto bad_value = write_config("value", "host-device = [\"lots\"]\n[serve]\nlisten = \"127.0.0.1:0\"\n");
  r = memd("serve --config " + bad_value.string());
  EXPECT_NE(r.code, 0) << r.out;
}

}  // namespace
}  // namespace memd::testing
