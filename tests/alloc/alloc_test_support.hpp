// Shared helpers of the allocator tests: a host-only catalog, pools on it,
// address-derived byte patterns (so overlapping or moved blocks are caught),
// and a field-by-field PoolStats comparison built from the one stats list.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "alloc/device_pool.hpp"
#include "alloc/pool_stats.hpp"
#include "backends/device_catalog.hpp"
#include "memd/size.hpp"

namespace memd::alloc_test {

inline std::unique_ptr<DeviceCatalog> host_catalog(std::uint64_t host_bytes) {
  BackendOptions options;
  options.host_device_sizes = {host_bytes};
  options.host_granularity = 2 * kMiB;
  options.enable_cuda = false;
  auto catalog = DeviceCatalog::discover(options);
  EXPECT_TRUE(catalog.has_value()) << (catalog ? "" : catalog.error().message);
  return catalog ? std::move(*catalog) : nullptr;
}

// A catalog and one pool on it; the pool goes first on destruction.
struct PoolEnv {
  std::unique_ptr<DeviceCatalog> catalog;
  Backend* backend = nullptr;
  std::unique_ptr<DevicePool> pool;
};

inline PoolEnv make_pool(std::uint64_t host_bytes, PoolOptions options = {}) {
  PoolEnv env;
  env.catalog = host_catalog(host_bytes);
  if (!env.catalog) return env;
  auto backend = env.catalog->backend_for(options.device, options.memory_type);
  EXPECT_TRUE(backend.has_value()) << (backend ? "" : backend.error().message);
  if (!backend) return env;
  env.backend = *backend;
  auto pool = DevicePool::create(*env.backend, options);
  EXPECT_TRUE(pool.has_value()) << (pool ? "" : pool.error().message);
  if (pool) env.pool = std::move(*pool);
  return env;
}

// 64-bit word i of the block at `base` written with `salt`: depends on the
// address and the owner, so a block handed out twice, or bytes written by a
// neighbour, read back wrong.
inline std::uint64_t pattern_word(std::uint64_t base, std::uint64_t i, std::uint64_t salt) {
  std::uint64_t x = base ^ (i * 0x9E3779B97F4A7C15ull) ^ (salt << 1);
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return x;
}

// Fills size bytes (whole words, then the tail byte by byte).
inline void fill_pattern(void* p, std::uint64_t size, std::uint64_t salt) {
  auto base = reinterpret_cast<std::uint64_t>(p);
  auto* bytes = static_cast<unsigned char*>(p);
  std::uint64_t words = size / 8;
  for (std::uint64_t i = 0; i < words; ++i) {
    std::uint64_t w = pattern_word(base, i, salt);
    std::memcpy(bytes + i * 8, &w, 8);
  }
  std::uint64_t tail = pattern_word(base, words, salt);
  for (std::uint64_t k = words * 8; k < size; ++k) bytes[k] = static_cast<unsigned char>(tail >> (8 * (k % 8)));
}

// First mismatching byte offset, or -1 when the block holds its pattern.
inline std::int64_t check_pattern(const void* p, std::uint64_t size, std::uint64_t salt) {
  auto base = reinterpret_cast<std::uint64_t>(p);
  const auto* bytes = static_cast<const unsigned char*>(p);
  std::uint64_t words = size / 8;
  for (std::uint64_t i = 0; i < words; ++i) {
    std::uint64_t w = 0;
    std::memcpy(&w, bytes + i * 8, 8);
    if (w != pattern_word(base, i, salt)) return static_cast<std::int64_t>(i * 8);
  }
  std::uint64_t tail = pattern_word(base, words, salt);
  for (std::uint64_t k = words * 8; k < size; ++k)
    if (bytes[k] != static_cast<unsigned char>(tail >> (8 * (k % 8)))) return static_cast<std::int64_t>(k);
  return -1;
}

// Sparse variant for big blocks in the stress tests: first and last word and
// one word every `stride` bytes.
inline void stamp_sparse(void* p, std::uint64_t size, std::uint64_t salt, std::uint64_t stride = 4096) {
  auto base = reinterpret_cast<std::uint64_t>(p);
  auto* bytes = static_cast<unsigned char*>(p);
  if (size < 8) {
    fill_pattern(p, size, salt);
    return;
  }
  for (std::uint64_t off = 0; off + 8 <= size; off += stride) {
    std::uint64_t w = pattern_word(base, off, salt);
    std::memcpy(bytes + off, &w, 8);
  }
  std::uint64_t w = pattern_word(base, size, salt);
  std::memcpy(bytes + size - 8, &w, 8);
}

inline bool check_sparse(const void* p, std::uint64_t size, std::uint64_t salt, std::uint64_t stride = 4096) {
  auto base = reinterpret_cast<std::uint64_t>(p);
  const auto* bytes = static_cast<const unsigned char*>(p);
  if (size < 8) return check_pattern(p, size, salt) < 0;
  std::uint64_t w = 0;
  std::memcpy(&w, bytes + size - 8, 8);
  if (w != pattern_word(base, size, salt)) return false;
  for (std::uint64_t off = 0; off + 8 <= size; off += stride) {
    // The last word may overlap the final stamp; that one was checked above.
    if (off + 8 > size - 8) break;
    std::memcpy(&w, bytes + off, 8);
    if (w != pattern_word(base, off, salt)) return false;
  }
  return true;
}

// Every field of the one stats list, by name.
inline void expect_same_stats(const PoolStats& a, const PoolStats& b, const std::string& where) {
#define MEMD_EXPECT_SAME_STAT(name, unit, help) EXPECT_EQ(a.name, b.name) << where << ": " #name;
  MEMD_POOL_STAT_FIELDS(MEMD_EXPECT_SAME_STAT)
#undef MEMD_EXPECT_SAME_STAT
}

#define MEMD_ASSERT_OK(expr)                                         \
  do {                                                               \
    auto memd_ok_ = (expr);                                          \
    ASSERT_TRUE(memd_ok_.has_value()) << #expr << ": " << memd_ok_.error().message; \
  } while (0)

#define MEMD_EXPECT_OK(expr)                                         \
  do {                                                               \
    auto memd_ok_ = (expr);                                          \
    EXPECT_TRUE(memd_ok_.has_value()) << #expr << ": " << memd_ok_.error().message; \
  } while (0)

}  // namespace memd::alloc_test
