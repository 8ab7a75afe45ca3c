// bench/transfer_bench_support.hpp — what the transfer engine's plain
// benchmark programs (transfer_bench, peer_bench) share: wall-clock figures,
// flag values, the byte pattern every copy is checked against, byte access to
// their allocations, and the completion log their timings are read from.
// Written once so a fix to the checks reaches both programs. A CUDA build
// also gets BENCH_CUDA, the baselines' error check.
#pragma once

#include <algorithm>
#include <bit>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "alloc/memory_manager.hpp"
#include "memd/size.hpp"
#include "transfer/transfer_engine.hpp"

#if defined(MEMD_WITH_CUDA)
#include <cuda_runtime.h>

// The baselines' CUDA runtime calls: a failing call returns a backend_error
// naming the call and CUDA's reason.
#define BENCH_CUDA(call)                                                                     \
  do {                                                                                       \
    if (const cudaError_t e_ = (call); e_ != cudaSuccess)                                    \
      return fail(ErrorCode::backend_error, "{} failed: {}", #call, cudaGetErrorString(e_)); \
  } while (0)
#endif

namespace memd::bench {

using Clock = std::chrono::steady_clock;

static_assert(std::endian::native == std::endian::little, "the byte pattern assumes little-endian words");

inline double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// GB/s = 10^9 bytes per second.
inline double gbps(std::uint64_t bytes, double seconds) {
  return seconds > 0 ? static_cast<double>(bytes) / seconds / 1e9 : 0.0;
}

// The program's result: printed as its last line, and written indented to
// `path` when one was given. False (after saying so) when it cannot be
// written.
inline bool emit_json(const nlohmann::ordered_json& out, const std::string& path, const char* program) {
  std::printf("%s\n", out.dump().c_str());
  if (path.empty()) return true;
  std::ofstream f(path);
  f << out.dump(2) << '\n';
  if (!f) {
    std::fprintf(stderr, "%s: cannot write %s\n", program, path.c_str());
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Flag values

// A whole decimal number, nothing else (empty text is refused).
inline std::optional<unsigned> parse_unsigned(std::string_view text) {
  unsigned v = 0;
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc{} || p != end) return std::nullopt;
  return v;
}

// A size such as 256M (parse_size's suffixes); zero is refused.
inline std::optional<std::uint64_t> parse_bytes(std::string_view text) {
  auto v = parse_size(text);
  if (!v || *v == 0) return std::nullopt;
  return *v;
}

// ---------------------------------------------------------------------------
// The byte pattern: byte `offset` of pattern `seed` is byte offset % 8 of
// word(seed, offset / 8), so any range can be made, or checked, on its own.

inline std::uint64_t word(std::uint64_t seed, std::uint64_t index) {
  std::uint64_t z = (seed * 0x9E3779B97F4A7C15ull) ^ (index + 0x632BE59BD9B4E019ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline std::byte byte_at(std::uint64_t seed, std::uint64_t offset) {
  return static_cast<std::byte>(word(seed, offset / 8) >> (8 * (offset % 8)));
}

inline void make_pattern(std::uint64_t seed, std::uint64_t offset, std::span<std::byte> out) {
  std::size_t i = 0;
  for (; i < out.size() && (offset + i) % 8 != 0; ++i) out[i] = byte_at(seed, offset + i);
  for (; i + 8 <= out.size(); i += 8) {
    const std::uint64_t w = word(seed, (offset + i) / 8);
    std::memcpy(out.data() + i, &w, 8);
  }
  for (; i < out.size(); ++i) out[i] = byte_at(seed, offset + i);
}

// Where the samples checked after a timed copy lie: the first and last
// kSampleBytes, 46 more evenly spread, and 16 that change with the rep; each
// offset rounded down to a multiple of `align`.
constexpr std::uint64_t kSampleBytes = 4096;

inline std::vector<std::uint64_t> sample_offsets(std::uint64_t size, unsigned rep, std::uint64_t align = 1) {
  const std::uint64_t len = std::min(kSampleBytes, size);
  const std::uint64_t last = (size - len) / align * align;
  std::vector<std::uint64_t> out;
  constexpr unsigned kSpread = 48, kRandom = 16;
  for (unsigned i = 0; i < kSpread; ++i) out.push_back(last * i / (kSpread - 1) / align * align);
  for (unsigned i = 0; i < kRandom; ++i) out.push_back(last ? word(rep + 1, i) % (last + 1) / align * align : 0);
  return out;
}

// ---------------------------------------------------------------------------
// Byte access to a program's allocations: host memory through its pointer,
// device memory through the engine. In a CUDA build the CUDA backend serves
// cpu SharedMemory and has no stream for device cpu, so TransferEngine's
// write/read cannot reach host allocations; their pointers are valid until
// freed (nothing in these programs moves them).

class PatternBytes {
 public:
  // Remembers `rec`'s pointer when it lives on the host.
  Result<void> track(MemoryManager& manager, const AllocationRecord& rec) {
    if (rec.device.kind() != DeviceKind::Cpu) return {};
    auto hold = manager.hold(rec.id);
    if (!hold) return fail(hold.error());
    std::shared_lock io(hold->entry().io);
    host_pointers_.emplace(rec.id, hold->location().ptr);
    return {};
  }
  void forget(const AllocationId& id) { host_pointers_.erase(id); }

  // The first `bytes` of `a` get pattern `seed`.
  Result<void> fill(TransferEngine& engine, const AllocationId& a, std::uint64_t seed, std::uint64_t bytes) {
    std::vector<std::byte> piece(std::min(bytes, kPiece));
    for (std::uint64_t at = 0; at < bytes; at += kPiece) {
      const std::span<std::byte> part(piece.data(), std::min(kPiece, bytes - at));
      make_pattern(seed, at, part);
      if (auto w = write(engine, a, at, part); !w) return w;
    }
    return {};
  }

  // The first `bytes` of `a` hold pattern `seed`, every byte of them.
  Result<void> check_all(TransferEngine& engine, const AllocationId& a, std::uint64_t seed, std::uint64_t bytes) {
    std::vector<std::byte> expected(std::min(bytes, kPiece));
    for (std::uint64_t at = 0; at < bytes; at += kPiece) {
      const std::uint64_t n = std::min(kPiece, bytes - at);
      auto got = read(engine, a, at, n);
      if (!got) return fail(got.error());
      make_pattern(seed, at, {expected.data(), n});
      if (auto r = compare(*got, {expected.data(), n}, at); !r) return r;
    }
    return {};
  }

  // Overwrites each sample of `a` with the bitwise complement of pattern
  // `seed`: bytes a copy must replace.
  Result<void> spoil(TransferEngine& engine, const AllocationId& a, std::uint64_t seed,
                     const std::vector<std::uint64_t>& offsets, std::uint64_t bytes) {
    std::vector<std::byte> wrong(std::min(kSampleBytes, bytes));
    for (auto at : offsets) {
      make_pattern(seed, at, wrong);
      for (auto& b : wrong) b = ~b;
      if (auto w = write(engine, a, at, wrong); !w) return w;
    }
    return {};
  }

  Result<void> check_samples(TransferEngine& engine, const AllocationId& a, std::uint64_t seed,
                             const std::vector<std::uint64_t>& offsets, std::uint64_t bytes) {
    std::vector<std::byte> expected(std::min(kSampleBytes, bytes));
    for (auto at : offsets) {
      auto got = read(engine, a, at, expected.size());
      if (!got) return fail(got.error());
      make_pattern(seed, at, expected);
      if (auto r = compare(*got, expected, at); !r) return r;
    }
    return {};
  }

 private:
  static constexpr std::uint64_t kPiece = 64 * kMiB;

  Result<void> write(TransferEngine& engine, const AllocationId& a, std::uint64_t at,
                     std::span<const std::byte> data) {
    if (auto p = host_pointers_.find(a); p != host_pointers_.end()) {
      std::memcpy(p->second + at, data.data(), data.size());
      return {};
    }
    return engine.write(a, at, data);
  }
  Result<std::vector<std::byte>> read(TransferEngine& engine, const AllocationId& a, std::uint64_t at,
                                      std::uint64_t bytes) {
    if (auto p = host_pointers_.find(a); p != host_pointers_.end())
      return std::vector<std::byte>(p->second + at, p->second + at + bytes);
    return engine.read(a, at, bytes);
  }
  static Result<void> compare(std::span<const std::byte> got, std::span<const std::byte> expected,
                              std::uint64_t offset) {
    auto [g, e] = std::mismatch(got.begin(), got.end(), expected.begin());
    if (g == got.end()) return {};
    const auto at = offset + static_cast<std::uint64_t>(g - got.begin());
    return fail(ErrorCode::internal, "wrong bytes: at offset {} found {:#04x}, expected {:#04x}", at,
                static_cast<unsigned>(*g), static_cast<unsigned>(*e));
  }

  std::unordered_map<AllocationId, std::byte*> host_pointers_;
};

// ---------------------------------------------------------------------------
// The engine's completion hook, kept: each report with the moment it came,
// which is where a memd copy's wall time ends.

struct Finished {
  TransferReport report;
  Clock::time_point at;
};

class CompletionLog {
 public:
  // Installs the hook on `engine` (this log must outlive it).
  void attach(TransferEngine& engine) {
    engine.set_completion_hook([this](const TransferReport& report) {
      const auto at = Clock::now();
      {
        std::lock_guard lock(mutex_);
        finished_.insert_or_assign(report.id, Finished{report, at});
      }
      finished_cv_.notify_all();
    });
  }

  // Waits up to `limit` for every one of `ids`, then takes their entries out
  // (in the order of `ids`); nullopt when one is still missing.
  std::optional<std::vector<Finished>> take(std::span<const TransferId> ids, std::chrono::minutes limit) {
    std::unique_lock lock(mutex_);
    const bool all = finished_cv_.wait_for(lock, limit, [&] {
      return std::all_of(ids.begin(), ids.end(), [&](const TransferId& id) { return finished_.contains(id); });
    });
    if (!all) return std::nullopt;
    std::vector<Finished> out;
    out.reserve(ids.size());
    for (const auto& id : ids) out.push_back(std::move(finished_.extract(id).mapped()));
    return out;
  }

 private:
  std::mutex mutex_;
  std::condition_variable finished_cv_;
  std::unordered_map<TransferId, Finished> finished_;
};

}  // namespace memd::bench
