// Host backend: `cpu` (system RAM) and host:N stand-in GPUs built on mmap.
//
// Locking: mutex_ guards the handle tables (but segments_ and shareables_,
// which lock themselves) and the committed-byte counters; each reserved range
// has its own mutex so map/unmap syscalls on one range never block work on
// another. Lock order is range mutex, then mutex_; the tables' locks are
// leaves (shareables_ runs one dup under its lock, taking nothing else).
#include "backends/host/host_backend.hpp"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <mutex>
#include <string>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "backends/host/meminfo.hpp"
#include "backends/host/stream_worker.hpp"
#include "backends/handle_lookup.hpp"
#include "backends/memfd_mapping.hpp"
#include "backends/page_run.hpp"
#include "backends/segment_table.hpp"
#include "backends/shareable_table.hpp"
#include "backends/unit_map.hpp"

namespace memd {
namespace {

constexpr std::uint64_t kMinGranularity = 4096;
// Linux x86-64 user space is 47 bits; refusing larger reservations up front
// turns a certain mmap failure (and an overflow in over-reservation) into a
// clear invalid_argument.
constexpr std::uint64_t kMaxReserveBytes = std::uint64_t{1} << 46;

std::string errno_text(int error) { return std::system_category().message(error); }

class HostBackend final : public Backend {
 public:
  explicit HostBackend(const BackendOptions& options);
  ~HostBackend() override;

  std::string_view name() const noexcept override { return "host"; }
  std::vector<DeviceInfo> devices() const override;
  Result<MemoryInfo> memory_info(DeviceId device) override;

  Result<VirtualRange> reserve(DeviceId device, std::uint64_t bytes) override;
  Result<void> release(const VirtualRange& range) override;
  Result<void> map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                   std::uint64_t unit_bytes = 0) override;
  Result<void> unmap(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) override;
  Result<void> remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to,
                     std::uint64_t bytes) override;
  Result<void> map_imported(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                            ShareableKind kind, int fd) override;
  std::uint64_t physical_bytes(DeviceId device) const override;

  Result<Segment> allocate(DeviceId device, MemoryType type, std::uint64_t bytes) override;
  Result<void> free(const Segment& segment) override;

  bool can_access_peer(DeviceId a, DeviceId b) const override;
  Result<ShareableSegment> allocate_shareable(DeviceId device, MemoryType type,
                                              std::uint64_t bytes) override;
  Result<void> free_shareable(const ShareableSegment& shareable) override;
  Result<int> export_fd(const ShareableSegment& shareable) override;

  Result<Stream> create_stream(DeviceId device) override;
  Result<void> destroy_stream(const Stream& stream) override;
  Result<void> copy(void* dst, const void* src, std::uint64_t bytes, const Stream& stream) override;
  Result<void> fill(void* dst, std::uint8_t value, std::uint64_t bytes, const Stream& stream) override;
  Result<Event> record(const Stream& stream) override;
  Result<bool> query(const Event& event) override;
  Result<void> wait(const Event& event) override;
  Result<void> destroy_event(const Event& event) override;
  Result<void> synchronize(const Stream& stream) override;

 private:
  // What a unit is backed by: the range's own anonymous pages, or a memfd
  // another process made (map_imported), mapped MAP_SHARED over them.
  struct HostUnit {
    bool imported = false;
  };
  struct RangeState {
    DeviceId device;
    std::uintptr_t base = 0;
    std::uint64_t size = 0;
    std::mutex mutex;  // serialises map/unmap/release of this range
    // The units map() made: unmap() takes whole units only, as on CUDA.
    UnitMap<HostUnit> units;
  };
  struct StreamState {
    DeviceId device;
    std::shared_ptr<StreamWorker> worker;
  };
  struct EventState {
    DeviceId device;
    std::shared_ptr<StreamWorker> worker;  // keeps completion answerable after destroy_stream
    std::uint64_t sequence;
  };

