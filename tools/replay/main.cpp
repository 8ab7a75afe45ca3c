// memd-replay — replays allocation traces on memd and on baselines.
//
//   memd-replay [--backend host|cuda] [--baseline memd|malloc|cuda-malloc|cuda-async[,...]]
//               [--repeat N] [--segments] [--json] [--validate] TRACE...
//
// Prints per trace: peak_live_bytes, peak_footprint_bytes, footprint_ratio,
// ops, ns_per_op, device_calls (a JSON object per line with --json). Several
// baselines are replayed interleaved, round by round, so that a drift of the
// machine (GPU replays of one trace moved 40 % between calls a minute apart)
// hits them alike.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "memd/size.hpp"
#include "replayers.hpp"

namespace {

// "a,b,,c" -> {"a", "b", "", "c"}; "" -> {""}.
std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> out;
  for (std::size_t at = 0; at <= list.size();) {
    const std::size_t comma = std::min(list.find(',', at), list.size());
    out.push_back(list.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace memd;
  using namespace memd::replay;
  CLI::App app{"memd-replay: replay allocation traces on memd and on baseline allocators"};
  std::string backend = "host";
  std::string baseline = "memd";
  std::string host_device, unit_max;
  bool json = false, segments = false, validate = false;
  double max_ratio = 0;
  std::vector<std::string> traces;
  app.add_option("--backend", backend, "Device backend for memd: host (host:0) or cuda (cuda:0)")
      ->check(CLI::IsMember({"host", "cuda"}));
  app.add_option("--baseline", baseline,
                 "Allocators to replay on, comma-separated (memd, malloc, cuda-malloc, cuda-async); several are "
                 "interleaved round by round");
  app.add_option("--host-device", host_device, "Capacity of host:0 (default: 2x the trace's peak, >= 1GiB)");
  app.add_option("--map-unit-max", unit_max, "Largest mapping unit (memd, virtual mode)");
  std::string unit_min, ahead_max, huge_threshold;
  app.add_option("--map-unit-min", unit_min, "Smallest mapping unit (memd, virtual mode)");
  app.add_option("--map-ahead-max", ahead_max, "Most bytes mapped ahead of growth, 0B for none (memd)");
  app.add_option("--huge-threshold", huge_threshold, "Requests at least this get a range of their own (memd)");
  double retain_fraction = -1;
  app.add_option("--retain-fraction", retain_fraction, "Slack kept above the peak of busy bytes (memd)");
  app.add_flag("--segments", segments, "memd in plain-segment mode instead of virtual memory");
  app.add_flag("--validate", validate, "Run the pool's validate() after each trace");
  app.add_flag("--json", json, "One JSON object per trace and line");
  int repeat = 1;
  app.add_option("--repeat", repeat,
                 "Replay each trace N times per allocator (a fresh pool each time); report the median time and "
                 "the fastest and slowest")
      ->check(CLI::Range(1, 100));
  std::string scale_list;
  app.add_option("--scale", scale_list,
                 "Replay each trace with every size multiplied by F (rounded down to 512 B), once per F: "
                 "--scale 0.5,0.8,2");
  std::string prefix_list;
  app.add_option("--prefix", prefix_list,
                 "Replay each trace only up to where its live bytes first reach F of the peak (then free "
                 "everything), once per F in (0, 1]: --prefix 0.1,0.25,0.5. With --scale: every scaled copy");
  app.add_option("--max-ratio", max_ratio, "Exit 1 if any trace's footprint_ratio exceeds this (0: no check)");
  app.add_option("TRACE", traces, "Trace files (gzip or text)")->required()->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);

  // A comma-separated list of factors within [lo, hi]; an empty list is none.
  auto factors = [](const std::string& list, const char* flag, double lo,
                    double hi) -> std::optional<std::vector<double>> {
    std::vector<double> out;
    if (list.empty()) return out;
    for (const auto& item : split_commas(list)) {
      char* end = nullptr;
      const double f = std::strtod(item.c_str(), &end);
      if (item.empty() || end != item.c_str() + item.size() || !(f >= lo && f <= hi)) {  // !(...) refuses NaN
        std::fprintf(stderr, "memd-replay: %s: '%s' is not a factor in [%g, %g]\n", flag, item.c_str(), lo, hi);
        return std::nullopt;
      }
      out.push_back(f);
    }
    return out;
  };
  std::vector<std::string> baselines;
  for (const auto& item : split_commas(baseline)) {
    if (item != "memd" && item != "malloc" && item != "cuda-malloc" && item != "cuda-async") {
      std::fprintf(stderr, "memd-replay: --baseline: '%s' is not one of memd, malloc, cuda-malloc, cuda-async\n",
                   item.c_str());
      return 2;
    }
    if (std::find(baselines.begin(), baselines.end(), item) == baselines.end()) baselines.push_back(item);
  }
  auto scales = factors(scale_list, "--scale", 0.01, 100);
  auto prefixes = factors(prefix_list, "--prefix", 0.001, 1);
  if (!scales || !prefixes) return 2;

  MemdReplayOptions mo;
  mo.backend = backend;
  mo.segments = segments;
  mo.validate = validate;
  mo.retain_fraction = retain_fraction;
  if (!host_device.empty()) {
    auto s = parse_size(host_device);
    if (!s) {
      std::fprintf(stderr, "memd-replay: --host-device: %s\n", s.error().message.c_str());
      return 2;
    }
    mo.host_device_bytes = *s;
  }
  for (auto [text, field] : {std::pair{&unit_max, &mo.map_unit_max}, std::pair{&unit_min, &mo.map_unit_min},
                              std::pair{&ahead_max, &mo.map_ahead_max},
                              std::pair{&huge_threshold, &mo.huge_threshold}}) {
    if (text->empty()) continue;
    auto s = parse_size(*text);
    if (!s) {
      std::fprintf(stderr, "memd-replay: %s\n", s.error().message.c_str());
      return 2;
    }
    *field = *s;
  }
  if (!json)
    std::printf("%-18s %-14s %-6s %14s %14s %9s %9s %10s %12s\n", "trace", "allocator", "backend", "peak_live",
                "peak_footprint", "ratio", "ops", "ns_per_op", "device_calls");
  int failures = 0;
  std::vector<Trace> loaded;
  for (const auto& path : traces) {
    auto trace = load_trace(path);
    if (!trace) {
      std::fprintf(stderr, "memd-replay: %s\n", trace.error().message.c_str());
      ++failures;
      continue;
    }
    std::vector<Trace> scaled;
    if (scales->empty()) scaled.push_back(std::move(*trace));
    for (double f : *scales) scaled.push_back(scale_trace(*trace, f));
    for (auto& t : scaled) {
      if (prefixes->empty()) loaded.push_back(std::move(t));
      for (double f : *prefixes) loaded.push_back(prefix_trace(t, f));
    }
  }
  auto print = [&](const ReplayResult& r, std::size_t runs, double fastest, double slowest) {
    if (json) {
      std::string extra;
      if (r.mapping_ns_per_op >= 0) extra += fmt::format(",\"mapping_ns_per_op\":{:.1f}", r.mapping_ns_per_op);
      if (runs > 1)
        extra += fmt::format(",\"repeats\":{},\"ns_per_op_min\":{:.1f},\"ns_per_op_max\":{:.1f}", runs, fastest,
                             slowest);
      std::printf(
          "{\"trace\":\"%s\",\"allocator\":\"%s\",\"backend\":\"%s\",\"device\":\"%s\",\"peak_live_bytes\":%llu,"
          "\"peak_footprint_bytes\":%llu,\"footprint_ratio\":%.4f,\"ops\":%llu,\"ns_per_op\":%.1f,"
          "\"device_calls\":%llu%s}\n",
          r.trace.c_str(), r.allocator.c_str(), r.backend.c_str(), r.device.c_str(),
          static_cast<unsigned long long>(r.peak_live_bytes), static_cast<unsigned long long>(r.peak_footprint_bytes),
          r.footprint_ratio, static_cast<unsigned long long>(r.ops), r.ns_per_op,
          static_cast<unsigned long long>(r.device_calls), extra.c_str());
    } else {
      std::printf("%-18s %-14s %-6s %14s %14s %9.4f %9llu %10.1f %12llu\n", r.trace.c_str(), r.allocator.c_str(),
                  r.backend.c_str(), format_size(r.peak_live_bytes).c_str(),
                  format_size(r.peak_footprint_bytes).c_str(), r.footprint_ratio,
                  static_cast<unsigned long long>(r.ops), r.ns_per_op, static_cast<unsigned long long>(r.device_calls));
    }
    std::fflush(stdout);
  };
  for (const Trace& trace : loaded) {
    auto once = [&](const std::string& b) -> Result<ReplayResult> {
      return b == "memd"          ? replay_memd(trace, mo)
             : b == "malloc"      ? replay_malloc(trace)
             : b == "cuda-malloc" ? replay_cuda_malloc(trace)
                                  : replay_cuda_async(trace);
    };
    // Short traces on a GPU are noisy (cudaMallocAsync measured 764 and 2049
    // ns/op a minute apart): with --repeat, the run with the median time is
    // reported (its footprint too; memd's footprint is deterministic). Round
    // i starts at baseline i mod n, so none always runs first.
    std::vector<std::vector<ReplayResult>> runs(baselines.size());
    std::vector<std::optional<Error>> failed(baselines.size());
    for (int i = 0; i < repeat; ++i)
      for (std::size_t k = 0; k < baselines.size(); ++k) {
        const std::size_t b = (k + static_cast<std::size_t>(i)) % baselines.size();
        if (failed[b]) continue;
        if (auto r = once(baselines[b]); r) runs[b].push_back(std::move(*r));
        else failed[b] = r.error();
      }
    for (std::size_t b = 0; b < baselines.size(); ++b) {
      if (failed[b]) {
        std::fprintf(stderr, "memd-replay: %s: %s\n", trace.name.c_str(), failed[b]->message.c_str());
        ++failures;
        continue;
      }
      auto& rs = runs[b];
      std::sort(rs.begin(), rs.end(),
                [](const ReplayResult& x, const ReplayResult& y) { return x.ns_per_op < y.ns_per_op; });
      const ReplayResult& r = rs[rs.size() / 2];
      print(r, rs.size(), rs.front().ns_per_op, rs.back().ns_per_op);
      if (max_ratio > 0 && r.footprint_ratio > max_ratio) {
        std::fprintf(stderr, "memd-replay: %s: footprint_ratio %.4f exceeds %.4f\n", r.trace.c_str(),
                     r.footprint_ratio, max_ratio);
        ++failures;
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
