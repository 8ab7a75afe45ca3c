// backends/backend.hpp — the one interface between memd and a memory provider.
//
// A Backend owns devices of one family (CUDA GPUs, or host RAM and host-backed
// stand-in devices) and offers exactly what the allocator above needs:
//   * virtual memory: reserve an address range, map/unmap physical memory in it
//     in units of whole granules (CUDA VMM; PROT_NONE mmap + commit on host);
//   * whole segments: cudaMalloc / pinned memfd / cudaMallocManaged / mmap;
//   * shareable segments: memory of its own that another process can map,
//     exported as a file descriptor (a memfd, or a CUDA POSIX-fd handle);
//   * peer access: whether one device reaches another's memory directly;
//   * streams, events, async copy and fill, with completion you can wait on;
//   * memory info as the driver or OS sees it (other processes included where
//     the backend can see them).
// Backends never call into managers; managers never call CUDA directly.
//
// Thread safety: every method may be called from any thread concurrently.
// Handles (ranges, segments, streams, events) must not be used after release.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <memory>
#include <string_view>
#include <vector>

#include "memd/device.hpp"
#include "memd/error.hpp"
#include "memd/memory_types.hpp"

namespace memd {

// As the driver/OS sees the device: not memd's own accounting.
struct MemoryInfo {
  std::uint64_t total_bytes = 0;
  std::uint64_t free_bytes = 0;
  std::uint64_t used_bytes = 0;          // total - free: every process's use
  bool sees_other_processes = false;     // true when used_bytes includes others
};

// ECC error counts and retired or remapped memory, as NVML reports them.
// Volatile counts are since the driver last loaded.
struct DeviceHealthInfo {
  std::optional<std::uint64_t> ecc_corrected;    // volatile, single-bit
  std::optional<std::uint64_t> ecc_uncorrected;  // volatile, double-bit
  std::optional<std::uint64_t> retired_pages;    // page retirement (before Ampere), both causes
  std::optional<bool> retired_pages_pending;     // retirement waiting for a reset
  std::optional<std::uint64_t> remapped_rows_correctable;    // row remapping (Ampere and later)
  std::optional<std::uint64_t> remapped_rows_uncorrectable;
  std::optional<bool> remapping_pending;         // a remap waits for a reset
  std::optional<bool> remapping_failed;          // a row could not be remapped
};

// Opaque stream; handle 0 is the backend's default stream of that device.
struct Stream {
  DeviceId device;
  std::uint64_t handle = 0;
  friend bool operator==(const Stream&, const Stream&) = default;
};

// Opaque event recorded on a stream; completes when all work before it has.
struct Event {
  DeviceId device;
  std::uint64_t handle = 0;
  friend bool operator==(const Event&, const Event&) = default;
};

// A reserved address range. Nothing is accessible until mapped.
struct VirtualRange {
  DeviceId device;
  std::uintptr_t base = 0;
  std::uint64_t size = 0;
  std::uint64_t handle = 0;  // backend-private bookkeeping
};

// A whole segment of one memory type, usable immediately.
struct Segment {
  DeviceId device;
  MemoryType type = MemoryType::Unknown;
  void* ptr = nullptr;
  std::uint64_t size = 0;
  std::uint64_t handle = 0;  // backend-private bookkeeping
};

// What the file descriptor of a shareable segment is, so the receiving
// process knows how to map it: Memfd with mmap(MAP_SHARED) at offset 0;
// CudaPosixFd with cuMemImportFromShareableHandle, then cuMemMap and
// cuMemSetAccess of the segment's size.
enum class ShareableKind : std::uint8_t { Memfd, CudaPosixFd };

// "memfd" or "cuda-posix-fd".
constexpr std::string_view to_string(ShareableKind kind) noexcept {
  return kind == ShareableKind::Memfd ? "memfd" : "cuda-posix-fd";
}

// A segment that no other allocation shares, which another process can map.
struct ShareableSegment {
  // device, type, ptr (mapped read/write in memd) and size: the bytes asked
  // for rounded up to the device granularity (the page size on host memory),
  // which is what the exported descriptor covers. handle is backend-private.
  Segment segment;
  ShareableKind kind = ShareableKind::Memfd;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string_view name() const noexcept = 0;  // "host" or "cuda"
  // Devices this backend serves; empty when none (e.g. no CUDA driver).
  virtual std::vector<DeviceInfo> devices() const = 0;
  virtual Result<MemoryInfo> memory_info(DeviceId device) = 0;
  // The memory's hardware health where the device reports it (NVML on
  // GPUs); every field absent where it does not (host devices, no NVML, a
  // GPU without ECC). Default: nothing known.
  virtual DeviceHealthInfo health_info(DeviceId) { return {}; }

