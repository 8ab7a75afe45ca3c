// tests/backends/backend_conformance.hpp — the Backend contract, stated once.
//
// A typed GoogleTest suite that every backend must pass on one of its devices:
// discovery fields, reserve/map/write/read/unmap/release, the mapping-unit
// contract (unmap takes whole units only), rejection of double map/unmap and
// of misaligned or out-of-range runs, a map larger than the device as
// out_of_memory, physical_bytes through map/unmap/trim, segments of every
// memory type the device lists, stream ordering of copies and fills, events,
// concurrent streams on several threads, memory_info, destruction of
// streams and events, and shareable segments (own memory, exported as a new
// descriptor each time; a memfd is mapped again here and must show the same
// bytes both ways; double free and export after free are not_found).
//
// Instantiate with a traits type:
//   struct MyTraits {
//     static std::unique_ptr<memd::Backend> make();   // may return nullptr
//     static memd::DeviceId device();                  // the device under test
//     static std::string skip_message();               // why the device is absent
//   };
//   INSTANTIATE_TYPED_TEST_SUITE_P(Name, BackendConformance, MyTraits);
// When the device is not among the backend's devices() every test skips with
// skip_message(), which is how GPU instantiations behave on a machine without one.
//
// Thread safety: tests create their own backend; one test per process thread.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend.hpp"
#include "memd/size.hpp"

namespace memd::testing {

inline std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t seed) {
  std::vector<std::uint8_t> out(n);
  for (std::size_t i = 0; i < n; ++i)
    out[i] = static_cast<std::uint8_t>((i * 131 + seed * 7 + (i >> 9)) & 0xFF);
  return out;
}

#define MEMD_ASSERT_OK(expr)                                       \
  do {                                                             \
    auto memd_result_ = (expr);                                    \
    ASSERT_TRUE(memd_result_.has_value()) << memd_result_.error().message; \
  } while (0)

#define MEMD_EXPECT_CODE(expr, expected_code)                                        \
  do {                                                                               \
    auto memd_result_ = (expr);                                                      \
    ASSERT_FALSE(memd_result_.has_value()) << #expr " unexpectedly succeeded";       \
    EXPECT_EQ(memd_result_.error().code, expected_code) << memd_result_.error().message; \
  } while (0)

template <typename Traits>
class BackendConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = Traits::make();
    device_ = Traits::device();
    if (!backend_) GTEST_SKIP() << Traits::skip_message();
    for (auto& d : backend_->devices())
      if (d.id == device_) info_ = d;
    if (!info_) GTEST_SKIP() << Traits::skip_message();
  }

  void TearDown() override {
    if (backend_) backend_->set_handle_cache_limit(device_, 0);
  }

  Stream default_stream() const { return Stream{device_, 0}; }
  std::uint64_t granularity() const { return info_->granularity; }

  // Synchronous upload/download through the backend's own copy engine, so the
  // same test reaches device memory the test process cannot dereference.
  void upload(void* dst, const std::vector<std::uint8_t>& data) {
    auto copied = backend_->copy(dst, data.data(), data.size(), default_stream());
    ASSERT_TRUE(copied.has_value()) << copied.error().message;
    auto synced = backend_->synchronize(default_stream());
    ASSERT_TRUE(synced.has_value()) << synced.error().message;
  }
  std::vector<std::uint8_t> download(const void* src, std::size_t n) {
    std::vector<std::uint8_t> out(n, 0xEE);
    auto copied = backend_->copy(out.data(), src, n, default_stream());
    EXPECT_TRUE(copied.has_value()) << copied.error().message;
    auto synced = backend_->synchronize(default_stream());
    EXPECT_TRUE(synced.has_value()) << synced.error().message;
    return out;
  }

  bool skip_without_vm() const { return !info_->virtual_memory; }

  // A reserved range of `pages` granules, the handle cache emptied first so
  // physical_bytes() moves only with what the test maps; p0 is its value then.
  std::optional<VirtualRange> clean_range(std::uint64_t pages, std::uint64_t& p0) {
    backend_->set_handle_cache_limit(device_, 0);
    backend_->trim();
    p0 = backend_->physical_bytes(device_);
    auto range = backend_->reserve(device_, pages * granularity());
    EXPECT_TRUE(range.has_value()) << range.error().message;
    if (!range) return std::nullopt;
    return *range;
  }

  std::unique_ptr<Backend> backend_;
  DeviceId device_;
  std::optional<DeviceInfo> info_;
};

TYPED_TEST_SUITE_P(BackendConformance);

