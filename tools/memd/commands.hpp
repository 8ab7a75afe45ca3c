// tools/memd/commands.hpp — the `memd` subcommands, one function each.
//
// main.cpp declares the flags with CLI11 and calls these; each returns the
// process exit code (0 success, 1 failure with the message on stderr, 130
// when a Ctrl-C cancelled the transfer being waited on).
//
// Thread safety: called once from main's thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "api_client.hpp"

namespace memd::cli {

struct EngineOptions {
  // --host-device SIZE, once per host:N in order; none given: one 8 GiB host:0.
  std::vector<std::string> host_devices;
  bool no_cuda = false;  // ignore GPUs (tests, reproducible runs)
  std::vector<std::string> pool_policies;  // DEVICE=POLICY (alloc/pool_options.hpp)
  // The monitor (monitor/monitor.hpp): sampling interval in milliseconds (0:
  // sample only at start and on limit changes), pressure thresholds
  // "MODERATE,HIGH,CRITICAL" in percent, hysteresis points, the policy.
  int monitor_interval_ms = 1000;
  std::string pressure_thresholds = "60,80,92";
  double pressure_hysteresis = 3;
  std::string pressure_policy = "full";
  int event_ring = 4096;
  // "THRESHOLD,IDLE_SECONDS" (e.g. 0.3,30): defragment a device by itself
  // once its fragmentation reaches THRESHOLD and it has been idle that long;
  // "off" (default): only on request.
  std::string defrag_schedule = "off";
  int history_ring = 4096;  // allocation history entries per device
  // Directories model paths resolve under (models/model_roots.hpp); none:
  // model loading is off. The RAM tier's limit (memd's pinned model cache).
  std::vector<std::string> model_roots;
  std::string ram_cache = "4GiB";
  // Where state that outlives the daemon is kept (today the content-hash
  // cache); empty: nothing.
  std::string state_dir;
  // The predicted next model is preloaded at this probability (0: never).
  double preload_threshold = 0.5;
};

struct ServeFlags {
  std::string listen = "127.0.0.1:7870";
  std::string token;
  std::string tokens_file;
  int threads = 8;
  int io_threads = 2;
  std::string max_body = "64MiB";
  std::string max_upload = "1GiB";
  std::string log_level = "info";  // debug adds one line per request
  int write_timeout_s = 30;         // HttpOptions::write_timeout
  // The Unix socket exports are imported over: "auto" (beside the port, in
  // $XDG_RUNTIME_DIR or /tmp), a path, or "off".
  std::string socket = "auto";
  std::string pinned_limit;  // the pinned pool's limit ("" = a quarter of RAM)
  int max_event_streams = 4096;   // HttpOptions::max_event_streams
  double event_keepalive_s = 15;  // HttpOptions::event_keepalive
  double rate_limit_requests = 0;  // per owner and second; 0: off
  std::string rate_limit_bytes;    // body bytes per owner and second ("" : off)
  bool rate_limit_loopback = false;
};

struct StdioFlags {
  std::string max_line = "16MiB";
  std::string owner;
  // --connect: bridge to a running daemon instead of an engine in-process.
  std::string connect, token;
  bool admin = false;
  int ttl_seconds = 30;
};

int run_serve(const EngineOptions& engine, const ServeFlags& flags);
int run_stdio_command(const EngineOptions& engine, const StdioFlags& flags);
int run_devices(const EngineOptions& engine, bool json);
int run_api_doc(bool json);

// Client verbs of a running daemon.
struct ClientFlags {
  ClientOptions client;
  bool json = false;
};

struct AllocationsFlags {
  std::string device, type, owner, status, tag;
  std::uint64_t limit = 100, offset = 0;
};

struct AllocateFlags {
  std::string size, type, device, name, priority, allocation_type;
  std::vector<std::string> tags;
  bool pinned = false;
  bool exportable = false;
};

struct LimitsFlags {
  std::string device, type, owner, bytes;
  bool remove = false;
};

struct ClearFlags {
  std::string owner, type, device, below_priority;
  bool include_pinned = false;
};

// memd transfer / copy (issue 13). Offsets, sizes and the rate go to the
// daemon as typed ("4KiB"), so they are read by the one parser the wire
// uses, and its refusals name the key.
struct TransferFlags {
  std::string source, destination;  // allocation ids
  std::string source_offset, destination_offset, size, max_rate;
  std::string batch_file;  // --batch FILE, "-" for stdin: a JSON array of transfers
  bool no_wait = false;    // print the Pending report and exit
};

struct MoveFlags {
  std::string id, device, type, max_rate;
  bool no_wait = false;
};

int run_status(const ClientFlags& c, const std::string& device);
int run_allocations(const ClientFlags& c, const AllocationsFlags& f);
int run_allocate(const ClientFlags& c, const AllocateFlags& f);
int run_free(const ClientFlags& c, const std::string& id);
int run_limits(const ClientFlags& c, const LimitsFlags& f);
int run_clear(const ClientFlags& c, const ClearFlags& f);
int run_optimize(const ClientFlags& c);
// memd defragment: sizes go as typed ("256MiB"), read by the wire's parser.
struct DefragmentFlags {
  std::string device, max_bytes;
  std::uint64_t max_moves = 0, max_passes = 0;  // 0: the daemon's default
  bool no_remap = false;
  bool dry_run = false;
};
int run_defragment(const ClientFlags& c, const DefragmentFlags& f);
int run_sessions(const ClientFlags& c);

struct LoadModelFlags {
  std::string name, path, device, placement, priority, dtype;
  std::optional<std::uint64_t> keep_alive_seconds;
  bool pin = false;
};
// Loads and waits, with a progress line on a terminal; exit 1 when the load failed.
int run_load_model(const ClientFlags& c, const LoadModelFlags& f);
int run_models(const ClientFlags& c, const std::string& name);
int run_unload(const ClientFlags& c, const std::string& name);
// memd optimize-models [--device D] [--dry-run]: memory_model_optimize.
int run_optimize_models(const ClientFlags& c, const std::string& device, bool dry_run);
int run_session_open(const ClientFlags& c, std::optional<std::uint64_t> ttl_seconds);
int run_session_heartbeat(const ClientFlags& c, const std::string& id);
int run_session_close(const ClientFlags& c, const std::string& id);
// transfer and move wait until the transfer ends unless --no-wait: exit 0 if
// it completed, 1 if it failed or was cancelled by someone else, 130 if
// this process's Ctrl-C cancelled it.
int run_transfer(const ClientFlags& c, const TransferFlags& f);
int run_move(const ClientFlags& c, const MoveFlags& f);
int run_copy(const ClientFlags& c, const TransferFlags& f);
// memory_export for the owners named; memory_export_release.
int run_export(const ClientFlags& c, const std::string& id, const std::vector<std::string>& owners);
int run_export_release(const ClientFlags& c, const std::string& id, const std::string& export_id);
int run_transfer_status(const ClientFlags& c, const std::string& id);
// memd history [SNAPSHOT_ID]: the recent history table (--device, --owner,
// --limit entries, default 100), or a snapshot's report (--limit: its last
// history entries shown, default 20).
struct HistoryFlags {
  std::string snapshot_id, device, owner;
  std::optional<std::uint64_t> limit;
};
int run_history(const ClientFlags& c, const HistoryFlags& f);
int run_transfer_cancel(const ClientFlags& c, const std::string& id);

// memd events: the daemon's event stream, a line per event (--json: the
// stdio door's event lines); --count N exits after N events (1 if the stream
// ends before). memd watch: devices and the last events, redrawn every
// interval on a terminal, appended elsewhere; --once prints one screen.
struct EventsFlags {
  std::string kinds, device;
  std::optional<std::uint64_t> last_event_id;
  std::uint64_t count = 0;
};
struct WatchFlags {
  double interval_seconds = 1;
  bool once = false;
};
int run_events(const ClientFlags& c, const EventsFlags& f);
int run_watch(const ClientFlags& c, const WatchFlags& f);

}  // namespace memd::cli
