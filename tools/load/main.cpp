// memd-load — a bounded load client for memd's REST door (issue 12).
//
// Holds idle keep-alive connections and slow streaming reads open against a
// daemon on loopback while clients run allocate → write → read → free cycles
// with byte checks, and reports errors, timeouts, mismatches,
// GET /api/memory/status latency (kept alive and fresh) and the daemon's
// peak RSS against its allocated bytes. With --sse-subscribers it also holds
// event subscribers open and checks that each receives a scripted sequence
// of limit_reached events in order (issue 14). docs/benchmarks.md, "REST door under
// load", has the figures and the commands. Exit 0: passed; 1: any error,
// mismatch, timeout, stop or missed goal; 2: refused flags, or no daemon to
// run against (it would not start, or the --pid is not there).
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "daemon.hpp"
#include "load_options.hpp"
#include "load_run.hpp"
#include "proc_stats.hpp"
#include "rate_run.hpp"
#include "report.hpp"
#include "soak_run.hpp"

using namespace memd::load;

namespace {

// Raises the soft descriptor limit to the hard one (a spawned daemon inherits
// it); refuses when even the hard limit is below what the load needs.
bool raise_descriptor_limit(std::uint64_t needed, std::string& why) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    why = "getrlimit(RLIMIT_NOFILE) failed";
    return false;
  }
  if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < needed) {
    why = fmt::format("the load needs {} descriptors; the hard limit is {} (ulimit -Hn)", needed, lim.rlim_max);
    return false;
  }
  lim.rlim_cur = lim.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
    why = "setrlimit(RLIMIT_NOFILE) failed";
    return false;
  }
  return true;
}

