// server/stdio/stdio_server.hpp — memd driven by JSON lines (`memd stdio`).
//
// One request per line on the input, one response per line on the output:
//   {"id": "7", "action": "memory_allocate", "params": {...}}
//   {"id": "7", "ok": true, "result": {...}}  or  {"id": "7", "ok": false, "error": {...}}
// A line that is not JSON, too long, names no known action, or carries
// non-object params gets an error response (id echoed when it could be read,
// else null) and the loop goes on. The host is one owner: everything it
// allocates is recorded under that owner, and at end of input all of it is
// released, its sessions ended. The host spawned this engine and owns it, so
// it is the admin (it may touch any owner's allocations and set limits). A
// line may name a session of the host's (`"session": "<id>"` beside
// "params"), as X-Memd-Session does over REST. Nothing but responses is ever
// written to the output; logs go to stderr.
//
// Thread safety: run_stdio owns the calling thread until end of input.
// handle_stdio_line is thread-safe (it only calls the service).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "memd/size.hpp"
#include "service/caller.hpp"

namespace memd {

class MemoryService;

inline constexpr std::uint64_t kDefaultMaxLine = 16 * kMiB;

struct StdioOptions {
  std::uint64_t max_line = kDefaultMaxLine;
  std::string owner;  // empty: "stdio-<pid>"
};

// The framing both stdio doors share (in-process here, the bridge to a
// daemon in tools/memd/stdio_bridge.cpp): reads lines up to max_line, skips
// blank ones, answers over-long ones itself, hands every other line to
// `answer` and writes its reply and a newline. Returns at end of input: 0,
// or 1 when the input cannot be read or the output cannot be written.
using LineAnswer = std::function<std::string(std::string_view line)>;
int serve_lines(const StdioOptions& options, int in_fd, int out_fd, const LineAnswer& answer);

// Serves until end of input, releases the host's allocations, returns the
// process exit code (0; 1 when the output cannot be written).
int run_stdio(MemoryService& service, const StdioOptions& options, int in_fd, int out_fd);

// One request line → one response (JSON text, no newline), as `caller`:
// `memd stdio`'s host is the admin acting as its owner (the first form);
// `POST /api/stdio` (the bridge) passes the caller its headers resolved to.
std::string handle_stdio_line(MemoryService& service, std::string_view line, const std::string& owner);
std::string handle_stdio_line(MemoryService& service, std::string_view line, const Caller& caller);

// The response to a line over the limit.
std::string stdio_too_long_response(std::uint64_t max_line);

}  // namespace memd