TYPED_TEST_P(BackendConformance, DiscoveryFieldsAreComplete) {
  const auto& info = *this->info_;
  EXPECT_EQ(info.backend, this->backend_->name());
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.total_bytes, 0u);
  EXPECT_LE(info.free_bytes, info.total_bytes);
  ASSERT_FALSE(info.memory_types.empty());
  EXPECT_NE(std::find(info.memory_types.begin(), info.memory_types.end(), MemoryType::VRAM),
            info.memory_types.end())
      << "a GPU-like device must offer VRAM";
  if (info.virtual_memory) {
    EXPECT_GE(info.granularity, 4096u);
    EXPECT_EQ(info.granularity & (info.granularity - 1), 0u) << "granularity must be a power of two";
  } else {
    EXPECT_EQ(info.granularity, 0u);
  }
  int listed = 0;
  for (const auto& d : this->backend_->devices()) listed += d.id == this->device_ ? 1 : 0;
  EXPECT_EQ(listed, 1) << "each device is listed exactly once";
}

TYPED_TEST_P(BackendConformance, ReserveMapWriteReadUnmapRelease) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  auto range = b.reserve(this->device_, 4 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  EXPECT_EQ(range->size, 4 * g);
  EXPECT_EQ(range->device, this->device_);
  EXPECT_EQ(range->base % g, 0u) << "reservations are aligned to the granularity";

  MEMD_ASSERT_OK(b.map(*range, g, 2 * g));
  auto* run = reinterpret_cast<void*>(range->base + g);
  const auto data = pattern(static_cast<std::size_t>(2 * g), 3);
  this->upload(run, data);
  EXPECT_EQ(this->download(run, data.size()), data);

  // Mapping a neighbour later leaves the first run's bytes alone.
  MEMD_ASSERT_OK(b.map(*range, 3 * g, g));
  EXPECT_EQ(this->download(run, data.size()), data);

  // Part of a unit cannot be unmapped; the unit and its bytes stay.
  MEMD_EXPECT_CODE(b.unmap(*range, g, g), ErrorCode::conflict);
  EXPECT_EQ(this->download(run, data.size()), data);
  MEMD_ASSERT_OK(b.unmap(*range, g, 3 * g));  // spans two separate map() calls
  MEMD_ASSERT_OK(b.release(*range));
}

TYPED_TEST_P(BackendConformance, UnmapTakesWholeUnitsOnly) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  std::uint64_t p0 = 0;
  auto range = this->clean_range(6, p0);
  ASSERT_TRUE(range.has_value());
  auto* base = reinterpret_cast<void*>(range->base);
  MEMD_ASSERT_OK(b.map(*range, 0, 3 * g));      // unit A: pages 0-2
  MEMD_ASSERT_OK(b.map(*range, 3 * g, 2 * g));  // unit B: pages 3-4, adjacent
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 5 * g);
  const auto data = pattern(static_cast<std::size_t>(5 * g), 5);
  this->upload(base, data);

  // Overlapping a unit is a conflict for map() as well.
  MEMD_EXPECT_CODE(b.map(*range, 2 * g, g), ErrorCode::conflict);
  MEMD_EXPECT_CODE(b.map(*range, 4 * g, 2 * g), ErrorCode::conflict);

  // Every run that is not exactly a union of whole units: conflict, no change.
  MEMD_EXPECT_CODE(b.unmap(*range, 0, g), ErrorCode::conflict);          // head of A
  MEMD_EXPECT_CODE(b.unmap(*range, g, g), ErrorCode::conflict);          // middle of A
  MEMD_EXPECT_CODE(b.unmap(*range, 2 * g, g), ErrorCode::conflict);      // tail of A
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 2 * g), ErrorCode::conflict);
  MEMD_EXPECT_CODE(b.unmap(*range, 2 * g, 2 * g), ErrorCode::conflict);  // across A|B
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 4 * g), ErrorCode::conflict);      // A and half of B
  MEMD_EXPECT_CODE(b.unmap(*range, 3 * g, 3 * g), ErrorCode::conflict);  // B and an unmapped page
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 6 * g), ErrorCode::conflict);      // A, B, unmapped page
  MEMD_EXPECT_CODE(b.unmap(*range, 5 * g, g), ErrorCode::conflict);      // never mapped
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 5 * g);
  EXPECT_EQ(this->download(base, data.size()), data) << "refused unmaps change nothing";

  // Exactly unit A.
  MEMD_ASSERT_OK(b.unmap(*range, 0, 3 * g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 2 * g);
  const std::vector<std::uint8_t> tail(data.begin() + static_cast<std::ptrdiff_t>(3 * g),
                                       data.end());
  EXPECT_EQ(this->download(reinterpret_cast<std::uint8_t*>(range->base) + 3 * g, tail.size()),
            tail)
      << "the neighbouring unit keeps its bytes";
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 3 * g), ErrorCode::conflict);  // already gone

  // Remap A (as a unit of another size) and unmap both adjacent units in one call.
  MEMD_ASSERT_OK(b.map(*range, g, 2 * g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 4 * g);
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 5 * g), ErrorCode::conflict);  // page 0 is unmapped
  MEMD_ASSERT_OK(b.unmap(*range, g, 4 * g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0);

  // The whole range as one unit, usable again.
  MEMD_ASSERT_OK(b.map(*range, 0, 6 * g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 6 * g);
  const auto again = pattern(static_cast<std::size_t>(6 * g), 6);
  this->upload(base, again);
  EXPECT_EQ(this->download(base, again.size()), again);
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 3 * g), ErrorCode::conflict);
  MEMD_ASSERT_OK(b.unmap(*range, 0, 6 * g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0);
  MEMD_ASSERT_OK(b.release(*range));
}

