// memd — the daemon, the stdio worker and the command-line client, one binary.
#include <CLI/CLI.hpp>

#include <iostream>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "commands.hpp"
#include "memd/version.hpp"

namespace {

using namespace memd::cli;

void add_client_flags(CLI::App* sub, ClientFlags& c) {
  sub->add_option("--url", c.client.url, "Daemon URL")->envname("MEMD_URL")->capture_default_str();
  sub->add_option("--token", c.client.token, "Bearer token")->envname("MEMD_TOKEN");
  sub->add_option("--as", c.client.owner,
                  "Act as this owner (X-Memd-Owner; a label without --tokens on the daemon, where the token "
                  "names the owner)")
      ->envname("MEMD_OWNER");
  sub->add_option("--session", c.client.session, "Work in this session (X-Memd-Session)")->envname("MEMD_SESSION");
  sub->add_flag("--json", c.json, "Print the JSON answer instead of a table");
}

}  // namespace

int main(int argc, char** argv) {
  // stdout belongs to the protocol (stdio) and to command output: logs go to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("memd"));

  CLI::App app{"memd — GPU memory manager for ML inference"};
  app.set_version_flag("--version", std::string(memd::version()));
  app.require_subcommand(1);
  app.fallthrough();
  // Every flag can come from a file (TOML or INI): top-level keys for the
  // flags before the command (host-device = ["4GiB"], no-cuda = true), a
  // section per command ([serve] listen = "0.0.0.0:8080"). Flags on the
  // command line override the file. Through fallthrough it is accepted
  // after the command too: `memd serve --config memd.toml`.
  app.set_config("--config", "", "Read flags from this TOML/INI file (command-line flags override it)");
  // A key that names no flag is an error, not ignored: a misspelt
  // "lisen" must not leave the daemon on its default port.
  app.allow_config_extras(CLI::config_extras_mode::error);
  int exit_code = 0;

  EngineOptions engine;
  app.add_option("--host-device", engine.host_devices,
                 "SIZE of a host-backed stand-in GPU (at least 64MiB), repeatable: the first is host:0, the "
                 "next host:1, and so on (e.g. --host-device 4GiB --host-device 2GiB). Default: one 8GiB host:0")
      ->allow_extra_args(false);
  app.add_flag("--no-cuda", engine.no_cuda, "Ignore CUDA GPUs (host devices only)");
  app.add_option("--monitor-interval", engine.monitor_interval_ms,
                 "Milliseconds between samples of every device (driver memory info, pool statistics); 0 samples "
                 "only at start and when a device limit changes")
      ->check(CLI::Range(0, 3'600'000))
      ->capture_default_str();
  app.add_option("--pressure-thresholds", engine.pressure_thresholds,
                 "MODERATE,HIGH,CRITICAL: percent of memd's capacity on a device in use at which its pressure "
                 "level rises")
      ->capture_default_str();
  app.add_option("--pressure-hysteresis", engine.pressure_hysteresis,
                 "Points below a threshold the use must fall before the level drops (no flapping)")
      ->capture_default_str();
  app.add_option("--pressure-policy", engine.pressure_policy,
                 "What memd does under pressure: full (at High release cached memory; at Critical also reclaim "
                 "through the callbacks and refuse Low-priority allocations), reclaim (no refusals), release "
                 "(High's action only), off (levels and events only)")
      ->capture_default_str();
  app.add_option("--defrag-schedule", engine.defrag_schedule,
                 "THRESHOLD,IDLE_SECONDS: defragment a device by itself once its fragmentation reaches THRESHOLD "
                 "(0..1) and nothing has allocated or freed on it for IDLE_SECONDS (e.g. 0.3,30); off: only on "
                 "request (memory_defragment)")
      ->capture_default_str();
  app.add_option("--event-ring", engine.event_ring,
                 "Events kept for resumption (Last-Event-ID); a subscriber further behind is told what it lost")
      ->check(CLI::Range(16, 1'000'000))
      ->capture_default_str();
  app.add_option("--model-root", engine.model_roots,
                 "DIR where model files may be loaded from, repeatable (paths resolve under these only: no '..', "
                 "no symlink out); none: model loading is off")
      ->allow_extra_args(false);
  app.add_option("--ram-cache", engine.ram_cache,
                 "SIZE of memd's RAM tier: pinned host memory holding models evicted from VRAM (0: none)")
      ->capture_default_str();
  app.add_option("--state-dir", engine.state_dir,
                 "DIR for state kept across restarts (created 0700 if missing; one daemon at a time): limits, "
                 "models (pinned ones loaded back at start, the rest known at the Disk tier) with their "
                 "keep-alive and priority, the usage predictor's history and the content-hash cache. Device "
                 "memory, allocations, sessions, exports and transfers are never kept")
      ->allow_extra_args(false);
  app.add_option("--preload-threshold", engine.preload_threshold,
                 "Probability the model predicted next must reach to be preloaded into idle VRAM or the RAM tier "
                 "(never by evicting); 0: no preloading")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--history-ring", engine.history_ring,
                 "Allocation history entries kept per device (memory_history, and copied into each out-of-memory "
                 "snapshot)")
      ->check(CLI::Range(16, 1'000'000))
      ->capture_default_str();
  ClientFlags client;
  app.add_flag("--admin", client.client.admin,
               "Client verbs: act as the admin (X-Memd-Admin: true) on a daemon without tokens; with "
               "tokens the token decides");

  ServeFlags serve;
  auto* serve_cmd = app.add_subcommand("serve", "Run the REST daemon");
  serve_cmd->add_option("--listen", serve.listen, "ADDRESS:PORT to listen on")->capture_default_str();
  serve_cmd->add_option("--token", serve.token,
                        "The admin's bearer token: require Authorization: Bearer TOKEN (this or --tokens is "
                        "needed off loopback); its requests act as X-Memd-Owner")
      ->envname("MEMD_TOKEN");
  serve_cmd->add_option("--tokens", serve.tokens_file,
                        "FILE of lines 'TOKEN OWNER [admin]': each bearer token acts as its owner (real "
                        "isolation between owners). Refused unless only its owner may read it (chmod 600)");
  serve_cmd->add_option("--threads", serve.threads,
                        "Worker threads that run request handlers (allocations, copies); connections are "
                        "carried by the --io-threads")
      ->capture_default_str();
  serve_cmd->add_option("--io-threads", serve.io_threads, "Threads that run the sockets (never block)")
      ->capture_default_str();
  const char* policy_help =
      "DEVICE=POLICY, repeatable: how the device's pools trade memory held for mapping calls. footprint "
      "(default): peak footprint within a few percent of peak live bytes; throughput: one mapping unit per "
      "mapped run, fewest driver calls, more memory held where the layout fragments (measured: up to 11% over "
      "peak live on one pass of our traces, 18% over five passes)";
  serve_cmd->add_option("--pool-policy", engine.pool_policies, policy_help);
  serve_cmd->add_option("--max-body", serve.max_body, "Largest JSON body")->capture_default_str();
  serve_cmd->add_option("--max-upload", serve.max_upload, "Largest data upload body")->capture_default_str();
  serve_cmd->add_option("--write-timeout", serve.write_timeout_s,
                        "Seconds a response may go with its reader taking less than one 64 KiB piece "
                        "(slow or stalled consumers are cut after this)")
      ->check(CLI::Range(1, 86'400))
      ->capture_default_str();
  serve_cmd->add_option("--socket", serve.socket,
                        "Unix socket where other processes import exports (memory_export): a PATH, auto "
                        "($XDG_RUNTIME_DIR or /tmp, memd-UID-PORT.sock) or off. Mode 0660; peers prove their owner "
                        "on it as over REST")
      ->capture_default_str();
  serve_cmd->add_option("--pinned-limit", serve.pinned_limit,
                        "Most pinned host memory memd holds (SharedMemory allocations and transfer staging "
                        "buffers); default a quarter of RAM");
  serve_cmd->add_option("--max-event-streams", serve.max_event_streams,
                        "Most server-sent event streams open at once (GET /api/memory/events); one more is "
                        "answered 503")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  serve_cmd->add_option("--rate-limit-requests", serve.rate_limit_requests,
                        "Requests per second each owner may make (a second's worth in a burst); over it: 429 "
                        "rate_limited with Retry-After. 0: no limit")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  serve_cmd->add_option("--rate-limit-bytes", serve.rate_limit_bytes,
                        "Body bytes per second each owner may move, in and out (SIZE, e.g. 1GiB); a request "
                        "after the owner ran over waits (429). Default: no limit");
  serve_cmd->add_flag("--rate-limit-loopback", serve.rate_limit_loopback,
                      "Apply the rate limits to loopback clients too (by default only to remote ones)");
  serve_cmd->add_option("--event-keepalive", serve.event_keepalive_s,
                        "Seconds without an event after which an event stream gets a keep-alive comment")
      ->check(CLI::Range(0.01, 3600.0))
      ->capture_default_str();
  serve_cmd->add_option("--log-level", serve.log_level,
                        "trace, debug (adds a line per request), info (a traffic summary a minute), warn, error, off")
      ->capture_default_str();
  serve_cmd->callback([&] { exit_code = run_serve(engine, serve); });

  StdioFlags stdio;
  auto* stdio_cmd = app.add_subcommand("stdio", "Serve JSON lines on stdin/stdout for one host process");
  stdio_cmd->add_option("--max-line", stdio.max_line, "Longest request line")->capture_default_str();
  stdio_cmd->add_option("--owner", stdio.owner, "Owner name of the host (default stdio-<pid>)");
  stdio_cmd->add_option("--connect", stdio.connect,
                        "Bridge to a running daemon at this URL (e.g. http://127.0.0.1:7870) instead of "
                        "running an engine here; closing stdin releases what this host allocated");
  stdio_cmd->add_option("--token", stdio.token, "With --connect: bearer token");
  stdio_cmd->add_flag("--admin", stdio.admin, "With --connect: ask for admin (loopback without --tokens)");
  stdio_cmd->add_option("--ttl", stdio.ttl_seconds, "With --connect: session lease in seconds, renewed every third")
      ->capture_default_str();
  stdio_cmd->add_option("--pool-policy", engine.pool_policies, policy_help);
  stdio_cmd->callback([&] { exit_code = run_stdio_command(engine, stdio); });

  bool devices_json = false;
  auto* devices_cmd = app.add_subcommand("devices", "List the devices this machine offers (local discovery)");
  devices_cmd->add_flag("--json", devices_json, "Print JSON");
  devices_cmd->callback([&] { exit_code = run_devices(engine, devices_json); });

  bool doc_json = false;
  auto* doc_cmd = app.add_subcommand("api-doc", "Print docs/api.md from the action table");
  doc_cmd->add_flag("--json", doc_json,
                    "Print the action table as JSON instead (routes, parameters, error codes: what "
                    "clients/python/gen_actions.py generates the Python client's methods from)");
  doc_cmd->callback([&] { exit_code = run_api_doc(doc_json); });

  std::string status_device;
  auto* status_cmd = app.add_subcommand("status", "Memory status of a running daemon");
  add_client_flags(status_cmd, client);
  status_cmd->add_option("--device", status_device, "Only this device");
  status_cmd->callback([&] { exit_code = run_status(client, status_device); });

  AllocationsFlags list;
  auto* list_cmd = app.add_subcommand("allocations", "List a daemon's allocations");
  add_client_flags(list_cmd, client);
  list_cmd->add_option("--device", list.device, "Filter by device");
  list_cmd->add_option("--type", list.type, "Filter by memory type");
  list_cmd->add_option("--owner", list.owner, "Filter by owner");
  list_cmd->add_option("--status", list.status, "Filter by status");
  list_cmd->add_option("--tag", list.tag, "Filter by tag");
  list_cmd->add_option("--limit", list.limit, "Page size")->capture_default_str();
  list_cmd->add_option("--offset", list.offset, "Page start")->capture_default_str();
  list_cmd->callback([&] { exit_code = run_allocations(client, list); });

  AllocateFlags alloc;
  auto* alloc_cmd = app.add_subcommand("allocate", "Allocate memory on a daemon");
  add_client_flags(alloc_cmd, client);
  alloc_cmd->add_option("size", alloc.size, "Size, e.g. 512MiB")->required();
  alloc_cmd->add_option("--type", alloc.type, "Memory type (VRAM, RAM, SharedMemory, UnifiedMemory)");
  alloc_cmd->add_option("--device", alloc.device, "Device, e.g. cuda:0 or host:0");
  alloc_cmd->add_option("--owner", client.client.owner, "Owner (X-Memd-Owner)");
  alloc_cmd->add_option("--name", alloc.name, "Label");
  alloc_cmd->add_option("--priority", alloc.priority, "Low, Normal, High or Critical");
  alloc_cmd->add_option("--allocation-type", alloc.allocation_type,
                        "What it holds: Model, Tensor, Buffer, Cache, Workspace or Staging");
  alloc_cmd->add_option("--tags", alloc.tags, "Tags, comma-separated (e.g. unet,fp16)")->delimiter(',');
  alloc_cmd->add_flag("--exportable", alloc.exportable,
                      "Memory of its own that other processes may map (memd export); never moves");
  alloc_cmd->add_flag("--pinned", alloc.pinned, "Never move it (defragmentation); clear frees it only with --include-pinned");
  alloc_cmd->callback([&] { exit_code = run_allocate(client, alloc); });

  std::string free_id;
  auto* free_cmd = app.add_subcommand("free", "Free an allocation on a daemon");
  add_client_flags(free_cmd, client);
  free_cmd->add_option("id", free_id, "Allocation id")->required();
  free_cmd->callback([&] { exit_code = run_free(client, free_id); });

  LimitsFlags limits;
  auto* limits_cmd = app.add_subcommand("limits", "Show limits, or set one (--device/--type/--owner with --bytes)");
  add_client_flags(limits_cmd, client);
  limits_cmd->add_option("--device", limits.device, "Limit a device");
  limits_cmd->add_option("--type", limits.type, "Limit a memory type");
  limits_cmd->add_option("--owner", limits.owner, "Limit an owner");
  limits_cmd->add_option("--bytes", limits.bytes, "The limit, e.g. 4GiB");
  limits_cmd->add_flag("--remove", limits.remove, "Remove the limit instead");
  limits_cmd->callback([&] { exit_code = run_limits(client, limits); });

  ClearFlags clear;
  auto* clear_cmd = app.add_subcommand("clear", "Release cached memory; with a filter also free allocations");
  add_client_flags(clear_cmd, client);
  clear_cmd->add_option("--owner", clear.owner, "Free this owner's allocations");
  clear_cmd->add_option("--type", clear.type, "Free allocations of this memory type");
  clear_cmd->add_option("--device", clear.device, "Free allocations on this device");
  clear_cmd->add_option("--below-priority", clear.below_priority, "Free allocations below this priority");
  clear_cmd->add_flag("--include-pinned", clear.include_pinned, "Free pinned allocations too");
  clear_cmd->callback([&] { exit_code = run_clear(client, clear); });

  auto* optimize_cmd = app.add_subcommand("optimize", "Release unused memory and report how much");
  add_client_flags(optimize_cmd, client);
  optimize_cmd->callback([&] { exit_code = run_optimize(client); });

  DefragmentFlags defrag;
  auto* defrag_cmd = app.add_subcommand("defragment", "Compact pools: move allocations so emptied memory goes back");
  add_client_flags(defrag_cmd, client);
  defrag_cmd->add_option("--device", defrag.device, "Only this device (default: all)");
  defrag_cmd->add_option("--max-bytes-per-pass", defrag.max_bytes, "Bytes one pass relocates, e.g. 256MiB");
  defrag_cmd->add_option("--max-moves-per-pass", defrag.max_moves, "Relocations per pass");
  defrag_cmd->add_option("--max-passes", defrag.max_passes, "Passes");
  defrag_cmd->add_flag("--no-remap", defrag.no_remap, "Copy even blocks that own whole mapping units");
  defrag_cmd->add_flag("--dry-run", defrag.dry_run, "Plan only; move nothing");
  defrag_cmd->callback([&] { exit_code = run_defragment(client, defrag); });

  LoadModelFlags load_model;
  auto* load_model_cmd =
      app.add_subcommand("load-model", "Load a model (file, shards, diffusers folder, checkpoint) and wait, with progress");
  add_client_flags(load_model_cmd, client);
  load_model_cmd->add_option("name", load_model.name, "The model's name")->required();
  load_model_cmd->add_option("path", load_model.path, "Its path under a --model-root of the daemon")->required();
  load_model_cmd->add_option("--device", load_model.device, "Where (default: chosen by --placement)");
  load_model_cmd->add_option("--placement", load_model.placement,
                             "Without --device: spread (the device with the most room, the default) or fit "
                             "(the least room that holds it); the daemon checks it");
  load_model_cmd->add_option("--priority", load_model.priority, "Low, Normal, High or Critical (eviction order)");
  load_model_cmd->add_option("--keep-alive", load_model.keep_alive_seconds, "Seconds after a use it is kept before others");
  load_model_cmd->add_option("--dtype", load_model.dtype, "F16 or BF16: its F32 tensors land converted to it");
  load_model_cmd->add_flag("--pin", load_model.pin, "Never evicted");
  load_model_cmd->callback([&] { exit_code = run_load_model(client, load_model); });

  std::string model_name;
  auto* models_cmd = app.add_subcommand("models", "List the models (or one, with its components)");
  add_client_flags(models_cmd, client);
  models_cmd->add_option("name", model_name, "One model");
  models_cmd->callback([&] { exit_code = run_models(client, model_name); });

  std::string unload_name;
  auto* unload_cmd = app.add_subcommand("unload", "Unload a model (what no other model shares is freed)");
  add_client_flags(unload_cmd, client);
  unload_cmd->add_option("name", unload_name, "The model")->required();
  unload_cmd->callback([&] { exit_code = run_unload(client, unload_name); });

  std::string optimize_models_device;
  bool optimize_models_dry = false;
  auto* optimize_models_cmd = app.add_subcommand(
      "optimize-models", "Offload idle models (keep-alive run out) a tier down and drop the RAM cache to its floor");
  add_client_flags(optimize_models_cmd, client);
  optimize_models_cmd->add_option("--device", optimize_models_device,
                                  "Only this device's models (cpu: only the RAM cache; default: all)");
  optimize_models_cmd->add_flag("--dry-run", optimize_models_dry, "Plan only; move nothing");
  optimize_models_cmd->callback(
      [&] { exit_code = run_optimize_models(client, optimize_models_device, optimize_models_dry); });

  auto* sessions_cmd = app.add_subcommand("sessions", "List your open sessions (the admin: all)");
  add_client_flags(sessions_cmd, client);
  sessions_cmd->callback([&] { exit_code = run_sessions(client); });

  // A session outlives the CLI call that opens it: scripts open one, pass
  // its id with --session (or MEMD_SESSION), heartbeat and close it.
  auto* session_cmd = app.add_subcommand("session", "Open, renew or close a session (a lease on allocations)");
  session_cmd->require_subcommand(1);
  std::uint64_t ttl_seconds = 0;
  std::string session_id;
  auto* open_cmd = session_cmd->add_subcommand("open", "Open a session; allocations made in it end with it");
  add_client_flags(open_cmd, client);
  auto* ttl_opt = open_cmd->add_option("--ttl", ttl_seconds, "Lease in seconds, 1..86400 (default 60)");
  open_cmd->callback([&, ttl_opt] {
    exit_code = run_session_open(client, ttl_opt->count() ? std::optional(ttl_seconds) : std::nullopt);
  });
  auto* beat_cmd = session_cmd->add_subcommand("renew", "Renew a session's lease (a heartbeat)");
  add_client_flags(beat_cmd, client);
  beat_cmd->add_option("id", session_id, "Session id")->required();
  beat_cmd->callback([&] { exit_code = run_session_heartbeat(client, session_id); });
  auto* close_cmd = session_cmd->add_subcommand("close", "Close a session and free what is in it");
  add_client_flags(close_cmd, client);
  close_cmd->add_option("id", session_id, "Session id")->required();
  close_cmd->callback([&] { exit_code = run_session_close(client, session_id); });

  // Transfers (issue 13): transfer and move wait for the end by default,
  // with a progress line on a terminal's stderr; Ctrl-C cancels.
  TransferFlags transfer;
  auto* transfer_cmd = app.add_subcommand(
      "transfer", "Copy between allocations in the background (memory_transfer) and wait for it to finish");
  add_client_flags(transfer_cmd, client);
  auto* src_opt = transfer_cmd->add_option("src", transfer.source, "Source allocation id");
  auto* dst_opt = transfer_cmd->add_option("dst", transfer.destination, "Destination allocation id");
  auto* src_offset_opt = transfer_cmd->add_option("--src-offset", transfer.source_offset,
                                                  "Where in the source to start (default 0)");
  auto* dst_offset_opt = transfer_cmd->add_option("--dst-offset", transfer.destination_offset,
                                                  "Where in the destination to start (default 0)");
  auto* size_opt = transfer_cmd->add_option("--size", transfer.size,
                                            "Bytes to copy, e.g. 4MiB (default: the source from --src-offset to its end)");
  transfer_cmd->add_option("--batch", transfer.batch_file,
                           "One batch from FILE ('-': stdin), a JSON array of {\"sourceAllocationId\", "
                           "\"destinationAllocationId\", \"sourceOffset\", \"destinationOffset\", \"sizeBytes\"}; "
                           "refused whole if any member is")
      ->excludes(src_opt)
      ->excludes(dst_opt)
      ->excludes(src_offset_opt)
      ->excludes(dst_offset_opt)
      ->excludes(size_opt);
  transfer_cmd->add_option("--max-rate", transfer.max_rate,
                           "Pace each transfer to this many bytes a second, e.g. 100MiB (leave the link to others)");
  transfer_cmd->add_flag("--no-wait", transfer.no_wait, "Print the Pending report and exit at once");
  transfer_cmd->callback([&] { exit_code = run_transfer(client, transfer); });

  MoveFlags move;
  auto* move_cmd = app.add_subcommand(
      "move", "Move an allocation to another device or memory type, keeping its id (memory_move), and wait");
  add_client_flags(move_cmd, client);
  move_cmd->add_option("id", move.id, "Allocation id")->required();
  move_cmd->add_option("--device", move.device, "Where to: cuda:N, host:N or cpu")->required();
  move_cmd->add_option("--type", move.type, "Memory type there (default VRAM on a GPU-like device, RAM on cpu)");
  move_cmd->add_option("--max-rate", move.max_rate, "Pace the copy to this many bytes a second, e.g. 100MiB");
  move_cmd->add_flag("--no-wait", move.no_wait, "Print the Pending report and exit at once");
  move_cmd->callback([&] { exit_code = run_move(client, move); });

  TransferFlags copy;
  auto* copy_cmd = app.add_subcommand("copy", "Copy bytes between or within allocations, synchronously (memory_copy)");
  add_client_flags(copy_cmd, client);
  copy_cmd->add_option("src", copy.source, "Source allocation id")->required();
  copy_cmd->add_option("dst", copy.destination, "Destination allocation id")->required();
  copy_cmd->add_option("--src-offset", copy.source_offset, "Where in the source to start (default 0)");
  copy_cmd->add_option("--dst-offset", copy.destination_offset, "Where in the destination to start (default 0)");
  copy_cmd->add_option("--size", copy.size, "Bytes to copy (default: the source from --src-offset to its end)");
  copy_cmd->callback([&] { exit_code = run_copy(client, copy); });

  std::string export_id, export_handle;
  std::vector<std::string> export_owners;
  auto* export_cmd = app.add_subcommand(
      "export", "Let other processes of the named owners map an exportable allocation (memory_export)");
  add_client_flags(export_cmd, client);
  export_cmd->add_option("id", export_id, "Allocation id (allocated with --exportable)")->required();
  export_cmd->add_option("--for", export_owners, "Owner who may import it (repeatable, 1..64)")->required();
  export_cmd->callback([&] { exit_code = run_export(client, export_id, export_owners); });
  auto* unexport_cmd = app.add_subcommand("export-release", "End an export: no new imports (memory_export_release)");
  add_client_flags(unexport_cmd, client);
  unexport_cmd->add_option("id", export_id, "Allocation id")->required();
  unexport_cmd->add_option("export", export_handle, "Export id")->required();
  unexport_cmd->callback([&] { exit_code = run_export_release(client, export_id, export_handle); });

  std::string transfer_id;
  auto* tstatus_cmd = app.add_subcommand("transfer-status", "A transfer's or a batch's report");
  add_client_flags(tstatus_cmd, client);
  tstatus_cmd->add_option("id", transfer_id, "Transfer id or batch id")->required();
  tstatus_cmd->callback([&] { exit_code = run_transfer_status(client, transfer_id); });
  auto* tcancel_cmd = app.add_subcommand("transfer-cancel", "Cancel a transfer, or every unfinished member of a batch");
  add_client_flags(tcancel_cmd, client);
  tcancel_cmd->add_option("id", transfer_id, "Transfer id or batch id")->required();
  tcancel_cmd->callback([&] { exit_code = run_transfer_cancel(client, transfer_id); });

  EventsFlags events;
  auto* events_cmd = app.add_subcommand("events", "Print a daemon's events as they happen (GET /api/memory/events)");
  add_client_flags(events_cmd, client);
  events_cmd->add_option("--kinds", events.kinds, "Only these kinds, comma-separated (e.g. pressure_changed)");
  events_cmd->add_option("--device", events.device, "Only events of this device");
  events_cmd->add_option("--last-event-id", events.last_event_id, "Resume after this sequence");
  events_cmd->add_option("--count", events.count, "Exit after this many events (0: never)")->capture_default_str();
  events_cmd->callback([&] { exit_code = run_events(client, events); });

  WatchFlags watch;
  auto* watch_cmd = app.add_subcommand("watch", "Devices, pressure and the last events of a daemon, live");
  add_client_flags(watch_cmd, client);
  watch_cmd->add_option("--interval", watch.interval_seconds, "Seconds between refreshes")->capture_default_str();
  watch_cmd->add_flag("--once", watch.once, "Print one screen and exit");
  watch_cmd->callback([&] { exit_code = run_watch(client, watch); });
  HistoryFlags history;
  auto* history_cmd = app.add_subcommand(
      "history", "Recent allocations, frees, moves and failures; with a SNAPSHOT_ID, why that request ran out of memory");
  add_client_flags(history_cmd, client);
  history_cmd->add_option("snapshot", history.snapshot_id, "The snapshotId an out_of_memory error named");
  history_cmd->add_option("--device", history.device, "Only this device (cuda:N, host:N or cpu)");
  history_cmd->add_option("--owner", history.owner, "Only this owner's entries (another's: the admin only)");
  history_cmd->add_option("--limit", history.limit,
                          "Entries shown: the newest N (1..4096, default 100; of a snapshot, its last 20)");
  history_cmd->callback([&] { exit_code = run_history(client, history); });

  // No verb: the help, on stderr, and the usage-error status (2), like any
  // command line tool given nothing to do.
  if (argc <= 1) {
    std::cerr << app.help();
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
