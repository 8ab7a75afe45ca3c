// memd-replay — replays allocation traces on memd and on baselines.
//
//   memd-replay [--backend host|cuda] [--device N] [--baseline memd|malloc|cuda-malloc|cuda-async[,...]]
//               [--repeat N] [--scale F,...] [--prefix F,...]
//               [--passes N [--jitter F] [--seed S]]
//               [--segments] [--json] [--validate] [--max-ratio R] TRACE...
//
// Prints per trace: peak_live_bytes, peak_footprint_bytes, footprint_ratio,
// ops, ns_per_op, device_calls (a JSON object per line with --json). Several
// baselines are replayed interleaved, round by round, so that a drift of the
// machine (GPU replays of one trace moved 40 % between calls a minute apart)
// hits them alike.
//
// --passes N replays each trace N times back to back in one pool (slot IDs
// renamed per pass, so what a pass leaves live stays live under the next);
// --jitter F multiplies each size of passes 2..N by a factor drawn from
// [1-F, 1+F], seeded by --seed. The whole-run figures keep their meaning; with
// N > 1 the first pass and the later ones are also reported apart: ns/op, and
// for memd the map and unmap calls of pass 1 and per later pass (average, and
// the most of any one later pass).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <charconv>
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
  // A text parsed below like --passes: CLI11's int would take "1e0" or " 1".
  std::string device_text = "0";
  app.add_option("--device", device_text,
                 "With --backend cuda and the cuda baselines: the GPU, cuda:N (default 0); one process per GPU "
                 "replays every GPU of a machine at once");
  app.add_option("--baseline", baseline,
                 "Allocators to replay on, comma-separated (memd, malloc, cuda-malloc, cuda-async); several are "
                 "interleaved round by round");
  app.add_option("--host-device", host_device, "Capacity of host:0 (default: 2x the trace's peak, >= 1GiB)");
  std::string policy = "footprint";
  app.add_option("--pool-policy", policy,
                 "memd's pool policy: footprint (default) or throughput (one mapping unit per mapped run); "
                 "throughput is reported as allocator memd-throughput")
      ->check(CLI::IsMember({"footprint", "throughput"}));
  app.add_option("--map-unit-max", unit_max, "Largest mapping unit (memd, virtual mode; for tuning experiments)");
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
  std::string passes_text = "1", jitter_text = "0", seed_text = "1";
  app.add_option("--passes", passes_text,
                 "Replay each trace N times back to back in one pool or allocator (1..1000); report the first "
                 "pass and the later ones apart");
  app.add_option("--jitter", jitter_text,
                 "With --passes: multiply each size in passes 2..N by a factor drawn from [1-F, 1+F], 0 <= F < 1");
  app.add_option("--seed", seed_text, "Seed of --jitter's draws (default 1)");
  app.add_option("--max-ratio", max_ratio, "Exit 1 if any trace's footprint_ratio exceeds this (0: no check)");
  app.add_option("TRACE", traces, "Trace files (gzip or text)")->required()->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);

  // A comma-separated list of factors within [lo, hi], or [lo, hi) when
  // `open_hi`; an empty list is none.
  auto factors = [](const std::string& list, const char* flag, double lo, double hi,
                    bool open_hi = false) -> std::optional<std::vector<double>> {
    std::vector<double> out;
    if (list.empty()) return out;
    for (const auto& item : split_commas(list)) {
      char* end = nullptr;
      const double f = std::strtod(item.c_str(), &end);
      // !(...) refuses NaN
      if (item.empty() || end != item.c_str() + item.size() || !(f >= lo && (open_hi ? f < hi : f <= hi))) {
        std::fprintf(stderr, "memd-replay: %s: '%s' is not a factor in [%g, %g%s\n", flag, item.c_str(), lo, hi,
                     open_hi ? ")" : "]");
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
  // One whole number in [lo, hi]: refuses signs, fractions, NaN and lists.
  auto whole = [](const std::string& text, const char* flag, std::uint64_t lo,
                  std::uint64_t hi) -> std::optional<std::uint64_t> {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || n < lo || n > hi) {
      std::fprintf(stderr, "memd-replay: %s: '%s' is not a whole number in [%llu, %llu]\n", flag, text.c_str(),
                   static_cast<unsigned long long>(lo), static_cast<unsigned long long>(hi));
      return std::nullopt;
    }
    return n;
  };
  const auto passes = whole(passes_text, "--passes", 1, 1000);
  const auto seed = whole(seed_text, "--seed", 0, ~std::uint64_t{0});
  // "," makes an empty --jitter a refused item rather than an empty list.
  const auto jitter = factors(jitter_text.empty() ? "," : jitter_text, "--jitter", 0, 1, true);
  const auto device = whole(device_text, "--device", 0, kMaxReplayDevice);
  if (!passes || !seed || !jitter || !device) return 2;
  const bool wants_cuda = backend == "cuda" || std::any_of(baselines.begin(), baselines.end(), [](const auto& b) {
    return b == "cuda-malloc" || b == "cuda-async";
  });
  if (*device != 0 && !wants_cuda) {
    std::fprintf(stderr, "memd-replay: --device %s: only --backend cuda and the cuda baselines have devices to pick\n",
                 device_text.c_str());
    return 2;
  }
  if (jitter->size() != 1) {
    std::fprintf(stderr, "memd-replay: --jitter: '%s' is one factor in [0, 1), not a list\n", jitter_text.c_str());
    return 2;
  }

  MemdReplayOptions mo;
  mo.backend = backend;
  mo.device = static_cast<int>(*device);
  mo.segments = segments;
  mo.policy = *parse_pool_policy(policy);
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
  if (!json) {
    std::printf("%-18s %-14s %-6s %14s %14s %9s %9s %10s %12s", "trace", "allocator", "backend", "peak_live",
                "peak_footprint", "ratio", "ops", "ns_per_op", "device_calls");
    // map/unmap: calls of pass 1, then the average per later pass and the
    // most map + unmap calls of any one later pass.
    if (*passes > 1)
      std::printf(" %6s %9s %9s %11s %15s %9s", "passes", "ns_first", "ns_later", "map/unmap_1", "map/unmap_later",
                  "max_later");
    std::printf("\n");
  }
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
    std::vector<Trace> cut;
    for (auto& t : scaled) {
      if (prefixes->empty()) cut.push_back(std::move(t));
      for (double f : *prefixes) cut.push_back(prefix_trace(t, f));
    }
    for (auto& t : cut)
      loaded.push_back(*passes > 1 ? repeat_trace(t, static_cast<int>(*passes), jitter->front(), *seed) : std::move(t));
  }
  auto print = [&](const ReplayResult& r, std::size_t runs, double fastest, double slowest) {
    const PassSummary ps = summarise_passes(r.passes);
    if (json) {
      std::string extra;
      if (r.mapping_ns_per_op >= 0) extra += fmt::format(",\"mapping_ns_per_op\":{:.1f}", r.mapping_ns_per_op);
      if (runs > 1)
        extra += fmt::format(",\"repeats\":{},\"ns_per_op_min\":{:.1f},\"ns_per_op_max\":{:.1f}", runs, fastest,
                             slowest);
      // Only with --passes > 1, so that the lines of a plain run stay as they were.
      if (*passes > 1) {
        extra += fmt::format(",\"passes\":{},\"jitter\":{},\"seed\":{},\"ns_per_op_first\":{:.1f},"
                             "\"ns_per_op_later\":{:.1f}",
                             ps.passes, jitter->front(), *seed, ps.ns_per_op_first, ps.ns_per_op_later);
        if (ps.counted)
          extra += fmt::format(
              ",\"map_calls_first\":{},\"unmap_calls_first\":{},\"mapped_units_first\":{},"
              "\"unmapped_units_first\":{},\"map_calls_later_per_pass\":{:.2f},\"unmap_calls_later_per_pass\":{:.2f},"
              "\"mapped_units_later_per_pass\":{:.2f},\"unmapped_units_later_per_pass\":{:.2f},"
              "\"map_unmap_calls_later_max\":{}",
              ps.map_calls_first, ps.unmap_calls_first, ps.mapped_units_first, ps.unmapped_units_first,
              ps.map_calls_later_per_pass, ps.unmap_calls_later_per_pass, ps.mapped_units_later_per_pass,
              ps.unmapped_units_later_per_pass, ps.map_unmap_calls_later_max);
      }
      std::printf(
          "{\"trace\":\"%s\",\"allocator\":\"%s\",\"backend\":\"%s\",\"device\":\"%s\",\"peak_live_bytes\":%llu,"
          "\"peak_footprint_bytes\":%llu,\"footprint_ratio\":%.4f,\"ops\":%llu,\"ns_per_op\":%.1f,"
          "\"device_calls\":%llu%s}\n",
          r.trace.c_str(), r.allocator.c_str(), r.backend.c_str(), r.device.c_str(),
          static_cast<unsigned long long>(r.peak_live_bytes), static_cast<unsigned long long>(r.peak_footprint_bytes),
          r.footprint_ratio, static_cast<unsigned long long>(r.ops), r.ns_per_op,
          static_cast<unsigned long long>(r.device_calls), extra.c_str());
    } else {
      std::printf("%-18s %-14s %-6s %14s %14s %9.4f %9llu %10.1f %12llu", r.trace.c_str(), r.allocator.c_str(),
                  r.backend.c_str(), format_size(r.peak_live_bytes).c_str(),
                  format_size(r.peak_footprint_bytes).c_str(), r.footprint_ratio,
                  static_cast<unsigned long long>(r.ops), r.ns_per_op, static_cast<unsigned long long>(r.device_calls));
      if (*passes > 1) {
        const std::string first =
            ps.counted ? fmt::format("{}/{}", ps.map_calls_first, ps.unmap_calls_first) : std::string("-");
        const std::string later = ps.counted ? fmt::format("{:.1f}/{:.1f}", ps.map_calls_later_per_pass,
                                                           ps.unmap_calls_later_per_pass)
                                             : std::string("-");
        const std::string most = ps.counted ? fmt::format("{}", ps.map_unmap_calls_later_max) : std::string("-");
        std::printf(" %6d %9.1f %9.1f %11s %15s %9s", ps.passes, ps.ns_per_op_first, ps.ns_per_op_later,
                    first.c_str(), later.c_str(), most.c_str());
      }
      std::printf("\n");
    }
    std::fflush(stdout);
  };
  for (const Trace& trace : loaded) {
    auto once = [&](const std::string& b) -> Result<ReplayResult> {
      return b == "memd"          ? replay_memd(trace, mo)
             : b == "malloc"      ? replay_malloc(trace)
             : b == "cuda-malloc" ? replay_cuda_malloc(trace, mo.device)
                                  : replay_cuda_async(trace, mo.device);
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