TYPED_TEST_P(BackendConformance, ReleaseUnmapsWhatIsStillMapped) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  const auto before = b.physical_bytes(this->device_);
  auto range = b.reserve(this->device_, 3 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  MEMD_ASSERT_OK(b.map(*range, 0, g));
  MEMD_ASSERT_OK(b.map(*range, 2 * g, g));
  EXPECT_EQ(b.physical_bytes(this->device_), before + 2 * g);
  MEMD_ASSERT_OK(b.release(*range));
  b.trim();
  EXPECT_EQ(b.physical_bytes(this->device_), before);
  MEMD_EXPECT_CODE(b.release(*range), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.map(*range, 0, g), ErrorCode::not_found);
}

TYPED_TEST_P(BackendConformance, DoubleMapIsRejected) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  const auto before = b.physical_bytes(this->device_);
  auto range = b.reserve(this->device_, 4 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  MEMD_ASSERT_OK(b.map(*range, g, g));
  MEMD_EXPECT_CODE(b.map(*range, g, g), ErrorCode::conflict);
  // A run that only overlaps a mapped page is rejected whole, mapping nothing.
  MEMD_EXPECT_CODE(b.map(*range, 0, 3 * g), ErrorCode::conflict);
  EXPECT_EQ(b.physical_bytes(this->device_), before + g);
  MEMD_ASSERT_OK(b.map(*range, 0, g));
  MEMD_ASSERT_OK(b.release(*range));
}

TYPED_TEST_P(BackendConformance, DoubleUnmapIsRejected) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  auto range = b.reserve(this->device_, 4 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  MEMD_EXPECT_CODE(b.unmap(*range, 0, g), ErrorCode::conflict);  // never mapped
  MEMD_ASSERT_OK(b.map(*range, 0, g));
  MEMD_ASSERT_OK(b.map(*range, g, g));
  MEMD_ASSERT_OK(b.unmap(*range, 0, g));
  MEMD_EXPECT_CODE(b.unmap(*range, 0, g), ErrorCode::conflict);
  // Partly mapped run: rejected whole, the mapped page stays mapped.
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 2 * g), ErrorCode::conflict);
  MEMD_ASSERT_OK(b.unmap(*range, g, g));
  MEMD_ASSERT_OK(b.release(*range));
}

TYPED_TEST_P(BackendConformance, MisalignedAndOutOfRangeAreRejected) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  MEMD_EXPECT_CODE(b.reserve(this->device_, 0), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.reserve(this->device_, g + 1), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.reserve(this->device_, g / 2), ErrorCode::invalid_argument);

  auto range = b.reserve(this->device_, 2 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  MEMD_EXPECT_CODE(b.map(*range, g / 2, g), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.map(*range, 0, g / 2), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.map(*range, 0, 0), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.map(*range, 2 * g, g), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.map(*range, g, 2 * g), ErrorCode::invalid_argument);
  // Offsets that would overflow offset + bytes must not wrap into the range.
  const auto huge = ~std::uint64_t{0} - (g - 1);
  MEMD_EXPECT_CODE(b.map(*range, huge, g), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.map(*range, g, huge), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.unmap(*range, g / 2, g), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.unmap(*range, 2 * g, g), ErrorCode::invalid_argument);

  VirtualRange forged = *range;
  forged.handle += 1000;
  MEMD_EXPECT_CODE(b.map(forged, 0, g), ErrorCode::not_found);
  MEMD_ASSERT_OK(b.release(*range));
}

