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
// "params"), as X-Memd-Session does over REST. Nothing but responses and,
// once the host sent memory_subscribe, event lines (event_lines.hpp) is ever
// written to the output, each line whole (line_writer.hpp); logs go to
// stderr.
//
// Thread safety: run_stdio owns the calling thread until end of input.
// handle_stdio_line is thread-safe (it only calls the service).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "memd/size.hpp"
#include "server/stdio/line_writer.hpp"
#include "service/caller.hpp"

namespace memd {

class MemoryService;
struct Action;

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
// The same, for a door that also writes other lines (events) to `out`: the
// handler writes its own answer (returning whether the write succeeded), so
// it may hold the writer around it.
using LineHandler = std::function<bool(std::string_view line, LineWriter& out)>;
int serve_lines(const StdioOptions& options, int in_fd, LineWriter& out, const LineHandler& handle);

// Serves until end of input, releases the host's allocations, returns the
// process exit code (0; 1 when the output cannot be written).
int run_stdio(MemoryService& service, const StdioOptions& options, int in_fd, int out_fd);

// One request line → one response (JSON text, no newline), as `caller`:
// `memd stdio`'s host is the admin acting as its owner (the first form);
// `POST /api/stdio` (the bridge) passes the caller its headers resolved to.
std::string handle_stdio_line(MemoryService& service, std::string_view line, const std::string& owner);
std::string handle_stdio_line(MemoryService& service, std::string_view line, const Caller& caller);

// handle_stdio_line with what a door needs to act on the answer itself:
// the action that ran and, for memory_subscribe, its params and result.
struct StdioAnswer {
  std::string text;                  // the response line (no newline)
  const Action* action = nullptr;    // the action that was dispatched, if any
  bool ok = false;                   // it answered success
  nlohmann::json params;             // memory_subscribe's params (else null)
  nlohmann::json result;             // memory_subscribe's result (else null)
};
StdioAnswer answer_stdio_line(MemoryService& service, std::string_view line, const Caller& caller);

// The response to a line over the limit.
std::string stdio_too_long_response(std::uint64_t max_line);

}  // namespace memd