// The soak's model root: a fresh folder with its model files (the spawned
// daemon's --model-root); removed at the end.
std::string make_model_root(const LoadOptions& o, std::string& why) {
  std::string dir = (std::filesystem::temp_directory_path() / "memd-load-soak-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) {
    why = "cannot make a temporary model folder";
    return {};
  }
  for (std::uint64_t k = 0; k < 2; ++k) {
    std::ofstream f(fmt::format("{}/soak-{}.safetensors", dir, k), std::ios::binary);
    f << safetensors_file(0x50A4'0000ull + k, o.model_size);
    if (!f) {
      why = "cannot write the soak's model files in " + dir;
      return {};
    }
  }
  return dir;
}

int write_json(const std::string& path, const std::string& text) {
  if (path.empty()) return 0;
  std::ofstream out(path);
  out << text;
  if (!out) {
    std::cerr << "memd-load: --json: cannot write '" << path << "'\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = parse_load_flags(argc, argv);
  if (!parsed.options) {
    if (parsed.exit_code == 0) {
      std::cout << parsed.message;
      return 0;
    }
    std::cerr << "memd-load: " << parsed.message << "\n";
    return parsed.exit_code;
  }
  const LoadOptions& o = *parsed.options;
  std::signal(SIGPIPE, SIG_IGN);

  std::string why;
  if (!raise_descriptor_limit(o.descriptors_needed(), why)) {
    std::cerr << "memd-load: " << why << "\n";
    return 2;
  }

  std::unique_ptr<Daemon> daemon;
  std::string model_root;
  if (!o.spawn.empty() && o.mode == Mode::soak) {
    // Two host devices (transfers and moves between them), each enough for
    // every client's two largest allocations, at least 256 MiB.
    const std::uint64_t need = o.clients * 2 * (9 * memd::kMiB) + 4 * o.model_size;
    const std::uint64_t each =
        o.host_device ? o.host_device : std::max<std::uint64_t>(256 * memd::kMiB, (need + memd::kMiB - 1) / memd::kMiB * memd::kMiB);
    model_root = make_model_root(o, why);
    if (model_root.empty()) {
      std::cerr << "memd-load: " << why << "\n";
      return 2;
    }
    daemon = Daemon::spawn(o.spawn, {each, each}, {"--model-root", model_root}, o.daemon_args, o.daemon_log,
                           std::chrono::seconds(30), why);
    if (!daemon) {
      std::filesystem::remove_all(model_root);
      std::cerr << "memd-load: --spawn: " << why << "\n";
      return 2;
    }
  } else if (!o.spawn.empty() && o.mode == Mode::rate) {
    std::vector<std::string> args = o.daemon_args;
    if (o.flood_limit > 0)
      args.insert(args.end(), {"--rate-limit-requests", fmt::format("{}", o.flood_limit), "--rate-limit-loopback"});
    daemon = Daemon::spawn(o.spawn, {o.host_device ? o.host_device : memd::kGiB}, {}, args, o.daemon_log,
                           std::chrono::seconds(30), why);
    if (!daemon) {
      std::cerr << "memd-load: --spawn: " << why << "\n";
      return 2;
    }
  } else if (!o.spawn.empty()) {
    // Enough for the big allocations and one cycle allocation per client,
    // twice over, at least 1 GiB.
    const std::uint64_t need = o.big_count * o.big_size + o.clients * o.cycle_size;
    const std::uint64_t host_device =
        o.host_device ? o.host_device : std::max<std::uint64_t>(memd::kGiB, (2 * need + memd::kMiB - 1) / memd::kMiB * memd::kMiB);
    daemon = Daemon::spawn(o.spawn, {host_device}, {}, o.daemon_args, o.daemon_log, std::chrono::seconds(30), why);
    if (!daemon) {
      std::cerr << "memd-load: --spawn: " << why << "\n";
      return 2;
    }
  } else {
    if (!read_proc_memory(o.pid)) {
      std::cerr << "memd-load: --pid " << o.pid << ": no readable /proc/" << o.pid << "/status\n";
      return 2;
    }
    if (const auto limit = read_open_files_limit(o.pid); limit && *limit < o.descriptors_needed())
      std::cerr << "memd-load: warning: the daemon's descriptor limit is " << *limit << ", the load opens "
                << o.descriptors_needed() << " connections\n";
    daemon = Daemon::attach(o.pid, o.port);
  }

  if (o.mode == Mode::soak) {
    SoakReport report = run_soak(o, *daemon, model_root);
    report.daemon_end = daemon->spawned() ? daemon->stop(std::chrono::seconds(10)) : "";
    if (daemon->spawned() && report.daemon_end.rfind("exit 0", 0) != 0 && report.stop_reason.empty())
      report.failures.push_back("the daemon did not exit cleanly: " + report.daemon_end);
    if (!model_root.empty()) std::filesystem::remove_all(model_root);
    std::cout << soak_report_text(o, report);
    if (write_json(o.json_path, soak_report_json(o, report)) != 0) return 1;
    return report.ok() ? 0 : 1;
  }
  if (o.mode == Mode::rate) {
    RateReport report = run_rate(o, *daemon);
    report.daemon_end = daemon->spawned() ? daemon->stop(std::chrono::seconds(10)) : "";
    if (daemon->spawned() && report.daemon_end.rfind("exit 0", 0) != 0 && report.stop_reason.empty())
      report.failures.push_back("the daemon did not exit cleanly: " + report.daemon_end);
    std::cout << rate_report_text(o, report);
    if (write_json(o.json_path, rate_report_json(o, report)) != 0) return 1;
    return report.ok() ? 0 : 1;
  }
  RunReport report = run_load(o, *daemon);
  report.daemon_end = daemon->spawned() ? daemon->stop(std::chrono::seconds(10)) : "";
  if (daemon->spawned() && report.daemon_end.rfind("exit 0", 0) != 0 && report.stop_reason.empty())
    report.failures.push_back("the daemon did not exit cleanly: " + report.daemon_end);

  std::cout << report_text(o, report);
  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << report_json(o, report);
    if (!out) {
      std::cerr << "memd-load: --json: cannot write '" << o.json_path << "'\n";
      return 1;
    }
  }
  return report.ok() ? 0 : 1;
}