// A map larger than the whole device fails at once as out_of_memory and
// changes nothing; the failure does not poison later maps. (Filling a real
// device exactly is host-only: see host_backend_test.cpp.)
TYPED_TEST_P(BackendConformance, MapLargerThanTheDeviceIsOutOfMemory) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  b.set_handle_cache_limit(this->device_, 0);
  b.trim();
  const auto p0 = b.physical_bytes(this->device_);
  const auto too_big = (this->info_->total_bytes + g - 1) / g * g + g;
  auto range = b.reserve(this->device_, too_big);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  {
    auto over = b.map(*range, 0, too_big);
    ASSERT_FALSE(over.has_value()) << "mapped more than the device's total memory";
    EXPECT_EQ(over.error().code, ErrorCode::out_of_memory) << over.error().message;
  }
  EXPECT_EQ(b.physical_bytes(this->device_), p0);
  MEMD_EXPECT_CODE(b.unmap(*range, 0, g), ErrorCode::conflict);  // nothing was mapped
  MEMD_ASSERT_OK(b.map(*range, 0, g));
  MEMD_ASSERT_OK(b.map(*range, too_big - g, g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 2 * g);
  MEMD_ASSERT_OK(b.release(*range));
  EXPECT_EQ(b.physical_bytes(this->device_), p0);
}

