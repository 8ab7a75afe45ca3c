// Shared helpers of the tests of the pool's pieces (retention, arenas, huge
// blocks, the block allocator, stream reuse): each piece built on its own
// over a host:0 backend of a given size, wired as DevicePool wires them, with
// no DevicePool.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>

#include "alloc/footprint.hpp"
#include "alloc/huge_blocks.hpp"
#include "alloc/pool_options.hpp"
#include "alloc/pool_stats.hpp"
#include "alloc/segment_arena.hpp"
#include "alloc/virtual_arena.hpp"
#include "backends/device_catalog.hpp"
#include "backends/host/host_backend.hpp"
#include "memd/size.hpp"

namespace memd::pieces_test {

inline constexpr std::uint64_t kPage = 2 * kMiB;  // host:0's granularity here, as CUDA's
inline const DeviceId kHost0 = DeviceId::host(0);

// One host:0 of `device_bytes` (committed bytes are charged against it;
// reservations are not).
inline std::unique_ptr<Backend> host_backend(std::uint64_t device_bytes, std::uint64_t granularity = kPage) {
  BackendOptions options;
  options.host_device_sizes = {device_bytes};
  options.host_granularity = granularity;
  options.enable_cuda = false;
  return make_host_backend(options);
}

// Options whose counts are easy to predict: units of one page, no mapping
// ahead, no huge blocks (tests that want them set huge_threshold).
inline PoolOptions unit_options(std::uint64_t capacity) {
  PoolOptions options;
  options.capacity = capacity;
  options.map_unit_min = options.map_unit_max = kPage;
  options.map_ahead_max = 0;
  options.huge_threshold = ~std::uint64_t{0};
  return options;
}

// A backend, an arena, huge blocks and the footprint over them, composed as
// DevicePool composes them (members go in reverse order). Held by pointer so
// the references the pieces keep (options, counters) stay put.
struct Pieces {
  std::unique_ptr<Backend> backend;
  PoolOptions options;
  PoolCounters counters;
  std::unique_ptr<Arena> arena;
  std::unique_ptr<HugeBlocks> huge;
  std::unique_ptr<Footprint> footprint;

  VirtualArena& varena() { return static_cast<VirtualArena&>(*arena); }
  // Physical bytes host:0 holds (the backend's own count).
  std::uint64_t physical() const { return backend->physical_bytes(kHost0); }
};

// A VirtualArena over a reservation of options.capacity on a host:0 of
// device_bytes.
inline std::unique_ptr<Pieces> virtual_pieces(std::uint64_t device_bytes, const PoolOptions& options) {
  auto p = std::make_unique<Pieces>();
  p->backend = host_backend(device_bytes);
  p->options = options;
  auto range = VirtualArena::reserve(*p->backend, p->options);
  EXPECT_TRUE(range.has_value()) << (range ? "" : range.error().message);
  if (!range) return nullptr;
  p->arena = std::make_unique<VirtualArena>(*p->backend, p->options, kPage, p->counters, *range);
  p->huge = std::make_unique<HugeBlocks>(*p->backend, p->options, /*virtual_memory=*/true, kPage, p->counters);
  p->footprint = std::make_unique<Footprint>(p->options, kPage, *p->arena, *p->huge);
  return p;
}

// A SegmentArena (and segment huge blocks) on a host:0 of device_bytes.
inline std::unique_ptr<Pieces> segment_pieces(std::uint64_t device_bytes, const PoolOptions& options) {
  auto p = std::make_unique<Pieces>();
  p->backend = host_backend(device_bytes);
  p->options = options;
  p->options.mode = PoolMode::Segments;
  p->arena = std::make_unique<SegmentArena>(*p->backend, p->options, kPage, p->counters);
  p->huge = std::make_unique<HugeBlocks>(*p->backend, p->options, /*virtual_memory=*/false, kPage, p->counters);
  p->footprint = std::make_unique<Footprint>(p->options, kPage, *p->arena, *p->huge);
  return p;
}

// What every step must leave: the arena's and huge blocks' own checks pass,
// and the backend holds exactly what the footprint says is held.
inline void expect_pieces_agree(Pieces& p, const char* where) {
  auto arena = p.arena->validate();
  EXPECT_TRUE(arena.has_value()) << where << ": " << (arena ? "" : arena.error().message);
  auto huge = p.huge->validate();
  EXPECT_TRUE(huge.has_value()) << where << ": " << (huge ? "" : huge.error().message);
  EXPECT_EQ(p.physical(), p.footprint->reserved()) << where;
}

#define MEMD_PIECE_OK(expr)                                                               \
  do {                                                                                    \
    auto memd_piece_ok_ = (expr);                                                         \
    ASSERT_TRUE(memd_piece_ok_.has_value()) << #expr << ": " << memd_piece_ok_.error().message; \
  } while (0)

}  // namespace memd::pieces_test
