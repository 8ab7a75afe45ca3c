// DevicePool's sleep and wake: a pool's device memory given back while its
// addresses and blocks stay, and brought back at the same addresses with
// its contents checked; see device_pool.hpp ("sleep and wake").
//
// Why it works on any backend: it uses only map/unmap of whole units, copy,
// synchronize and a pinned host segment, so host devices in CI, CUDA, and
// a backend that leases memory all run the same code. The page map is not
// told: it keeps calling the units mapped, so the arena's bookkeeping (free
// lists, units, counts) is exactly what it was, and wake maps each unit again
// with its old offset and size, after which whole-unit unmaps work as before.
// What keeps the unmapped units safe meanwhile is the asleep flag (no
// allocation, no defragmentation) and the frozen footprint (no release).
#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>
#include <cstring>
#include <utility>

#include "alloc/device_pool.hpp"
#include "alloc/virtual_arena.hpp"
#include "core/content_hash.hpp"

namespace memd {

namespace {

// Hashes of the host copy of every unit, on several threads: one core
// hashes a few GB/s, so a 640 MiB region's check alone took ~90 ms of its
// wake on one (an H100 run, session 13). Units are independent; each thread
// takes every n-th unit. f(i) hashes unit i.
template <typename F>
void for_each_unit_parallel(std::size_t units, std::uint64_t bytes, F&& f) {
  constexpr std::uint64_t kBytesPerThread = 64ull << 20;  // below this, threads cost more than they save
  const std::size_t cores = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t threads =
      std::min<std::size_t>({cores, units, static_cast<std::size_t>(bytes / kBytesPerThread) + 1, 16});
  if (threads <= 1) {
    for (std::size_t i = 0; i < units; ++i) f(i);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (std::size_t t = 1; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i = t; i < units; i += threads) f(i);
    });
  for (std::size_t i = 0; i < units; i += threads) f(i);
  for (auto& th : pool) th.join();
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void* unit_address(const VirtualRange& range, std::uint64_t offset) {
  return reinterpret_cast<void*>(range.base + offset);
}

}  // namespace

std::string DevicePool::describe() const {
  if (opt_.region.empty()) return fmt::format("the pool of {}", opt_.device.to_string());
  return fmt::format("region '{}' of {}", opt_.region, opt_.device.to_string());
}

Error DevicePool::asleep_error() const {
  return Error{ErrorCode::unavailable, fmt::format("{} is asleep", describe())};
}

Result<void> DevicePool::restore_units(SleepState& state, std::size_t n) {
  const Stream copy_stream{opt_.device, 0};
  auto unmap_first = [&](std::size_t count) {
    for (std::size_t j = 0; j < count; ++j)
      (void)backend_.unmap(state.units[j].range, state.units[j].offset, state.units[j].bytes);
  };
  for (std::size_t i = 0; i < n; ++i) {
    const SleptUnit& u = state.units[i];
    // unit_bytes 0: the unit is mapped as ONE unit of its old size.
    if (auto mapped = backend_.map(u.range, u.offset, u.bytes, 0); !mapped) {
      unmap_first(i);
      Error e = mapped.error();
      e.message = fmt::format("waking {}: mapping unit {} ({} at {:#x}): {}", describe(), i, format_size(u.bytes),
                              u.range.base + u.offset, e.message);
      return fail(std::move(e));
    }
  }
  if (state.host.ptr != nullptr) {
    auto* host = static_cast<unsigned char*>(state.host.ptr);
    Result<void> copied;
    for (std::size_t i = 0; i < n && copied; ++i) {
      const SleptUnit& u = state.units[i];
      copied = backend_.copy(unit_address(u.range, u.offset), host + u.host_offset, u.bytes, copy_stream);
    }
    if (copied) copied = backend_.synchronize(copy_stream);
    if (!copied) {
      unmap_first(n);
      Error e = copied.error();
      e.message = fmt::format("waking {}: copying the contents back: {}", describe(), e.message);
      return fail(std::move(e));
    }
  }
  std::lock_guard lock(mu_);
  counters_.device_calls += n;
  return {};
}

Result<SleepReport> DevicePool::sleep(bool keep_contents) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt_.mode != PoolMode::Virtual)
    return fail(ErrorCode::unavailable, "{} holds whole segments: only a virtual-memory pool can sleep",
                describe());
  std::lock_guard sleeping(sleep_mu_);
  if (asleep_.load(std::memory_order_acquire)) return fail(ErrorCode::conflict, "{} is asleep already", describe());
  // Refuses allocations from here on (each path checks it, under the pool
  // lock or before a cache hit), then takes the caches back.
  asleep_.store(true, std::memory_order_release);
  drain_caches();
  SleepState state;
  state.kept = keep_contents;
  {
    std::lock_guard lock(mu_);
    arena_->flush_kept();
    if (streams_.any()) streams_.drain(/*wait=*/true);
    // Cached huge ranges hold nothing anyone uses: they go, not to the host.
    (void)huge_.release_cache(~std::uint64_t{0} / 2);
    footprint_.set_frozen(true);
    const auto& arena = static_cast<const VirtualArena&>(*arena_);
    std::vector<DefragRange> units;
    arena.units(units);
    for (const auto& u : units) state.units.push_back({arena.range(), u.offset - arena.range().base, u.size, 0, 0});
    huge_.for_each_live_range(
        [&](const VirtualRange& r, std::uint64_t bytes) { state.units.push_back({r, 0, bytes, 0, 0}); });
  }
  for (auto& u : state.units) {
    u.host_offset = state.bytes;
    state.bytes += u.bytes;
  }
  auto stay_awake = [&] {
    if (state.host.ptr != nullptr) (void)backend_.free(state.host);
    std::lock_guard lock(mu_);
    footprint_.set_frozen(false);
    asleep_.store(false, std::memory_order_release);
  };
  const Stream copy_stream{opt_.device, 0};
  if (keep_contents && state.bytes != 0) {
    auto host = backend_.allocate(DeviceId::cpu(), MemoryType::SharedMemory, state.bytes);
    if (!host) {
      stay_awake();
      Error e = host.error();
      e.message = fmt::format("{} cannot sleep: pinned host memory for its {}: {}", describe(),
                              format_size(state.bytes), e.message);
      return fail(std::move(e));
    }
    state.host = *host;
    auto* dst = static_cast<unsigned char*>(state.host.ptr);
    Result<void> copied;
    for (std::size_t i = 0; i < state.units.size() && copied; ++i) {
      const SleptUnit& u = state.units[i];
      copied = backend_.copy(dst + u.host_offset, unit_address(u.range, u.offset), u.bytes, copy_stream);
    }
    if (copied) copied = backend_.synchronize(copy_stream);
    if (!copied) {
      stay_awake();
      Error e = copied.error();
      e.message = fmt::format("{} cannot sleep: copying its contents out: {}", describe(), e.message);
      return fail(std::move(e));
    }
    for_each_unit_parallel(state.units.size(), state.bytes, [&](std::size_t i) {
      auto& u = state.units[i];
      u.hash = content_hash(dst + u.host_offset, u.bytes);
    });
  } else if (auto synced = backend_.synchronize(copy_stream); !synced) {
    stay_awake();
    return fail(synced.error());
  }
  for (std::size_t i = 0; i < state.units.size(); ++i) {
    const SleptUnit& u = state.units[i];
    if (auto unmapped = backend_.unmap(u.range, u.offset, u.bytes); !unmapped) {
      // Back to how it was: the units already unmapped come back (with their
      // contents where they were kept).
      auto restored = restore_units(state, i);
      stay_awake();
      Error e = unmapped.error();
      e.message = fmt::format("{} cannot sleep: unmapping unit {} ({} at {:#x}): {}{}", describe(), i,
                              format_size(u.bytes), u.range.base + u.offset, e.message,
                              restored ? "" : fmt::format("; restoring the units before it failed too: {}",
                                                          restored.error().message));
      return fail(std::move(e));
    }
  }
  SleepReport report;
  report.bytes = state.bytes;
  report.units = state.units.size();
  report.kept_contents = keep_contents;
  {
    std::lock_guard lock(mu_);
    counters_.device_calls += state.units.size();
  }
  sleep_ = std::move(state);
  asleep_bytes_.store(report.bytes, std::memory_order_release);
  report.seconds = seconds_since(t0);
  return report;
}