  bool is_host_device(DeviceId device) const noexcept {
    return device.kind() == DeviceKind::Host && device.index() >= 0 &&
           static_cast<std::size_t>(device.index()) < capacities_.size();
  }
  // host:N's capacity; only for is_host_device(device).
  std::uint64_t capacity(DeviceId device) const noexcept {
    return capacities_[static_cast<std::size_t>(device.index())];
  }
  bool serves(DeviceId device) const noexcept {
    return device.kind() == DeviceKind::Cpu || is_host_device(device);
  }
  std::uint64_t new_handle();
  Result<void> check_vm_device(DeviceId device) const;
  // A segment request's device and size (both kinds of segment).
  Result<void> check_request(DeviceId device, std::uint64_t bytes) const;
  Result<std::shared_ptr<RangeState>> find_range(const VirtualRange& range) const;
  // find_range, then check_page_run of [offset, +bytes): map/unmap's checks.
  Result<std::shared_ptr<RangeState>> find_range_run(const VirtualRange& range,
                                                     std::uint64_t offset,
                                                     std::uint64_t bytes) const;
  Result<EventState> find_event(const Event& event) const;
  Result<std::shared_ptr<StreamWorker>> worker_for(const Stream& stream);
  // Adds bytes to host:N's committed total unless that would pass capacity.
  Result<void> charge(DeviceId device, std::uint64_t bytes);
  void credit(DeviceId device, std::uint64_t bytes);

  const std::vector<std::uint64_t> capacities_;  // host:N holds capacities_[N] bytes
  const std::uint64_t granularity_;

  mutable std::mutex mutex_;
  std::vector<std::uint64_t> committed_;  // per host:N: mapped pages + segments
  std::uint64_t next_handle_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<RangeState>> ranges_;
  SegmentTable segments_;  // cpu segment bytes included
  ShareableTable<MemfdMapping> shareables_;  // cpu bytes included; host:N bytes are in committed_
  std::unordered_map<std::uint64_t, StreamState> streams_;
  std::map<DeviceId, std::shared_ptr<StreamWorker>> default_streams_;
  std::unordered_map<std::uint64_t, EventState> events_;
};

// make_host_backend has no error channel, so options that DeviceCatalog would
// reject are clamped to the nearest sane value instead of trusted.
std::uint64_t sane_granularity(std::uint64_t g) {
  if (g < kMinGranularity) return kMinGranularity;
  if (!is_power_of_two(g)) return std::uint64_t{1} << (64 - __builtin_clzll(g));
  return g;
}

std::vector<std::uint64_t> sane_capacities(const std::vector<std::uint64_t>& sizes) {
  const auto n = std::min(sizes.size(), kMaxHostDevices);
  return {sizes.begin(), sizes.begin() + static_cast<std::ptrdiff_t>(n)};
}

HostBackend::HostBackend(const BackendOptions& options)
    : capacities_(sane_capacities(options.host_device_sizes)),
      granularity_(sane_granularity(options.host_granularity)),
      committed_(capacities_.size(), 0) {}

HostBackend::~HostBackend() {
  // Join every worker before unmapping: queued copies may still target our memory.
  for (auto& [handle, stream] : streams_) stream.worker->stop();
  for (auto& [device, worker] : default_streams_) worker->stop();
  for (auto& [handle, range] : ranges_) ::munmap(reinterpret_cast<void*>(range->base), range->size);
  for (const auto& segment : segments_.take_all()) ::munmap(segment.ptr, segment.size);
  for (const auto& entry : shareables_.take_all()) (void)destroy_memfd_mapping(entry.payload);
}

std::uint64_t HostBackend::new_handle() {
  std::lock_guard lock(mutex_);
  return next_handle_++;
}

