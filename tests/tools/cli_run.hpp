// tests/tools/cli_run.hpp — runs the built `memd` through the shell for the
// command-line tests: its exit code and stdout and stderr together.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace memd::testing {

struct Run {
  int code = -1;
  std::string out;
};

inline Run memd(const std::string& args) {
  Run r;
  const std::string command = std::string(MEMD_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p) != nullptr) r.out += buf.data();
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace memd::testing