TYPED_TEST_P(BackendConformance, PhysicalBytesTrackMapUnmapAndTrim) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  b.set_handle_cache_limit(this->device_, 0);
  b.trim();
  const auto p0 = b.physical_bytes(this->device_);
  auto range = b.reserve(this->device_, 4 * g);
  ASSERT_TRUE(range.has_value()) << range.error().message;
  EXPECT_EQ(b.physical_bytes(this->device_), p0) << "reserving address space holds no memory";
  MEMD_ASSERT_OK(b.map(*range, 0, 2 * g));
  MEMD_ASSERT_OK(b.map(*range, 2 * g, g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 3 * g);
  MEMD_ASSERT_OK(b.unmap(*range, 2 * g, g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 2 * g) << "nothing cached at limit 0";

  // With a cache the backend may keep the unit's memory; trim() hands back
  // exactly what it reports.
  b.set_handle_cache_limit(this->device_, 4 * g);
  MEMD_ASSERT_OK(b.unmap(*range, 0, 2 * g));
  const auto cached = b.physical_bytes(this->device_);
  EXPECT_GE(cached, p0);
  EXPECT_LE(cached, p0 + 2 * g);
  const auto trimmed = b.trim();
  EXPECT_EQ(b.physical_bytes(this->device_), cached - trimmed);
  EXPECT_EQ(b.physical_bytes(this->device_), p0);

  // Cached units serve later maps of their size and are real memory again.
  MEMD_ASSERT_OK(b.map(*range, 0, 2 * g));
  MEMD_ASSERT_OK(b.unmap(*range, 0, 2 * g));
  MEMD_ASSERT_OK(b.map(*range, 2 * g, 2 * g));  // may reuse the cached unit
  MEMD_ASSERT_OK(b.map(*range, 0, 2 * g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 4 * g);
  const auto data = pattern(static_cast<std::size_t>(4 * g), 9);
  this->upload(reinterpret_cast<void*>(range->base), data);
  EXPECT_EQ(this->download(reinterpret_cast<void*>(range->base), data.size()), data);
  MEMD_ASSERT_OK(b.release(*range));
  EXPECT_LE(b.physical_bytes(this->device_), p0 + 4 * g);
  b.set_handle_cache_limit(this->device_, 0);
  EXPECT_EQ(b.physical_bytes(this->device_), p0) << "a zero limit gives the cache back";
  b.trim();
  EXPECT_EQ(b.physical_bytes(this->device_), p0);
}

TYPED_TEST_P(BackendConformance, SegmentsOfEveryListedTypeAreUsable) {
  auto& b = *this->backend_;
  for (MemoryType type : this->info_->memory_types) {
    SCOPED_TRACE(std::string(to_string(type)));
    const auto p0 = b.physical_bytes(this->device_);
    const std::size_t size = 1 * kMiB + 3;  // odd on purpose
    auto segment = b.allocate(this->device_, type, size);
    ASSERT_TRUE(segment.has_value()) << segment.error().message;
    EXPECT_EQ(segment->type, type);
    EXPECT_EQ(segment->size, size);
    EXPECT_EQ(segment->device, this->device_);
    ASSERT_NE(segment->ptr, nullptr);
    EXPECT_GE(b.physical_bytes(this->device_), p0 + size);

    auto expected = pattern(size, static_cast<std::uint8_t>(type));
    this->upload(segment->ptr, expected);
    MEMD_ASSERT_OK(b.fill(static_cast<std::uint8_t*>(segment->ptr) + 100, 0xAB, 1000,
                          this->default_stream()));
    std::fill(expected.begin() + 100, expected.begin() + 1100, std::uint8_t{0xAB});
    EXPECT_EQ(this->download(segment->ptr, size), expected);

    MEMD_ASSERT_OK(b.free(*segment));
    EXPECT_EQ(b.physical_bytes(this->device_), p0);
    MEMD_EXPECT_CODE(b.free(*segment), ErrorCode::not_found);
  }
}

TYPED_TEST_P(BackendConformance, SegmentRequestsAreValidated) {
  auto& b = *this->backend_;
  MEMD_EXPECT_CODE(b.allocate(this->device_, MemoryType::VRAM, 0), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.allocate(this->device_, MemoryType::RAM, kMiB), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.allocate(this->device_, MemoryType::Unknown, kMiB),
                   ErrorCode::invalid_argument);
  auto wrong_device = this->device_.kind() == DeviceKind::Cuda ? DeviceId::cuda(1000)
                                                                : DeviceId::host(1000);
  MEMD_EXPECT_CODE(b.allocate(wrong_device, MemoryType::VRAM, kMiB), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.reserve(wrong_device, kMiB), ErrorCode::not_found);
  EXPECT_FALSE(b.memory_info(wrong_device).has_value());
}

TYPED_TEST_P(BackendConformance, CopiesAndFillsRunInStreamOrder) {
  auto& b = *this->backend_;
  const std::size_t size = 8 * kMiB;
  auto a = b.allocate(this->device_, MemoryType::VRAM, size);
  auto c = b.allocate(this->device_, MemoryType::VRAM, size);
  ASSERT_TRUE(a.has_value() && c.has_value());
  auto stream = b.create_stream(this->device_);
  ASSERT_TRUE(stream.has_value()) << stream.error().message;
  std::vector<std::uint8_t> first(size), second(size);
  // fill → copy → fill → copy on one stream: each copy sees the fill before it.
  for (int round = 0; round < 4; ++round) {
    MEMD_ASSERT_OK(b.fill(a->ptr, 0x11, size, *stream));
    MEMD_ASSERT_OK(b.copy(c->ptr, a->ptr, size, *stream));
    MEMD_ASSERT_OK(b.copy(first.data(), c->ptr, size, *stream));
    MEMD_ASSERT_OK(b.fill(a->ptr, 0x22, size, *stream));
    MEMD_ASSERT_OK(b.copy(second.data(), a->ptr, size, *stream));
    MEMD_ASSERT_OK(b.synchronize(*stream));
    EXPECT_TRUE(std::all_of(first.begin(), first.end(), [](auto v) { return v == 0x11; }));
    EXPECT_TRUE(std::all_of(second.begin(), second.end(), [](auto v) { return v == 0x22; }));
  }
  MEMD_ASSERT_OK(b.copy(first.data(), a->ptr, 0, *stream));  // zero bytes: a no-op
  MEMD_EXPECT_CODE(b.copy(nullptr, a->ptr, 16, *stream), ErrorCode::invalid_argument);
  MEMD_ASSERT_OK(b.destroy_stream(*stream));
  MEMD_ASSERT_OK(b.free(*a));
  MEMD_ASSERT_OK(b.free(*c));
}

TYPED_TEST_P(BackendConformance, EventsCompleteInStreamOrder) {
  auto& b = *this->backend_;
  const std::size_t size = 16 * kMiB;
  auto seg = b.allocate(this->device_, MemoryType::VRAM, size);
  ASSERT_TRUE(seg.has_value()) << seg.error().message;
  auto stream = b.create_stream(this->device_);
  ASSERT_TRUE(stream.has_value()) << stream.error().message;

  auto empty = b.record(*stream);  // nothing before it
  ASSERT_TRUE(empty.has_value()) << empty.error().message;
  MEMD_ASSERT_OK(b.wait(*empty));
  auto done = b.query(*empty);
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(*done);

  std::vector<std::uint8_t> out(size);
  MEMD_ASSERT_OK(b.fill(seg->ptr, 0x5A, size, *stream));
  auto after_fill = b.record(*stream);
  ASSERT_TRUE(after_fill.has_value());
  MEMD_ASSERT_OK(b.copy(out.data(), seg->ptr, size, *stream));
  auto after_copy = b.record(*stream);
  ASSERT_TRUE(after_copy.has_value());
  EXPECT_NE(after_fill->handle, after_copy->handle);
  MEMD_ASSERT_OK(b.wait(*after_copy));
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](auto v) { return v == 0x5A; }))
      << "wait() returns only after the work before the event";
  auto earlier = b.query(*after_fill);
  ASSERT_TRUE(earlier.has_value());
  EXPECT_TRUE(*earlier) << "an earlier event completes no later than a later one";

  // Events on the default stream work the same way.
  auto on_default = b.record(this->default_stream());
  ASSERT_TRUE(on_default.has_value()) << on_default.error().message;
  MEMD_ASSERT_OK(b.wait(*on_default));

  for (const auto& e : {*empty, *after_fill, *after_copy, *on_default})
    MEMD_ASSERT_OK(b.destroy_event(e));
  MEMD_ASSERT_OK(b.destroy_stream(*stream));
  MEMD_ASSERT_OK(b.free(*seg));
}