std::vector<DeviceInfo> HostBackend::devices() const {
  std::vector<DeviceInfo> out;
  for (std::size_t i = 0; i < capacities_.size(); ++i) {
    const auto capacity = capacities_[i];
    DeviceInfo info;
    info.id = DeviceId::host(static_cast<int>(i));
    info.name = "host-backed device";
    info.backend = "host";
    info.simulated = true;
    info.total_bytes = capacity;
    {
      std::lock_guard lock(mutex_);
      info.free_bytes = capacity - std::min(capacity, committed_[i]);
    }
    info.granularity = granularity_;
    info.virtual_memory = true;
    info.memory_types = {MemoryType::VRAM};
    out.push_back(std::move(info));
  }
  DeviceInfo cpu;
  cpu.id = DeviceId::cpu();
  cpu.name = "system RAM";
  cpu.backend = "host";
  if (auto mem = read_meminfo()) {
    cpu.total_bytes = mem->total_bytes;
    cpu.free_bytes = mem->available_bytes;
  }
  cpu.memory_types = {MemoryType::RAM, MemoryType::SharedMemory, MemoryType::UnifiedMemory};
  out.push_back(std::move(cpu));
  return out;
}

Result<MemoryInfo> HostBackend::memory_info(DeviceId device) {
  if (device.kind() == DeviceKind::Cpu) {
    auto mem = read_meminfo();
    if (!mem) return fail(mem.error());
    return MemoryInfo{mem->total_bytes, mem->available_bytes,
                      mem->total_bytes - mem->available_bytes, true};
  }
  if (!is_host_device(device))
    return fail(ErrorCode::not_found, "the host backend has no device {}", device.to_string());
  const auto total = capacity(device);
  std::lock_guard lock(mutex_);
  const auto used = std::min(total, committed_[static_cast<std::size_t>(device.index())]);
  return MemoryInfo{total, total - used, used, false};
}

Result<void> HostBackend::check_vm_device(DeviceId device) const {
  if (device.kind() == DeviceKind::Cpu)
    return fail(ErrorCode::invalid_argument, "cpu has no virtual memory; use host:N");
  if (!is_host_device(device))
    return fail(ErrorCode::not_found, "the host backend has no device {}", device.to_string());
  return {};
}

Result<void> HostBackend::charge(DeviceId device, std::uint64_t bytes) {
  const auto total = capacity(device);
  std::lock_guard lock(mutex_);
  auto& committed = committed_[static_cast<std::size_t>(device.index())];
  if (bytes > total || committed > total - bytes)
    return fail(ErrorCode::out_of_memory,
                "{} out of memory: {} bytes requested, {} of {} bytes committed, {} free",
                device.to_string(), bytes, committed, total, total - std::min(total, committed));
  committed += bytes;
  return {};
}

void HostBackend::credit(DeviceId device, std::uint64_t bytes) {
  std::lock_guard lock(mutex_);
  auto& committed = committed_[static_cast<std::size_t>(device.index())];
  committed -= std::min(committed, bytes);
}

// --- virtual memory ---------------------------------------------------------

Result<VirtualRange> HostBackend::reserve(DeviceId device, std::uint64_t bytes) {
  if (auto ok = check_vm_device(device); !ok) return fail(ok.error());
  if (bytes == 0 || bytes % granularity_ != 0)
    return fail(ErrorCode::invalid_argument,
                "reservation of {} bytes is not a non-zero multiple of the granularity {}", bytes,
                granularity_);
  if (bytes > kMaxReserveBytes)
    return fail(ErrorCode::invalid_argument, "reservation of {} bytes exceeds the {} byte limit",
                bytes, kMaxReserveBytes);
  // Over-reserve by one granule so an aligned base exists, then give back the
  // slack on both sides: mmap only promises page alignment.
  const std::uint64_t length = bytes + granularity_;
  void* raw = ::mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    const int error = errno;
    return fail(error == ENOMEM ? ErrorCode::out_of_memory : ErrorCode::backend_error,
                "mmap of {} bytes of address space failed: {}", length, errno_text(error));
  }
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const auto base = static_cast<std::uintptr_t>(round_up(start, granularity_));
  if (base > start) ::munmap(raw, base - start);
  const auto tail = start + length - (base + bytes);
  if (tail > 0) ::munmap(reinterpret_cast<void*>(base + bytes), tail);

  auto state = std::make_shared<RangeState>();
  state->device = device;
  state->base = base;
  state->size = bytes;
  std::lock_guard lock(mutex_);
  const auto handle = next_handle_++;
  ranges_.emplace(handle, std::move(state));
  return VirtualRange{device, base, bytes, handle};
}

