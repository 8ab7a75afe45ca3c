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
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "daemon.hpp"
#include "load_options.hpp"
#include "load_run.hpp"
#include "proc_stats.hpp"
#include "report.hpp"

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
  if (!o.spawn.empty()) {
    // Enough for the big allocations and one cycle allocation per client,
    // twice over, at least 1 GiB.
    const std::uint64_t need = o.big_count * o.big_size + o.clients * o.cycle_size;
    const std::uint64_t host_device =
        o.host_device ? o.host_device : std::max<std::uint64_t>(memd::kGiB, (2 * need + memd::kMiB - 1) / memd::kMiB * memd::kMiB);
    daemon = Daemon::spawn(o.spawn, host_device, o.daemon_args, o.daemon_log, std::chrono::seconds(30), why);
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