  // --- virtual memory (only where DeviceInfo::virtual_memory) ---------------
  // bytes must be a multiple of the device granularity.
  // --- peers ----------------------------------------------------------------
  // True when device `a` can reach memory of device `b` directly (loads,
  // stores, copies without staging through host memory); both must be
  // devices of this backend and a != b. Default: false (no peers).
  virtual bool can_access_peer(DeviceId a, DeviceId b) const {
    (void)a;
    (void)b;
    return false;
  }

  virtual Result<VirtualRange> reserve(DeviceId device, std::uint64_t bytes) = 0;
  // Unmaps every unit still mapped, then frees the address range.
  virtual Result<void> release(const VirtualRange& range) = 0;
  // Mapping works in units. For both calls offset and bytes must be non-zero
  // multiples of the granularity inside the range (else invalid_argument).
  //
  // map() maps exactly [offset, offset + bytes) as consecutive units of
  // unit_bytes (a multiple of the granularity; the last may be shorter; 0:
  // the whole run is ONE unit), all or nothing. On CUDA each unit is one
  // cuMemCreate and one cuMemMap, and one cuMemSetAccess covers the run: the
  // cost is per unit (~44 µs each mapped alone on an H200, ~31 µs each in a
  // run; bench/vmm_calls.cpp), so large units are cheap and page-by-page
  // mapping is not. Any page of the run already mapped is
  // ErrorCode::conflict; physical memory running out is out_of_memory; either
  // way nothing changes.
  //
  // unmap() must cover exactly a union of whole units: one, or several
  // adjacent ones mapped by earlier map() calls. A run that cuts through a
  // unit or covers an unmapped page is ErrorCode::conflict and changes
  // nothing. The host backend enforces the same units as CUDA, so CPU tests
  // catch callers that would break on a GPU. Pages mapped again read as zero
  // on host; on CUDA a reused cached handle keeps its old bytes.
  virtual Result<void> map(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                           std::uint64_t unit_bytes = 0) = 0;
  // The units such a map() makes, in order: f(offset within the run, bytes).
  template <typename F>
  static void for_each_map_unit(std::uint64_t bytes, std::uint64_t unit_bytes, F&& f) {
    const std::uint64_t step = unit_bytes == 0 ? bytes : unit_bytes;
    for (std::uint64_t at = 0; at < bytes; at += step) f(at, std::min(step, bytes - at));
  }
  virtual Result<void> unmap(const VirtualRange& range, std::uint64_t offset,
                             std::uint64_t bytes) = 0;
  // Moves the physical memory of the whole units that tile [from, from +
  // bytes) to [to, to + bytes) of the same range, without copying: the units
  // keep their sizes and contents and are mapped at the new place, and
  // [from, from + bytes) is unmapped afterwards. The cost is per unit, not
  // per byte (defragmentation moves blocks that own whole units this way).
  // Both offsets and bytes are whole pages inside the range
  // (invalid_argument); [from, +bytes) must be exactly whole units and
  // [to, +bytes) wholly unmapped (conflict); either way nothing changes.
  // The caller makes sure nothing reads or writes either run meanwhile.
  // Backends that cannot move mappings answer unavailable (the default), and
  // the caller copies instead.
  virtual Result<void> remap(const VirtualRange& range, std::uint64_t from, std::uint64_t to,
                             std::uint64_t bytes) {
    (void)from;
    (void)to;
    (void)bytes;
    return fail(ErrorCode::unavailable, "the {} backend cannot move mappings on {}", name(),
                range.device.to_string());
  }
  // Maps physical memory another process made shareable (a descriptor that
  // process's export_fd gave, of `kind`, covering exactly `bytes`) as ONE
  // unit at [offset, offset + bytes) of the range: what a process leasing
  // memory from memd's daemon maps (backends/lease/lease_backend.hpp). The
  // descriptor stays the caller's (close it after). Same checks and errors
  // as map(); unmap() and release() of the unit drop this process's mapping
  // and handle (never cached for reuse), and the memory lives on in its
  // maker. remap() of an imported unit: unavailable (the caller copies).
  // Backends that cannot import answer unavailable (the default).
  virtual Result<void> map_imported(const VirtualRange& range, std::uint64_t offset, std::uint64_t bytes,
                                    ShareableKind kind, int fd) {
    (void)offset;
    (void)bytes;
    (void)kind;
    (void)fd;
    return fail(ErrorCode::unavailable, "the {} backend cannot map imported memory on {}", name(),
                range.device.to_string());
  }
  // Drops physical memory the backend caches for reuse by later map() calls
  // (CUDA keeps the handles of unmapped units, keyed by size, to avoid
  // cuMemCreate/cuMemRelease on the hot path). Returns the bytes given back.
  virtual std::uint64_t trim() { return 0; }
  // Upper bound on the physical memory unmap() keeps cached on `device` for
  // reuse instead of giving it back (CUDA: the handles of whole units, reused
  // only by a map() of exactly the same size; the oldest are evicted first,
  // and a map() that finds the device out of memory drops the cache and
  // retries once). Default 0: nothing is cached. Lowering it gives back the
  // excess at once. A no-op for backends that cache nothing.
  virtual void set_handle_cache_limit(DeviceId device, std::uint64_t bytes) {
    (void)device;
    (void)bytes;
  }
  // Physical bytes this backend holds on the device for memd (mapped plus
  // cached, plus segments): the "footprint" the allocator is judged on.
  virtual std::uint64_t physical_bytes(DeviceId device) const = 0;