Result<std::shared_ptr<HostBackend::RangeState>> HostBackend::find_range(
    const VirtualRange& range) const {
  std::lock_guard lock(mutex_);
  auto it = find_range_in(ranges_, range);
  if (!it) return fail(it.error());
  return (*it)->second;
}

Result<std::shared_ptr<HostBackend::RangeState>> HostBackend::find_range_run(
    const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes) const {
  auto state = find_range(range);
  if (!state) return fail(state.error());
  if (auto run = check_page_run(range, offset, bytes, granularity_); !run) return fail(run.error());
  return state;
}

Result<void> HostBackend::release(const VirtualRange& range) {
  std::shared_ptr<RangeState> state;
  {
    std::lock_guard lock(mutex_);
    auto it = find_range_in(ranges_, range);
    if (!it) return fail(it.error());
    state = (*it)->second;
    ranges_.erase(*it);
  }
  std::lock_guard range_lock(state->mutex);
  credit(state->device, state->units.mapped_bytes());
  state->units.clear();
  if (::munmap(reinterpret_cast<void*>(state->base), state->size) != 0)
    return fail(ErrorCode::backend_error, "munmap of {} bytes at {:#x} failed: {}", state->size,
                state->base, errno_text(errno));
  return {};
}

Result<void> HostBackend::map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                              std::uint64_t unit_bytes) {
  auto state = find_range_run(range, offset, bytes);
  if (!state) return fail(state.error());
  auto& r = **state;
  if (auto ok = check_unit_size(unit_bytes, granularity_); !ok) return fail(ok.error());
  std::lock_guard range_lock(r.mutex);
  if (auto free = r.units.check_unmapped(offset, bytes, r.base); !free) return fail(free.error());
  if (auto ok = charge(r.device, bytes); !ok) return fail(ok.error());
  if (::mprotect(reinterpret_cast<void*>(r.base + offset), bytes, PROT_READ | PROT_WRITE) != 0) {
    const int error = errno;
    credit(r.device, bytes);
    return fail(error == ENOMEM ? ErrorCode::out_of_memory : ErrorCode::backend_error,
                "mprotect(read/write) of {} bytes at {:#x} failed: {}", bytes, r.base + offset,
                errno_text(error));
  }
  // One mprotect for the run; the units are bookkeeping, kept exactly as CUDA
  // would have them so unmap() refuses the same runs.
  for_each_map_unit(bytes, unit_bytes, [&](std::uint64_t at, std::uint64_t n) { r.units.insert(offset + at, n, HostUnit{}); });
  return {};
}