TYPED_TEST_P(BackendConformance, ThreadsWithTheirOwnStreamsCopyConcurrently) {
  auto& b = *this->backend_;
  const auto device = this->device_;
  const bool vm = this->info_->virtual_memory;
  const auto g = this->granularity();
  constexpr int kThreads = 4;
  constexpr int kRounds = 16;
  const std::size_t size = 256 * kKiB;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      auto stream = b.create_stream(device);
      auto seg = b.allocate(device, MemoryType::VRAM, size);
      if (!stream || !seg) {
        ++failures;
        return;
      }
      std::vector<std::uint8_t> in(size), out(size);
      for (int round = 0; round < kRounds; ++round) {
        in = pattern(size, static_cast<std::uint8_t>(t * 31 + round));
        bool ok = b.copy(seg->ptr, in.data(), size, *stream).has_value() &&
                  b.fill(seg->ptr, static_cast<std::uint8_t>(t), 64, *stream).has_value() &&
                  b.copy(out.data(), seg->ptr, size, *stream).has_value();
        auto event = b.record(*stream);
        ok = ok && event && b.wait(*event).has_value() && b.destroy_event(*event).has_value();
        std::fill(in.begin(), in.begin() + 64, static_cast<std::uint8_t>(t));
        if (!ok || in != out) ++failures;
        // Virtual memory from several threads at once, each on its own range.
        if (vm) {
          auto range = b.reserve(device, 2 * g);
          ok = range && b.map(*range, 0, g).has_value() && b.map(*range, g, g).has_value() &&
               b.unmap(*range, 0, 2 * g).has_value() && b.release(*range).has_value();
          if (!ok) ++failures;
        }
      }
      if (!b.destroy_stream(*stream) || !b.free(*seg)) ++failures;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TYPED_TEST_P(BackendConformance, MemoryInfoIsSane) {
  auto& b = *this->backend_;
  auto info = b.memory_info(this->device_);
  ASSERT_TRUE(info.has_value()) << info.error().message;
  EXPECT_GT(info->total_bytes, 0u);
  EXPECT_LE(info->free_bytes, info->total_bytes);
  EXPECT_EQ(info->used_bytes, info->total_bytes - info->free_bytes);
  // Not equal to DeviceInfo::total_bytes in general: NVML counts memory the
  // CUDA runtime reserves for itself. Within a tenth of it, though.
  EXPECT_GE(info->total_bytes, this->info_->total_bytes - this->info_->total_bytes / 10);
  EXPECT_LE(info->total_bytes, this->info_->total_bytes + this->info_->total_bytes / 10);
}

TYPED_TEST_P(BackendConformance, StreamsAndEventsCanBeDestroyed) {
  auto& b = *this->backend_;
  const std::size_t size = 4 * kMiB;
  auto seg = b.allocate(this->device_, MemoryType::VRAM, size);
  ASSERT_TRUE(seg.has_value()) << seg.error().message;
  auto stream = b.create_stream(this->device_);
  ASSERT_TRUE(stream.has_value()) << stream.error().message;
  std::vector<std::uint8_t> out(size);
  MEMD_ASSERT_OK(b.fill(seg->ptr, 0x77, size, *stream));
  MEMD_ASSERT_OK(b.copy(out.data(), seg->ptr, size, *stream));
  auto event = b.record(*stream);
  ASSERT_TRUE(event.has_value());
  // Destroying a stream finishes its queued work first.
  MEMD_ASSERT_OK(b.destroy_stream(*stream));
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](auto v) { return v == 0x77; }));
  auto done = b.query(*event);
  ASSERT_TRUE(done.has_value()) << "an event outlives its stream";
  EXPECT_TRUE(*done);

  MEMD_EXPECT_CODE(b.destroy_stream(*stream), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.copy(out.data(), seg->ptr, 16, *stream), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.record(*stream), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.destroy_stream(this->default_stream()), ErrorCode::invalid_argument);

  MEMD_ASSERT_OK(b.destroy_event(*event));
  MEMD_EXPECT_CODE(b.destroy_event(*event), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.query(*event), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.wait(*event), ErrorCode::not_found);
  MEMD_ASSERT_OK(b.free(*seg));
}