  // --- whole segments -------------------------------------------------------
  virtual Result<Segment> allocate(DeviceId device, MemoryType type, std::uint64_t bytes) = 0;
  virtual Result<void> free(const Segment& segment) = 0;

  // --- shareable segments (memory other processes map) ---------------------
  // Memory of its own that no other allocation shares, so exporting it
  // exposes nothing else (DESIGN.md, "Memory other processes use"):
  //   * host backend: cpu RAM / SharedMemory and host:N VRAM are a memfd
  //     (MFD_CLOEXEC) mmapped MAP_SHARED; host:N bytes are charged to its
  //     capacity like mapped pages (out_of_memory when over); SharedMemory
  //     is mlock'ed where the limit allows;
  //   * CUDA backend: cpu SharedMemory is a memfd mmapped MAP_SHARED and
  //     pinned with cudaHostRegister; cuda:N VRAM is one cuMemCreate of the
  //     POSIX-fd handle type, mapped into an address range of its own with
  //     read/write access for the device.
  // physical_bytes(device) counts shareable segments. Types a device does
  // not offer are invalid_argument; a backend or device that cannot make
  // shareable memory answers unavailable (the default).
  virtual Result<ShareableSegment> allocate_shareable(DeviceId device, MemoryType type,
                                                      std::uint64_t bytes) {
    (void)type;
    (void)bytes;
    return fail(ErrorCode::unavailable, "the {} backend cannot make shareable memory on {}", name(),
                device.to_string());
  }
  // Unmaps and closes everything; a segment already freed (or never made
  // here) is not_found.
  virtual Result<void> free_shareable(const ShareableSegment& shareable) {
    return fail(ErrorCode::unavailable, "the {} backend has no shareable segments ({} on {})",
                name(), shareable.segment.ptr, shareable.segment.device.to_string());
  }
  // A NEW file descriptor for another process, which the caller owns and
  // closes (also after sending it): a dup() of the memfd, or the fd of
  // cuMemExportToShareableHandle. It stays valid after free_shareable():
  // the memory lives on until every descriptor and mapping of it is gone.
  // Unknown or freed segment: not_found.
  virtual Result<int> export_fd(const ShareableSegment& shareable) {
    return fail(ErrorCode::unavailable, "the {} backend has no shareable segments ({} on {})",
                name(), shareable.segment.ptr, shareable.segment.device.to_string());
  }

  // --- streams, events, copies ---------------------------------------------
  virtual Result<Stream> create_stream(DeviceId device) = 0;
  // A stream this process made elsewhere (a CUDA runtime's cudaStream_t,
  // PyTorch's, passed as `native`), usable as any stream of this backend:
  // memd records events on it, orders frees by it. destroy_stream forgets
  // it without destroying it (its maker owns it). Backends without native
  // streams: unavailable.
  virtual Result<Stream> adopt_stream(DeviceId device, void* native) {
    (void)native;
    return fail(ErrorCode::unavailable, "the {} backend has no native streams to adopt ({})", name(),
                device.to_string());
  }
  virtual Result<void> destroy_stream(const Stream& stream) = 0;
  // Enqueue; returns before the copy completes where the backend is async.
  // dst and src may be any memory this backend (or the host) can address.
  virtual Result<void> copy(void* dst, const void* src, std::uint64_t bytes,
                            const Stream& stream) = 0;
  virtual Result<void> fill(void* dst, std::uint8_t value, std::uint64_t bytes,
                            const Stream& stream) = 0;
  virtual Result<Event> record(const Stream& stream) = 0;
  virtual Result<bool> query(const Event& event) = 0;  // true once complete
  virtual Result<void> wait(const Event& event) = 0;   // blocks the calling thread
  virtual Result<void> destroy_event(const Event& event) = 0;
  virtual Result<void> synchronize(const Stream& stream) = 0;
  // Whether the stream is being captured into a CUDA graph now. While it
  // is, nothing may record, query or wait on its events or synchronize it
  // (that invalidates the capture), so stream-ordered reuse fences nothing
  // then (alloc/stream_reuse.hpp). Default: never.
  virtual bool capturing(const Stream& stream) {
    (void)stream;
    return false;
  }
};

}  // namespace memd