Result<void> HostBackend::unmap(const VirtualRange& range, std::uint64_t offset,
                                std::uint64_t bytes) {
  auto state = find_range_run(range, offset, bytes);
  if (!state) return fail(state.error());
  auto& r = **state;
  std::lock_guard range_lock(r.mutex);
  // Whole units only, exactly: CUDA cannot unmap part of a cuMemMap, and the
  // host backend refuses the same requests so CPU tests catch such bugs.
  auto tiles = r.units.tiling(offset, bytes, r.base);
  if (!tiles) return fail(tiles.error());
  if (std::ranges::any_of(*tiles, [](const auto& t) { return t.second.payload.imported; })) {
    // An imported unit is another process's memfd: the reservation goes back
    // over it (MAP_FIXED replaces the shared mapping atomically); our own
    // pages are dropped as below, unit by unit.
    for (const auto& [unit_offset, unit] : *tiles) {
      void* u = reinterpret_cast<void*>(r.base + unit_offset);
      const bool ok = unit.payload.imported
                          ? ::mmap(u, unit.bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                                   -1, 0) != MAP_FAILED
                          : ::madvise(u, unit.bytes, MADV_DONTNEED) == 0 && ::mprotect(u, unit.bytes, PROT_NONE) == 0;
      if (!ok)
        return fail(ErrorCode::backend_error, "unmapping {} bytes at {:#x} failed: {}", unit.bytes,
                    r.base + unit_offset, errno_text(errno));
      r.units.erase(unit_offset, unit.bytes);
      credit(r.device, unit.bytes);
    }
    return {};
  }
  // The units are adjacent, so one madvise and one mprotect cover them all.
  void* at = reinterpret_cast<void*>(r.base + offset);
  // DONTNEED returns the frames to the kernel now (the footprint drops) and
  // guarantees zero pages if the run is mapped again, like fresh cuMemCreate.
  if (::madvise(at, bytes, MADV_DONTNEED) != 0)
    return fail(ErrorCode::backend_error, "madvise(DONTNEED) of {} bytes at {:#x} failed: {}",
                bytes, r.base + offset, errno_text(errno));
  if (::mprotect(at, bytes, PROT_NONE) != 0)
    return fail(ErrorCode::backend_error, "mprotect(none) of {} bytes at {:#x} failed: {}", bytes,
                r.base + offset, errno_text(errno));
  r.units.erase(offset, bytes);
  credit(r.device, bytes);
  return {};
}

Result<void> HostBackend::map_imported(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                                       ShareableKind kind, int fd) {
  if (kind != ShareableKind::Memfd)
    return fail(ErrorCode::invalid_argument, "the host backend maps memfd descriptors, not {}", to_string(kind));
  if (fd < 0) return fail(ErrorCode::invalid_argument, "descriptor {} is not open", fd);
  auto state = find_range_run(range, offset, bytes);
  if (!state) return fail(state.error());
  auto& r = **state;
  std::lock_guard range_lock(r.mutex);
  if (auto free = r.units.check_unmapped(offset, bytes, r.base); !free) return fail(free.error());
  // The descriptor must really cover the run: a shorter file would fault on
  // the first touch past its end (SIGBUS), not here.
  struct stat st{};
  if (::fstat(fd, &st) != 0)
    return fail(ErrorCode::invalid_argument, "descriptor {}: fstat failed: {}", fd, errno_text(errno));
  if (static_cast<std::uint64_t>(st.st_size) < bytes)
    return fail(ErrorCode::invalid_argument, "descriptor {} holds {} bytes, the unit needs {}", fd, st.st_size, bytes);
  if (auto ok = charge(r.device, bytes); !ok) return fail(ok.error());
  void* at = reinterpret_cast<void*>(r.base + offset);
  if (::mmap(at, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
    const int error = errno;
    credit(r.device, bytes);
    return fail(error == ENOMEM ? ErrorCode::out_of_memory : ErrorCode::backend_error,
                "mmap of descriptor {} ({} bytes) at {:#x} failed: {}", fd, bytes, r.base + offset, errno_text(error));
  }
  r.units.insert(offset, bytes, HostUnit{.imported = true});
  return {};
}

// Moves pages with mremap(MREMAP_FIXED | MREMAP_DONTUNMAP): the frames go
// to the new address (which replaces our PROT_NONE reservation there) and
// the old address stays a mapping of ours, now empty, which mprotect turns
// back into reservation. Plain MREMAP_FIXED would unmap the old address and
// leave a hole in the reserved range that another thread's mmap could take
// before we re-reserved it. Pages of one unit may lie in several kernel
// mappings (VMAs: earlier remaps leave seams), and mremap moves one VMA at a
// time (EFAULT otherwise), so a unit that fails whole goes page by page;
// every seam we make is at a page boundary. The units' book moves with the
// pages, so unmap() still takes exactly the units map() made.
Result<void> HostBackend::remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to,
                                std::uint64_t bytes) {
  auto state = find_range_run(range, from, bytes);
  if (!state) return fail(state.error());
  if (auto run = check_page_run(range, to, bytes, granularity_); !run) return fail(run.error());
  auto& r = **state;
  std::lock_guard range_lock(r.mutex);
  auto tiles = r.units.tiling(from, bytes, r.base);
  if (!tiles) return fail(tiles.error());
  if (std::ranges::any_of(*tiles, [](const auto& t) { return t.second.payload.imported; }))
    return fail(ErrorCode::unavailable, "[{}, +{}) of range {:#x} holds imported memory, which does not move",
                from, bytes, r.base);
  if (auto free = r.units.check_unmapped(to, bytes, r.base); !free) return fail(free.error());
  auto move = [&](std::uint64_t src, std::uint64_t dst, std::uint64_t n) -> int {
    void* old_at = reinterpret_cast<void*>(r.base + src);
    void* new_at = reinterpret_cast<void*>(r.base + dst);
    void* got = ::mremap(old_at, n, n, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, new_at);
    if (got == MAP_FAILED) return errno;
    (void)::mprotect(old_at, n, PROT_NONE);
    return 0;
  };
  // Moved pieces (source offset, bytes), undone in reverse if a later one fails.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> moved;
  int error = 0;
  for (std::uint64_t at = 0; at < bytes && error == 0;) {
    const std::uint64_t unit = std::min(bytes - at, [&] {
      for (const auto& [off, u] : *tiles)
        if (off == from + at) return u.bytes;
      return granularity_;
    }());
    if (int e = move(from + at, to + at, unit); e == 0) {
      moved.emplace_back(at, unit);
      at += unit;
      continue;
    } else if (e != EFAULT) {
      error = e;
      break;
    }
    for (std::uint64_t page = 0; page < unit; page += granularity_) {
      if (int e = move(from + at + page, to + at + page, granularity_); e != 0) {
        error = e;
        break;
      }
      moved.emplace_back(at + page, granularity_);
    }
    at += unit;
  }
  if (error != 0) {
    for (auto it = moved.rbegin(); it != moved.rend(); ++it) (void)move(to + it->first, from + it->first, it->second);
    return fail(error == ENOMEM ? ErrorCode::out_of_memory : ErrorCode::backend_error,
                "mremap of {} bytes from {:#x} to {:#x} failed: {}", bytes, r.base + from, r.base + to,
                errno_text(error));
  }
  r.units.erase(from, bytes);
  for (const auto& [off, u] : *tiles) r.units.insert(to + (off - from), u.bytes, u.payload);
  return {};
}

