// backends/host/host_backend.hpp — system RAM (`cpu`) and host-backed stand-in
// GPUs (`host:N`).
//
// host:N is built on mmap with reserve/commit semantics: reserve() maps
// PROT_NONE address space, map() commits pages (mprotect read/write), unmap()
// gives them back (madvise(MADV_DONTNEED) + PROT_NONE), at a configurable
// granularity that defaults to CUDA VMM's 2 MiB, so the allocator above
// behaves — and is measured — as it will be on a GPU. Each host:N has its own
// capacity (BackendOptions::host_device_sizes), enforced on committed bytes;
// all of them are peers of each other (one address space). Shareable segments
// are memfds mapped MAP_SHARED, charged to host:N's capacity like mapped
// pages. Streams are FIFO worker threads, so copies and fills are truly
// asynchronous and events complete in stream order.
//
// Thread safety: all methods are thread-safe.
#pragma once

#include <memory>

#include "backends/backend.hpp"
#include "backends/device_catalog.hpp"

namespace memd {

std::unique_ptr<Backend> make_host_backend(const BackendOptions& options);

}  // namespace memd
