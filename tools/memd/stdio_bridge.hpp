// tools/memd/stdio_bridge.hpp — `memd stdio --connect URL`: the stdio door
// of a daemon that is already running.
//
// One engine owns the GPU (`memd serve`); several host processes speak JSON
// lines to it, each through its own bridge. The bridge frames lines exactly
// as the in-process door does (server/stdio/stdio_server.hpp: the same line
// limit, blank lines skipped, the same answer to an over-long line) and
// sends every other line as it is to the daemon's `POST /api/stdio`, which
// answers it with the in-process door's own code: the two doors cannot
// answer differently.
//
// The bridge opens a session (`POST /api/sessions`) and carries it on every
// request; a heartbeat thread renews its lease. Closing stdin closes the
// session, so the daemon releases what this host allocated; a bridge that is
// killed lets the lease lapse, with the same effect a TTL later. The owner is
// the token's (daemon started with --tokens), else `--owner`, else
// `stdio-<pid>`.
//
// Thread safety: run_stdio_bridge owns the calling thread until end of input.
#pragma once

#include <string>

namespace memd::cli {

struct BridgeFlags {
  std::string url;          // http://127.0.0.1:7870
  std::string token;        // bearer
  std::string owner;        // X-Memd-Owner without tokens; empty: stdio-<pid>
  bool admin = false;       // X-Memd-Admin: true (loopback without tokens)
  std::string max_line = "16MiB";
  int ttl_seconds = 30;     // the session's lease; renewed every third of it
};

// Returns the process exit code: 0 at end of input; 1 when the daemon cannot
// be reached at the start, or stdout cannot be written.
int run_stdio_bridge(const BridgeFlags& flags);

}  // namespace memd::cli
