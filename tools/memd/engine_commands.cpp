// Subcommands that run the engine in this process: serve, stdio, devices, api-doc.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "backends/device_catalog.hpp"
#include "backends/fault_backend.hpp"
#include "commands.hpp"
#include "memd/size.hpp"
#include "memd/version.hpp"
#include "protocol/api_doc.hpp"
#include "protocol/json_parse.hpp"
#include "protocol/wire_encoding.hpp"
#include "server/http/caller.hpp"
#include "server/http/http_server.hpp"
#include "server/socket/import_handler.hpp"
#include "server/socket/unix_socket_server.hpp"
#include "server/stdio/stdio_server.hpp"
#include "service/memory_service.hpp"
#include "shutdown_report.hpp"
#include "stdio_bridge.hpp"
#include "table.hpp"

namespace memd::cli {
namespace {

int report(const Error& error) {
  std::cerr << "memd: " << error.message << "\n";
  return 1;
}

// A stand-in GPU smaller than this holds too few 2 MiB mapping units to
// behave like a device pool at all; every test and tool asks for at least it.
constexpr std::uint64_t kMinHostDeviceBytes = 64 * kMiB;
constexpr std::uint64_t kDefaultHostDeviceBytes = 8 * kGiB;

// --host-device, repeatable: the N-th one is host:N's capacity.
Result<std::vector<std::uint64_t>> host_device_sizes(const std::vector<std::string>& flags) {
  if (flags.empty()) return std::vector<std::uint64_t>{kDefaultHostDeviceBytes};
  if (flags.size() > kMaxHostDevices)
    return fail(ErrorCode::invalid_argument, "--host-device: at most {} host devices, not {}",
                kMaxHostDevices, flags.size());
  std::vector<std::uint64_t> sizes;
  for (std::size_t i = 0; i < flags.size(); ++i) {
    auto bytes = parse_size(flags[i]);
    if (!bytes)
      return fail(ErrorCode::invalid_argument, "--host-device '{}' (host:{}): {}", flags[i], i,
                  bytes.error().message);
    if (*bytes < kMinHostDeviceBytes)
      return fail(ErrorCode::invalid_argument,
                  "--host-device '{}' (host:{}): a host device needs at least 64MiB", flags[i], i);
    sizes.push_back(*bytes);
  }
  return sizes;
}

// --state-dir: made (0700, only the daemon's user reads what it keeps) when
// missing; it must then be a directory the daemon can write.
Result<std::filesystem::path> state_directory(const std::string& text) {
  std::filesystem::path dir(text);
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    if (!std::filesystem::create_directories(dir, ec) && ec)
      return fail(ErrorCode::invalid_argument, "--state-dir {}: cannot create it: {}", text, ec.message());
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  }
  if (!std::filesystem::is_directory(dir, ec))
    return fail(ErrorCode::invalid_argument, "--state-dir {}: not a directory", text);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    return fail(ErrorCode::invalid_argument, "--state-dir {}: not writable by this user", text);
  return dir;
}

Result<ServiceOptions> service_options(const EngineOptions& engine) {
  auto sizes = host_device_sizes(engine.host_devices);
  if (!sizes) return fail(sizes.error());
  ServiceOptions options;
  options.backends.host_device_sizes = std::move(*sizes);
  options.backends.enable_cuda = !engine.no_cuda;
#if defined(MEMD_FAULT_INJECTION)
  // Test builds only (tools/CMakeLists.txt): the fault tests make backend
  // calls fail on purpose (backends/fault_backend.hpp). Loud, so nobody
  // mistakes the failures for a sick device.
  if (const char* spec = std::getenv("MEMD_TEST_FAULTS"); spec != nullptr && *spec != '\0') {
    auto rules = parse_fault_rules(spec);
    if (!rules) return fail(ErrorCode::invalid_argument, "MEMD_TEST_FAULTS: {}", rules.error().message);
    auto plan = std::make_shared<FaultPlan>();
    for (const auto& rule : *rules) plan->arm(rule);
    options.backends.wrap = [plan](std::unique_ptr<Backend> inner) -> std::unique_ptr<Backend> {
      return std::make_unique<FaultBackend>(std::move(inner), plan);
    };
    spdlog::warn("MEMD_TEST_FAULTS={}: injected backend faults are armed (a test build); those calls will fail",
                 spec);
  }
#endif
  for (const auto& text : engine.pool_policies) {
    auto policy = parse_device_pool_policy(text);
    if (!policy) return fail(ErrorCode::invalid_argument, "--pool-policy: {}", policy.error().message);
    options.manager.pool_policies[policy->first] = policy->second;
  }
  options.monitor.interval = std::chrono::milliseconds(engine.monitor_interval_ms);
  {
    double t[3] = {0, 0, 0};
    char tail = 0;
    if (std::sscanf(engine.pressure_thresholds.c_str(), "%lf,%lf,%lf%c", &t[0], &t[1], &t[2], &tail) != 3)
      return fail(ErrorCode::invalid_argument,
                  "--pressure-thresholds '{}': expected MODERATE,HIGH,CRITICAL in percent (e.g. 60,80,92)",
                  engine.pressure_thresholds);
    options.monitor.thresholds = {.moderate = t[0], .high = t[1], .critical = t[2],
                                  .hysteresis = engine.pressure_hysteresis};
    if (auto ok = options.monitor.thresholds.validate(); !ok)
      return fail(ErrorCode::invalid_argument, "--pressure-thresholds: {}", ok.error().message);
  }
  auto policy = PressurePolicy::parse(engine.pressure_policy);
  if (!policy) return fail(ErrorCode::invalid_argument, "--pressure-policy: {}", policy.error().message);
  options.monitor.policy = *policy;
  options.event_ring = static_cast<std::size_t>(engine.event_ring);
  if (engine.defrag_schedule != "off") {
    double threshold = 0, idle = 0;
    char tail = 0;
    if (std::sscanf(engine.defrag_schedule.c_str(), "%lf,%lf%c", &threshold, &idle, &tail) != 2 ||
        !(threshold > 0 && threshold <= 1) || !(idle >= 0 && idle <= 86'400))
      return fail(ErrorCode::invalid_argument,
                  "--defrag-schedule '{}': expected off or THRESHOLD,IDLE_SECONDS with 0 < THRESHOLD <= 1 and "
                  "0 <= IDLE_SECONDS <= 86400 (e.g. 0.3,30)",
                  engine.defrag_schedule);
    options.scheduled_defrag = DefragScheduleOptions{
        .fragmentation_threshold = threshold,
        .min_idle = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
            std::chrono::duration<double>(idle))};
  }
  options.history.ring_capacity = static_cast<std::size_t>(engine.history_ring);
  if (!engine.model_roots.empty()) {
    std::vector<std::filesystem::path> roots(engine.model_roots.begin(), engine.model_roots.end());
    auto made = ModelRoots::create(std::move(roots));
    if (!made) return fail(ErrorCode::invalid_argument, "--model-root: {}", made.error().message);
    options.models.roots = std::move(*made);
  }
  auto ram = parse_size(engine.ram_cache);
  if (!ram) return fail(ErrorCode::invalid_argument, "--ram-cache: {}", ram.error().message);
  options.models.ram_cache_bytes = *ram;
  if (!engine.state_dir.empty()) {
    auto dir = state_directory(engine.state_dir);
    if (!dir) return fail(dir.error());
    options.state_dir = std::move(*dir);
  }
  options.models.preload = engine.preload_threshold > 0;
  options.models.preload_threshold = engine.preload_threshold;
  return options;
}

Result<std::uint64_t> size_flag(const std::string& name, const std::string& text) {
  auto bytes = parse_size(text);
  if (!bytes) return fail(ErrorCode::invalid_argument, "{}: {}", name, bytes.error().message);
  if (*bytes == 0) return fail(ErrorCode::invalid_argument, "{} must be positive", name);
  return *bytes;
}

}  // namespace

int run_serve(const EngineOptions& engine, const ServeFlags& flags) {
  const auto level = spdlog::level::from_str(flags.log_level);
  if (level == spdlog::level::off && flags.log_level != "off")
    return report({ErrorCode::invalid_argument,
                   "--log-level: '" + flags.log_level + "' is not trace, debug, info, warn, error or off"});
  spdlog::set_level(level);
  HttpOptions http;
  if (auto ok = parse_listen(flags.listen, http); !ok) return report(ok.error());
  http.token = flags.token;
  if (!flags.tokens_file.empty()) {
    auto tokens = load_tokens_file(flags.tokens_file);
    if (!tokens) return report(tokens.error());
    http.tokens = std::move(*tokens);
  }
  http.threads = flags.threads;
  http.io_threads = flags.io_threads;
  auto max_body = size_flag("--max-body", flags.max_body);
  if (!max_body) return report(max_body.error());
  auto max_upload = size_flag("--max-upload", flags.max_upload);
  if (!max_upload) return report(max_upload.error());
  http.max_body = *max_body;
  http.max_upload = *max_upload;
  http.write_timeout = std::chrono::seconds(flags.write_timeout_s);
  http.max_event_streams = static_cast<std::size_t>(flags.max_event_streams);
  http.event_keepalive = std::chrono::milliseconds(static_cast<std::int64_t>(flags.event_keepalive_s * 1000));
  http.rate_limit.requests_per_second = flags.rate_limit_requests;
  if (!flags.rate_limit_bytes.empty()) {
    auto bytes = size_flag("--rate-limit-bytes", flags.rate_limit_bytes);
    if (!bytes) return report(bytes.error());
    http.rate_limit.bytes_per_second = static_cast<double>(*bytes);
  }
  http.rate_limit.loopback = flags.rate_limit_loopback;
  // Refuse before discovering devices: a misconfiguration should fail fast.
  if (auto ok = validate_http_options(http); !ok) return report(ok.error());

  auto options = service_options(engine);
  if (!options) return report(options.error());
  if (!flags.pinned_limit.empty()) {
    auto limit = size_flag("--pinned-limit", flags.pinned_limit);
    if (!limit) return report(limit.error());
    options->manager.pinned_limit_bytes = *limit;
  }
  // SIGINT/SIGTERM are taken by one thread with sigwait, so the server's
  // threads never run a signal handler and shutdown is an orderly stop().
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto service = MemoryService::create(*options);
  if (!service) return report(service.error());
  HttpServer server(**service, http);
  auto port = server.bind();
  if (!port) return report(port.error());
  const std::string host = http.host.find(':') != std::string::npos ? "[" + http.host + "]" : http.host;
  std::unique_ptr<ImportHandler> import_handler;
  std::unique_ptr<UnixSocketServer> socket;
  if (flags.socket != "off") {
    std::string path = flags.socket;
    if (path == "auto") {
      const char* runtime = std::getenv("XDG_RUNTIME_DIR");
      path = fmt::format("{}/memd-{}-{}.sock", runtime && *runtime ? runtime : "/tmp", ::getuid(), *port);
    }
    import_handler = std::make_unique<ImportHandler>(**service);
    socket = std::make_unique<UnixSocketServer>(path, *import_handler, CallerResolver(http.token, http.tokens));
    if (auto ok = socket->start(); !ok) return report(ok.error());
    (*service)->set_socket_path(path);
  }
  std::printf("memd listening on http://%s:%d\n", host.c_str(), *port);
  if (socket) std::printf("memd exports on unix:%s\n", socket->path().c_str());
  std::fflush(stdout);
  spdlog::info("memd {} serving {} device(s) on {}:{}", version(), (*service)->devices().size(),
               host, *port);

  // The first SIGINT/SIGTERM stops gracefully (requests in flight finish, up
  // to 10 s); a second one stops at once.
  std::atomic<bool> served{false};
  std::thread waiter([&] {
    for (int signals_seen = 0; !served.load(); ++signals_seen) {
      int sig = 0;
      sigwait(&signals, &sig);
      if (served.load()) return;
      if (signals_seen == 0) {
        spdlog::info("signal {}: shutting down (again to stop at once)", sig);
        server.shutdown();
      } else {
        spdlog::warn("signal {}: stopping now", sig);
        server.stop();
      }
    }
  });
  auto ran = server.run();
  // Wake the waiter if the server stopped on its own.
  served.store(true);
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  if (socket) socket->stop();  // importers' holds go before the release below
  // State as the daemon served it, before the release below empties it.
  if (auto* state = (*service)->state()) {
    if (auto saved = (*service)->save_state(); saved)
      spdlog::info("state saved in {}", state->directory().string());
    else
      spdlog::error("state: not every state file could be written: {}", saved.error().message);
  }
  if (!ran) return report(ran.error());
  release_at_shutdown(**service);
  spdlog::info("memd stopped");
  return 0;
}

int run_stdio_command(const EngineOptions& engine, const StdioFlags& flags) {
  if (!flags.connect.empty()) {
    if (!engine.pool_policies.empty())
      return report({ErrorCode::invalid_argument, "--pool-policy is the daemon's to set, not the bridge's"});
    return run_stdio_bridge({.url = flags.connect, .token = flags.token, .owner = flags.owner,
                             .admin = flags.admin, .max_line = flags.max_line, .ttl_seconds = flags.ttl_seconds});
  }
  if (!flags.token.empty() || flags.admin)
    return report({ErrorCode::invalid_argument, "--token and --admin go with --connect"});
  auto options = service_options(engine);
  if (!options) return report(options.error());
  auto max_line = size_flag("--max-line", flags.max_line);
  if (!max_line) return report(max_line.error());
  // A host that goes away must not kill memd before it releases memory.
  ::signal(SIGPIPE, SIG_IGN);
  auto service = MemoryService::create(*options);
  if (!service) return report(service.error());
  StdioOptions stdio;
  stdio.max_line = *max_line;
  stdio.owner = flags.owner;
  return run_stdio(**service, stdio, STDIN_FILENO, STDOUT_FILENO);
}

int run_devices(const EngineOptions& engine, bool json) {
  auto options = service_options(engine);
  if (!options) return report(options.error());
  auto catalog = DeviceCatalog::discover(options->backends);
  if (!catalog) return report(catalog.error());
  if (json) {
    nlohmann::json devices = nlohmann::json::array();
    for (const auto& d : (*catalog)->devices()) devices.push_back(to_json(d));
    std::cout << nlohmann::json{{"devices", devices}}.dump(2) << "\n";
    return 0;
  }
  Table table({"ID", "NAME", "BACKEND", "TOTAL", "FREE", "GRANULARITY", "SIMULATED"});
  for (const auto& d : (*catalog)->devices())
    table.add({d.id.to_string(), d.name, d.backend, format_size(d.total_bytes), format_size(d.free_bytes),
               d.granularity ? format_size(d.granularity) : "-", d.simulated ? "yes" : "no"});
  std::cout << table.render();
  // How each GPU-like device (row) reaches each other one (column).
  std::vector<DeviceId> gpu_like;
  for (const auto& d : (*catalog)->devices())
    if (d.id.is_gpu_like()) gpu_like.push_back(d.id);
  if (gpu_like.size() < 2) return 0;
  std::vector<std::string> headers{"PEERS"};
  for (const auto& id : gpu_like) headers.push_back(id.to_string());
  Table peers(std::move(headers));
  for (const auto& row : gpu_like) {
    std::vector<std::string> cells{row.to_string()};
    for (const auto& column : gpu_like)
      cells.emplace_back(row == column ? "self" : to_string((*catalog)->peer_access(row, column)));
    peers.add(std::move(cells));
  }
  std::cout << "\n" << peers.render();
  return 0;
}

int run_api_doc(bool json) {
  if (json) {
    std::cout << api_json().dump(2) << "\n";
    return 0;
  }
  std::cout << api_markdown();
  return 0;
}

}  // namespace memd::cli