TYPED_TEST_P(BackendConformance, OneMapCanMakeSeveralUnits) {
  if (this->skip_without_vm()) GTEST_SKIP() << "device has no virtual memory";
  auto& b = *this->backend_;
  const auto g = this->granularity();
  std::uint64_t p0 = 0;
  auto range = this->clean_range(6, p0);
  ASSERT_TRUE(range.has_value());
  auto* base = reinterpret_cast<void*>(range->base);
  // Units of 2 pages: [0,2) [2,4) [4,5).
  MEMD_EXPECT_CODE(b.map(*range, 0, 5 * g, g / 2), ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.map(*range, 0, 5 * g, g + g / 2), ErrorCode::invalid_argument);
  EXPECT_EQ(b.physical_bytes(this->device_), p0) << "a refused map changed something";
  MEMD_ASSERT_OK(b.map(*range, 0, 5 * g, 2 * g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 5 * g);
  const auto data = pattern(static_cast<std::size_t>(5 * g), 7);
  this->upload(base, data);
  EXPECT_EQ(this->download(base, data.size()), data) << "the run is one accessible stretch";
  MEMD_EXPECT_CODE(b.unmap(*range, g, 2 * g), ErrorCode::conflict);   // cuts two units
  MEMD_EXPECT_CODE(b.unmap(*range, 0, 5 * g + g), ErrorCode::conflict);  // and an unmapped page
  MEMD_EXPECT_CODE(b.map(*range, 4 * g, 2 * g, g), ErrorCode::conflict);  // overlaps the last unit
  MEMD_ASSERT_OK(b.unmap(*range, 2 * g, 2 * g));  // the middle unit alone
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + 3 * g);
  const std::vector<std::uint8_t> head(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(2 * g));
  EXPECT_EQ(this->download(base, head.size()), head) << "the first unit keeps its bytes";
  MEMD_ASSERT_OK(b.unmap(*range, 0, 2 * g));
  MEMD_ASSERT_OK(b.unmap(*range, 4 * g, g));
  EXPECT_EQ(b.physical_bytes(this->device_), p0);
  // A unit size larger than the run: one unit.
  MEMD_ASSERT_OK(b.map(*range, 0, 3 * g, 8 * g));
  MEMD_EXPECT_CODE(b.unmap(*range, 0, g), ErrorCode::conflict);
  MEMD_ASSERT_OK(b.release(*range));
  EXPECT_EQ(b.physical_bytes(this->device_), p0);
}

// Shareable memory on the device under test: its own pages, zero at first,
// exported as a fresh close-on-exec descriptor per call. A memfd is mapped a
// second time here (as the receiving process would) and both mappings show
// each other's writes; a CUDA descriptor is imported in cuda_backend_gpu_test.
TYPED_TEST_P(BackendConformance, ShareableSegmentsExportTheirOwnMemory) {
  auto& b = *this->backend_;
  const auto p0 = b.physical_bytes(this->device_);
  const std::size_t asked = kMiB + 3;  // odd on purpose: the size is rounded up
  auto s = b.allocate_shareable(this->device_, MemoryType::VRAM, asked);
  if (!s && s.error().code == ErrorCode::unavailable) GTEST_SKIP() << s.error().message;
  ASSERT_TRUE(s.has_value()) << s.error().message;
  const Segment& seg = s->segment;
  EXPECT_EQ(seg.device, this->device_);
  EXPECT_EQ(seg.type, MemoryType::VRAM);
  ASSERT_NE(seg.ptr, nullptr);
  ASSERT_GE(seg.size, asked);
  const std::uint64_t unit = s->kind == ShareableKind::Memfd
                                 ? static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE))
                                 : this->granularity();
  EXPECT_EQ(seg.size % unit, 0u) << "the size is rounded up to whole " << unit << "-byte units";
  EXPECT_LT(seg.size - asked, unit);
  EXPECT_EQ(b.physical_bytes(this->device_), p0 + seg.size);
  const auto n = static_cast<std::size_t>(seg.size);
  EXPECT_EQ(this->download(seg.ptr, n), std::vector<std::uint8_t>(n, 0))
      << "fresh shareable memory holds no one's old bytes";
  const auto first = pattern(n, 21);
  this->upload(seg.ptr, first);

  auto fd = b.export_fd(*s);
  ASSERT_TRUE(fd.has_value()) << fd.error().message;
  ASSERT_GE(*fd, 0);
  EXPECT_NE(::fcntl(*fd, F_GETFD) & FD_CLOEXEC, 0) << "exports never leak into programs memd starts";
  auto again = b.export_fd(*s);
  ASSERT_TRUE(again.has_value()) << again.error().message;
  EXPECT_NE(*again, *fd) << "each export is a new descriptor the caller owns";
  ::close(*again);

  if (s->kind == ShareableKind::Memfd) {
    struct stat st {};
    ASSERT_EQ(::fstat(*fd, &st), 0);
    EXPECT_EQ(static_cast<std::uint64_t>(st.st_size), seg.size) << "the file is exactly the segment";
    void* other = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    ASSERT_NE(other, MAP_FAILED);
    EXPECT_EQ(std::memcmp(other, first.data(), n), 0) << "the second mapping sees memd's bytes";
    const auto second = pattern(n, 22);
    std::memcpy(other, second.data(), n);
    EXPECT_EQ(this->download(seg.ptr, n), second) << "memd sees the second mapping's bytes";
    ::munmap(other, n);
  }
  ::close(*fd);

  MEMD_ASSERT_OK(b.free_shareable(*s));
  EXPECT_EQ(b.physical_bytes(this->device_), p0);
  MEMD_EXPECT_CODE(b.free_shareable(*s), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.export_fd(*s), ErrorCode::not_found);
}