std::uint64_t HostBackend::physical_bytes(DeviceId device) const {
  if (device.kind() == DeviceKind::Cpu) return segments_.cpu_bytes() + shareables_.cpu_bytes();
  std::lock_guard lock(mutex_);
  if (!is_host_device(device)) return 0;
  return committed_[static_cast<std::size_t>(device.index())];
}

// --- segments ---------------------------------------------------------------

Result<void> HostBackend::check_request(DeviceId device, std::uint64_t bytes) const {
  if (!serves(device))
    return fail(ErrorCode::not_found, "the host backend has no device {}", device.to_string());
  if (bytes == 0) return fail(ErrorCode::invalid_argument, "cannot allocate 0 bytes");
  if (bytes > kMaxRequestBytes)
    return fail(ErrorCode::invalid_argument, "{} bytes exceeds the largest request", bytes);
  return {};
}

Result<Segment> HostBackend::allocate(DeviceId device, MemoryType type, std::uint64_t bytes) {
  if (auto ok = check_request(device, bytes); !ok) return fail(ok.error());
  const bool host_device = device.kind() == DeviceKind::Host;
  const bool type_ok = host_device ? type == MemoryType::VRAM
                                   : (type == MemoryType::RAM || type == MemoryType::SharedMemory ||
                                      type == MemoryType::UnifiedMemory);
  if (!type_ok)
    return fail(ErrorCode::invalid_argument, "device {} does not provide {} memory",
                device.to_string(), to_string(type));
  if (host_device)
    if (auto ok = charge(device, bytes); !ok) return fail(ok.error());

  // SharedMemory is MAP_SHARED so it can later be handed to another process
  // (through a memfd-style export); everything else is private anonymous.
  const int flags = type == MemoryType::SharedMemory ? MAP_SHARED | MAP_ANONYMOUS
                                                     : MAP_PRIVATE | MAP_ANONYMOUS;
  void* ptr = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (ptr == MAP_FAILED) {
    const int error = errno;
    if (host_device) credit(device, bytes);
    return fail(error == ENOMEM ? ErrorCode::out_of_memory : ErrorCode::backend_error,
                "mmap of {} bytes of {} memory on {} failed: {}", bytes, to_string(type),
                device.to_string(), errno_text(error));
  }
  // Pinning is what SharedMemory means on a GPU box; without the privilege
  // (RLIMIT_MEMLOCK) the memory is still correct, only pageable.
  if (type == MemoryType::SharedMemory) (void)::mlock(ptr, bytes);

  const Segment segment{device, type, ptr, bytes, new_handle()};
  segments_.add(segment);
  return segment;
}

