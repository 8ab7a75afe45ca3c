// status_cache_bench — what a status query costs in-process (issue 14's bar:
// the cached report ≤ 1 µs before any JSON). A plain program, not Google
// Benchmark: each thread times batches of calls back to back, and the
// figure is the median batch's ns per call, over every batch of every
// thread (so a thread descheduled mid-batch moves only that batch).
//
//   build/release/bench/memd_status_cache_bench [--threads 1,4] [--batches 400] [--allocations 8]
//
// Three calls, on a MemoryService with host:0 (1 GiB) and a few live
// allocations on it, the sampler thread off (--monitor-interval 0: the
// sample is taken once, so no sample is being built while timing):
//   cached    Monitor::cached_status(): the thread's copy of the latest
//             sample that memory_status starts from (the bar)
//   status    MemoryService::status(nullopt): the cached report copied with
//             the allocator's live counters and pressure laid over (what the
//             action hands to JSON)
//   status+json  status, to_json and dump: the whole answer body
// Threads call concurrently (each its own batches); 4 threads on fewer cores
// measure contention and the scheduler together, so say how many cores.
//
// Exit status: 0 measured; 1 set-up failed; 2 bad flags.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "protocol/wire_encoding.hpp"
#include "service/memory_service.hpp"

using namespace memd;
using SteadyClock = std::chrono::steady_clock;

namespace {

struct Figures {
  double median_ns = 0, p10_ns = 0, p90_ns = 0;
  std::size_t batches = 0;
};

Figures figures(std::vector<double> per_call) {
  Figures f;
  if (per_call.empty()) return f;
  std::sort(per_call.begin(), per_call.end());
  auto at = [&](double q) { return per_call[static_cast<std::size_t>(q * static_cast<double>(per_call.size() - 1))]; };
  f.median_ns = at(0.5);
  f.p10_ns = at(0.1);
  f.p90_ns = at(0.9);
  f.batches = per_call.size();
  return f;
}

// What the calls add up, per thread (a shared atomic would make the threads
// contend on it and time that too); each thread adds its sum to `g_sink` at
// the end, so the compiler cannot drop the calls.
thread_local std::size_t t_sink = 0;
std::atomic<std::size_t> g_sink{0};

// Calls `call` in batches of `batch` on `threads` threads at once, after a
// warm-up batch each; every batch's ns per call.
template <class Call>
Figures measure(unsigned threads, std::size_t batches, std::size_t batch, const Call& call) {
  std::vector<std::vector<double>> per_thread(threads);
  std::barrier start(static_cast<std::ptrdiff_t>(threads));
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (std::size_t i = 0; i < batch; ++i) call();
      start.arrive_and_wait();
      auto& out = per_thread[t];
      out.reserve(batches);
      for (std::size_t b = 0; b < batches; ++b) {
        const auto t0 = SteadyClock::now();
        for (std::size_t i = 0; i < batch; ++i) call();
        const auto ns = std::chrono::duration<double, std::nano>(SteadyClock::now() - t0).count();
        out.push_back(ns / static_cast<double>(batch));
      }
      g_sink.fetch_add(t_sink, std::memory_order_relaxed);
      t_sink = 0;
    });
  }
  for (auto& th : pool) th.join();
  std::vector<double> all;
  for (auto& v : per_thread) all.insert(all.end(), v.begin(), v.end());
  return figures(std::move(all));
}

bool parse_count(std::string_view text, std::size_t lo, std::size_t hi, std::size_t& out) {
  std::size_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<unsigned> thread_counts = {1, 4};
  std::size_t batches = 400, allocations = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const std::string_view v = i + 1 < argc ? std::string_view(argv[i + 1]) : std::string_view();
    if (a == "--help" || a == "-h") {
      std::puts("memd_status_cache_bench [--threads 1,4] [--batches 400] [--allocations 8]");
      return 0;
    }
    if (a == "--threads" && i + 1 < argc) {
      thread_counts.clear();
      std::string_view rest = v;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        std::size_t n = 0;
        if (!parse_count(rest.substr(0, comma), 1, 64, n)) {
          std::fprintf(stderr, "--threads: '%.*s' is not a list of counts in [1, 64]\n", static_cast<int>(v.size()),
                       v.data());
          return 2;
        }
        thread_counts.push_back(static_cast<unsigned>(n));
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      }
      if (thread_counts.empty()) return 2;
      ++i;
    } else if (a == "--batches" && i + 1 < argc) {
      if (!parse_count(v, 10, 1'000'000, batches)) {
        std::fprintf(stderr, "--batches: a count in [10, 1000000]\n");
        return 2;
      }
      ++i;
    } else if (a == "--allocations" && i + 1 < argc) {
      if (!parse_count(v, 0, 10'000, allocations)) {
        std::fprintf(stderr, "--allocations: a count in [0, 10000]\n");
        return 2;
      }
      ++i;
    } else {
      std::fprintf(stderr, "unknown or incomplete flag '%s' (--help)\n", argv[i]);
      return 2;
    }
  }

  ServiceOptions options;
  options.backends.host_device_sizes = {kGiB};
  options.backends.enable_cuda = false;
  options.session_sweep_interval = std::chrono::milliseconds(0);
  options.monitor.interval = std::chrono::milliseconds(0);
  auto created = MemoryService::create(options);
  if (!created) {
    std::fprintf(stderr, "bench: %s\n", created.error().message.c_str());
    return 1;
  }
  MemoryService& service = **created;
  for (std::size_t k = 0; k < allocations; ++k) {
    AllocationRequest r;
    r.size_bytes = (k % 4 + 1) * kMiB;
    r.device = DeviceId::host(0);
    r.name = "bench-" + std::to_string(k);
    if (auto a = service.allocate(Caller::as("bench"), r); !a) {
      std::fprintf(stderr, "bench: allocate: %s\n", a.error().message.c_str());
      return 1;
    }
  }
  service.monitor().sample_now();  // the cache holds the allocations too

  const auto cached = [&] {
    auto p = service.monitor().cached_status();
    t_sink += p->devices.size();
  };
  const auto status = [&] {
    auto r = service.status(std::nullopt);
    t_sink += r ? r->devices.size() : 0;
  };
  const auto with_json = [&] {
    auto r = service.status(std::nullopt);
    const std::string body = to_json(*r).dump();
    t_sink += body.size();
  };
  const auto body_bytes = to_json(*service.status(std::nullopt)).dump().size();

  std::printf("status_cache_bench: %zu live allocations on host:0, %u hardware threads, %zu batches per thread\n",
              allocations, std::thread::hardware_concurrency(), batches);
  std::printf("%-12s %8s %8s %12s %12s %12s\n", "call", "threads", "batch", "median ns", "p10 ns", "p90 ns");
  struct Row {
    const char* name;
    std::size_t batch;
    std::function<void()> call;
  };
  const std::vector<Row> rows = {{"cached", 1000, cached}, {"status", 100, status}, {"status+json", 10, with_json}};
  for (const auto& row : rows) {
    for (unsigned threads : thread_counts) {
      const Figures f = measure(threads, batches, row.batch, row.call);
      std::printf("%-12s %8u %8zu %12.1f %12.1f %12.1f\n", row.name, threads, row.batch, f.median_ns, f.p10_ns,
                  f.p90_ns);
    }
  }
  std::printf("(status body: %zu bytes of JSON; checksum %zu)\n", body_bytes, g_sink.load());
  return 0;
}