TYPED_TEST_P(BackendConformance, ShareableRequestsAreValidated) {
  auto& b = *this->backend_;
  MEMD_EXPECT_CODE(b.allocate_shareable(this->device_, MemoryType::VRAM, 0),
                   ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.allocate_shareable(this->device_, MemoryType::RAM, kMiB),
                   ErrorCode::invalid_argument);
  MEMD_EXPECT_CODE(b.allocate_shareable(this->device_, MemoryType::Unknown, kMiB),
                   ErrorCode::invalid_argument);
  auto wrong_device = this->device_.kind() == DeviceKind::Cuda ? DeviceId::cuda(1000)
                                                                : DeviceId::host(1000);
  MEMD_EXPECT_CODE(b.allocate_shareable(wrong_device, MemoryType::VRAM, kMiB), ErrorCode::not_found);
  auto s = b.allocate_shareable(this->device_, MemoryType::VRAM, kMiB);
  if (!s && s.error().code == ErrorCode::unavailable) GTEST_SKIP() << s.error().message;
  ASSERT_TRUE(s.has_value()) << s.error().message;
  // A forged handle, or the right handle with another pointer or device,
  // names nothing; an ordinary segment is not a shareable one.
  for (auto forge : {+[](ShareableSegment& f) { f.segment.handle += 1000; },
                     +[](ShareableSegment& f) { f.segment.ptr = static_cast<char*>(f.segment.ptr) + 4096; },
                     +[](ShareableSegment& f) { f.segment.device = DeviceId::cpu(); }}) {
    ShareableSegment forged = *s;
    forge(forged);
    MEMD_EXPECT_CODE(b.export_fd(forged), ErrorCode::not_found);
    MEMD_EXPECT_CODE(b.free_shareable(forged), ErrorCode::not_found);
  }
  auto plain = b.allocate(this->device_, MemoryType::VRAM, kMiB);
  ASSERT_TRUE(plain.has_value()) << plain.error().message;
  MEMD_EXPECT_CODE(b.export_fd(ShareableSegment{*plain, s->kind}), ErrorCode::not_found);
  MEMD_EXPECT_CODE(b.free_shareable(ShareableSegment{*plain, s->kind}), ErrorCode::not_found);
  MEMD_ASSERT_OK(b.free(*plain));
  MEMD_ASSERT_OK(b.free_shareable(*s));
}

REGISTER_TYPED_TEST_SUITE_P(BackendConformance, DiscoveryFieldsAreComplete,
                            ReserveMapWriteReadUnmapRelease, UnmapTakesWholeUnitsOnly, OneMapCanMakeSeveralUnits,
                            ReleaseUnmapsWhatIsStillMapped, DoubleMapIsRejected,
                            DoubleUnmapIsRejected, MisalignedAndOutOfRangeAreRejected,
                            MapLargerThanTheDeviceIsOutOfMemory,
                            PhysicalBytesTrackMapUnmapAndTrim, SegmentsOfEveryListedTypeAreUsable,
                            SegmentRequestsAreValidated, CopiesAndFillsRunInStreamOrder,
                            EventsCompleteInStreamOrder, ThreadsWithTheirOwnStreamsCopyConcurrently,
                            MemoryInfoIsSane, StreamsAndEventsCanBeDestroyed,
                            ShareableSegmentsExportTheirOwnMemory, ShareableRequestsAreValidated);

}  // namespace memd::testing