Result<void> HostBackend::free(const Segment& segment) {
  auto found = segments_.remove(segment);
  if (!found) return fail(found.error());
  const Segment& state = *found;
  if (state.device.kind() == DeviceKind::Host) credit(state.device, state.size);
  if (::munmap(state.ptr, state.size) != 0)
    return fail(ErrorCode::backend_error, "munmap of segment {} failed: {}", state.ptr,
                errno_text(errno));
  return {};
}

// --- peers and shareable segments -------------------------------------------

// Every host:N lives in this process's one address space: any of them reaches
// any other with a plain memcpy.
bool HostBackend::can_access_peer(DeviceId a, DeviceId b) const {
  return a != b && is_host_device(a) && is_host_device(b);
}

Result<ShareableSegment> HostBackend::allocate_shareable(DeviceId device, MemoryType type,
                                                         std::uint64_t bytes) {
  if (auto ok = check_request(device, bytes); !ok) return fail(ok.error());
  const bool host_device = device.kind() == DeviceKind::Host;
  // UnifiedMemory is CUDA managed memory on a GPU box: it cannot be exported.
  const bool type_ok = host_device ? type == MemoryType::VRAM
                                   : (type == MemoryType::RAM || type == MemoryType::SharedMemory);
  if (!type_ok)
    return fail(ErrorCode::invalid_argument, "device {} cannot share {} memory",
                device.to_string(), to_string(type));
  // Whole pages: the descriptor exports the whole file, so the file is
  // exactly what is charged and reported.
  const auto size = round_up(bytes, host_page_size());
  if (host_device)
    if (auto ok = charge(device, size); !ok) return fail(ok.error());
  auto mapping = create_memfd_mapping(size, "memd-shareable");
  if (!mapping) {
    if (host_device) credit(device, size);
    return fail(mapping.error().code, "{} memory on {}: {}", to_string(type), device.to_string(),
                mapping.error().message);
  }
  // As for allocate(): pinned where RLIMIT_MEMLOCK allows, correct either way.
  if (type == MemoryType::SharedMemory) (void)::mlock(mapping->ptr, mapping->size);
  const ShareableSegment shareable{Segment{device, type, mapping->ptr, mapping->size, new_handle()},
                                   ShareableKind::Memfd};
  shareables_.add(shareable, *mapping);
  return shareable;
}

Result<void> HostBackend::free_shareable(const ShareableSegment& shareable) {
  auto found = shareables_.remove(shareable);
  if (!found) return fail(found.error());
  const Segment& state = found->shareable.segment;
  if (state.device.kind() == DeviceKind::Host) credit(state.device, state.size);
  return destroy_memfd_mapping(found->payload);
}

Result<int> HostBackend::export_fd(const ShareableSegment& shareable) {
  return shareables_.with(shareable, [](const auto& entry) { return duplicate_memfd(entry.payload.fd); });
}

// --- streams and events -----------------------------------------------------

