// tests/server/daemon.hpp — `memd serve` as a child process on a free port.
//
// Test-only: starts the built binary with a 64 MiB host device, small body
// limits and any extra flags, reads the URL from its banner, and on
// destruction sends SIGTERM and expects a clean exit.
//
// Thread safety: one thread per Daemon.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "server/child_process.hpp"

namespace memd::testing {

class Daemon {
 public:
  explicit Daemon(std::vector<std::string> extra = {})
      : process_([&] {
          std::vector<std::string> args{MEMD_BINARY, "--no-cuda", "--host-device", "64MiB", "serve",
                                        "--listen", "127.0.0.1:0", "--max-body", "4KiB", "--max-upload",
                                        "64KiB"};
          args.insert(args.end(), extra.begin(), extra.end());
          return args;
        }()) {
    auto banner = process_.read_line();
    if (banner && banner->find("http://") != std::string::npos) url_ = banner->substr(banner->find("http://"));
  }
  ~Daemon() {
    process_.signal(SIGTERM);
    EXPECT_EQ(process_.wait(), 0) << "memd serve did not shut down cleanly";
  }
  const std::string& url() const { return url_; }

 private:
  ChildProcess process_;
  std::string url_;
};

}  // namespace memd::testing