Result<WakeReport> DevicePool::wake() {
  const auto t0 = std::chrono::steady_clock::now();
  std::lock_guard sleeping(sleep_mu_);
  if (!asleep_.load(std::memory_order_acquire)) return fail(ErrorCode::conflict, "{} is awake", describe());
  // Every unit is checked before anything is mapped or copied: a bad copy
  // must not reach the device, and the pool must stay as it was (asleep,
  // the copy kept for whoever looks into it).
  if (sleep_.host.ptr != nullptr) {
    const auto* host = static_cast<const unsigned char*>(sleep_.host.ptr);
    std::vector<char> bad(sleep_.units.size(), 0);
    for_each_unit_parallel(sleep_.units.size(), sleep_.bytes, [&](std::size_t i) {
      const SleptUnit& u = sleep_.units[i];
      bad[i] = content_hash(host + u.host_offset, u.bytes) != u.hash;
    });
    for (std::size_t i = 0; i < sleep_.units.size(); ++i) {
      const SleptUnit& u = sleep_.units[i];
      if (bad[i])
        return fail(ErrorCode::internal,
                    "waking {}: the host copy of unit {} ({} at {:#x}) does not match the checksum taken at "
                    "sleep; it stays asleep",
                    describe(), i, format_size(u.bytes), u.range.base + u.offset);
    }
  }
  if (auto restored = restore_units(sleep_, sleep_.units.size()); !restored) return fail(restored.error());
  WakeReport report;
  report.bytes = sleep_.bytes;
  report.units = sleep_.units.size();
  report.kept_contents = sleep_.kept;
  if (sleep_.host.ptr != nullptr) (void)backend_.free(sleep_.host);
  sleep_ = SleepState{};
  {
    std::lock_guard lock(mu_);
    footprint_.set_frozen(false);
    asleep_bytes_.store(0, std::memory_order_release);
    asleep_.store(false, std::memory_order_release);
  }
  report.seconds = seconds_since(t0);
  return report;
}

bool DevicePool::corrupt_host_copy_for_testing(std::uint64_t byte) {
  std::lock_guard sleeping(sleep_mu_);
  if (sleep_.host.ptr == nullptr || sleep_.bytes == 0) return false;
  static_cast<unsigned char*>(sleep_.host.ptr)[byte % sleep_.bytes] ^= 0xFF;
  return true;
}

}  // namespace memd