Result<Stream> HostBackend::create_stream(DeviceId device) {
  if (!serves(device))
    return fail(ErrorCode::not_found, "the host backend has no device {}", device.to_string());
  auto worker = std::make_shared<StreamWorker>();
  std::lock_guard lock(mutex_);
  const auto handle = next_handle_++;
  streams_.emplace(handle, StreamState{device, std::move(worker)});
  return Stream{device, handle};
}

Result<void> HostBackend::destroy_stream(const Stream& stream) {
  if (stream.handle == 0)
    return fail(ErrorCode::invalid_argument, "the default stream of {} cannot be destroyed",
                stream.device.to_string());
  std::shared_ptr<StreamWorker> worker;
  {
    std::lock_guard lock(mutex_);
    auto it = find_stream_in(streams_, stream);
    if (!it) return fail(it.error());
    worker = (*it)->second.worker;
    streams_.erase(*it);
  }
  worker->stop();  // drains, then joins: nothing queued is dropped
  return {};
}

Result<std::shared_ptr<StreamWorker>> HostBackend::worker_for(const Stream& stream) {
  if (!serves(stream.device))
    return fail(ErrorCode::not_found, "the host backend has no device {}",
                stream.device.to_string());
  std::lock_guard lock(mutex_);
  if (stream.handle == 0) {
    auto& worker = default_streams_[stream.device];
    if (!worker) worker = std::make_shared<StreamWorker>();
    return worker;
  }
  auto it = find_stream_in(streams_, stream);
  if (!it) return fail(it.error());
  return (*it)->second.worker;
}

Result<void> HostBackend::copy(void* dst, const void* src, std::uint64_t bytes,
                               const Stream& stream) {
  auto worker = worker_for(stream);
  if (!worker) return fail(worker.error());
  if (bytes == 0) return {};
  if (dst == nullptr || src == nullptr)
    return fail(ErrorCode::invalid_argument, "copy of {} bytes with a null pointer", bytes);
  (*worker)->enqueue_copy(dst, src, bytes);
  return {};
}

Result<void> HostBackend::fill(void* dst, std::uint8_t value, std::uint64_t bytes,
                               const Stream& stream) {
  auto worker = worker_for(stream);
  if (!worker) return fail(worker.error());
  if (bytes == 0) return {};
  if (dst == nullptr)
    return fail(ErrorCode::invalid_argument, "fill of {} bytes at a null pointer", bytes);
  (*worker)->enqueue_fill(dst, value, bytes);
  return {};
}

Result<Event> HostBackend::record(const Stream& stream) {
  auto worker = worker_for(stream);
  if (!worker) return fail(worker.error());
  const auto sequence = (*worker)->last_enqueued();
  std::lock_guard lock(mutex_);
  const auto handle = next_handle_++;
  events_.emplace(handle, EventState{stream.device, std::move(*worker), sequence});
  return Event{stream.device, handle};
}

Result<HostBackend::EventState> HostBackend::find_event(const Event& event) const {
  std::lock_guard lock(mutex_);
  auto it = find_event_in(events_, event);
  if (!it) return fail(it.error());
  return (*it)->second;
}

Result<bool> HostBackend::query(const Event& event) {
  auto state = find_event(event);
  if (!state) return fail(state.error());
  return state->worker->is_complete(state->sequence);
}

Result<void> HostBackend::wait(const Event& event) {
  auto state = find_event(event);
  if (!state) return fail(state.error());
  state->worker->wait_for(state->sequence);
  return {};
}

Result<void> HostBackend::destroy_event(const Event& event) {
  std::lock_guard lock(mutex_);
  auto it = find_event_in(events_, event);
  if (!it) return fail(it.error());
  events_.erase(*it);
  return {};
}

Result<void> HostBackend::synchronize(const Stream& stream) {
  auto worker = worker_for(stream);
  if (!worker) return fail(worker.error());
  (*worker)->drain();
  return {};
}

}  // namespace

std::unique_ptr<Backend> make_host_backend(const BackendOptions& options) {
  return std::make_unique<HostBackend>(options);
}

}  // namespace memd
