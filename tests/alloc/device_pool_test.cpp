// DevicePool on the host backend (host:0 and cpu are real RAM): sizes from
// 1 B to 300 MiB, alignment and disjointness against a model, contents kept
// across other allocations (address-derived patterns), footprint following
// live bytes and trim, out-of-memory with a valid pool after it, double and
// foreign frees, the huge path's cached range, Segments mode, stream-ordered
// reuse, and snapshots agreeing with stats.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "alloc/device_pool.hpp"
#include "alloc/reclaim_ladder.hpp"
#include "alloc_test_support.hpp"
#include "core/slab.hpp"

namespace memd {
namespace {

using alloc_test::check_pattern;
using alloc_test::expect_same_stats;
using alloc_test::fill_pattern;
using alloc_test::make_pool;
using alloc_test::PoolEnv;

constexpr std::uint64_t kPage = 2 * kMiB;

std::uint64_t addr(const void* p) { return reinterpret_cast<std::uint64_t>(p); }

// Whole-block patterns up to 1 MiB, a word every 4 KiB above (for tests whose
// subject is not the contents).
void stamp(void* p, std::uint64_t size, std::uint64_t salt) {
  if (size <= kMiB) fill_pattern(p, size, salt);
  else alloc_test::stamp_sparse(p, size, salt);
}
bool stamped(const void* p, std::uint64_t size, std::uint64_t salt) {
  return size <= kMiB ? check_pattern(p, size, salt) < 0 : alloc_test::check_sparse(p, size, salt);
}

// A model of live blocks: address → requested size. Inserting checks the
// 256-byte alignment and that the block overlaps no live neighbour.
class Model {
 public:
  void add(void* p, std::uint64_t size) {
    auto a = addr(p);
    EXPECT_EQ(a % 256, 0u) << "block of " << size << " at " << std::hex << a << " is not 256-byte aligned";
    auto next = live_.lower_bound(a);
    if (next != live_.end()) {
      EXPECT_LE(a + size, next->first) << "block of " << size << " at " << std::hex << a
                                       << " overlaps the live block at " << next->first;
    }
    if (next != live_.begin()) {
      auto prev = std::prev(next);
      EXPECT_LE(prev->first + prev->second, a) << "block at " << std::hex << a
                                               << " overlaps the live block at " << prev->first;
    }
    EXPECT_TRUE(live_.emplace(a, size).second) << "address handed out twice: " << std::hex << a;
  }
  std::uint64_t remove(void* p) {
    auto it = live_.find(addr(p));
    EXPECT_NE(it, live_.end());
    if (it == live_.end()) return 0;
    auto size = it->second;
    live_.erase(it);
    return size;
  }
  const std::map<std::uint64_t, std::uint64_t>& live() const { return live_; }
  std::uint64_t bytes() const {
    std::uint64_t b = 0;
    for (auto& [a, s] : live_) b += s;
    return b;
  }

 private:
  std::map<std::uint64_t, std::uint64_t> live_;
};

// ----- sizes, alignment, disjointness ----------------------------------------

TEST(DevicePool, AllocatesEverySizeClassAlignedAndDisjoint) {
  PoolEnv env = make_pool(1 * kGiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  const std::vector<std::uint64_t> sizes = {
      1,        2,         255,           256,           257,        511,       512,
      1000,     4095,      4096,          8191,          8192,       8193,      12345,
      65535,    65536,     65537,         100'000,       1 * kMiB,   kMiB + 1,  2 * kMiB - 1,
      2 * kMiB, 2 * kMiB + 1, 3 * kMiB + 17, 16 * kMiB, 64 * kMiB, 300 * kMiB};
  Model model;
  std::vector<void*> ptrs;
  for (auto size : sizes) {
    auto p = pool.allocate(size);
    ASSERT_TRUE(p) << size << ": " << p.error().message;
    model.add(*p, size);
    auto bs = pool.block_size(*p);
    ASSERT_TRUE(bs) << "block_size of a live block of " << size;
    EXPECT_GE(*bs, size);
    ptrs.push_back(*p);
    MEMD_ASSERT_OK(pool.validate());
  }
  // Touch the first and last byte of every block: all of it is mapped.
  for (auto [a, s] : model.live()) {
    auto* b = reinterpret_cast<unsigned char*>(a);
    b[0] = 0xA5;
    b[s - 1] = 0x5A;
  }
  auto st = pool.stats();
  EXPECT_EQ(st.live_allocations, sizes.size());
  EXPECT_EQ(st.total_allocations, sizes.size());
  EXPECT_GE(st.allocated_bytes, model.bytes());
  EXPECT_GE(st.reserved_bytes, model.bytes());
  // Free in a shuffled order; validate after each.
  std::mt19937_64 rng(7);
  std::shuffle(ptrs.begin(), ptrs.end(), rng);
  for (void* p : ptrs) {
    model.remove(p);
    MEMD_ASSERT_OK(pool.deallocate(p));
    EXPECT_FALSE(pool.block_size(p)) << "freed block still reported live";
    MEMD_ASSERT_OK(pool.validate());
  }
  st = pool.stats();
  EXPECT_EQ(st.live_allocations, 0u);
  EXPECT_EQ(st.allocated_bytes, 0u);
  EXPECT_EQ(st.total_frees, sizes.size());
}

TEST(DevicePool, RandomAllocFreeKeepsAModelAndValidates) {
  PoolEnv env = make_pool(512 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::mt19937_64 rng(42);
  Model model;
  std::vector<void*> live;
  auto pick_size = [&]() -> std::uint64_t {
    switch (rng() % 4) {
      case 0: return 1 + rng() % 512;
      case 1: return 1 + rng() % (8 * kKiB);
      case 2: return 8 * kKiB + rng() % (256 * kKiB);
      default: return 256 * kKiB + rng() % (4 * kMiB);
    }
  };
  for (int step = 0; step < 3000; ++step) {
    if (live.empty() || rng() % 100 < 55) {
      auto size = pick_size();
      auto p = pool.allocate(size);
      ASSERT_TRUE(p) << "step " << step << " size " << size << ": " << p.error().message;
      model.add(*p, size);
      live.push_back(*p);
    } else {
      std::size_t i = rng() % live.size();
      model.remove(live[i]);
      MEMD_ASSERT_OK(pool.deallocate(live[i]));
      live[i] = live.back();
      live.pop_back();
    }
    if (step % 25 == 0) {
      MEMD_ASSERT_OK(pool.validate());
      auto st = pool.stats();
      ASSERT_EQ(st.live_allocations, live.size());
      ASSERT_GE(st.allocated_bytes, model.bytes());
    }
  }
  for (void* p : live) MEMD_ASSERT_OK(pool.deallocate(p));
  MEMD_ASSERT_OK(pool.validate());
  EXPECT_EQ(pool.stats().allocated_bytes, 0u);
}

// ----- contents ------------------------------------------------------------

TEST(DevicePool, ContentsSurviveOtherAllocationsAndFrees) {
  PoolEnv env = make_pool(512 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::mt19937_64 rng(1234);
  std::map<std::uint64_t, std::uint64_t> live;  // address → size
  auto pick_size = [&]() -> std::uint64_t {
    switch (rng() % 3) {
      case 0: return 1 + rng() % (8 * kKiB);
      case 1: return 8 * kKiB + rng() % (512 * kKiB);
      default: return 512 * kKiB + rng() % (3 * kMiB);
    }
  };
  auto verify_all = [&](int step) {
    for (auto [a, s] : live) {
      auto bad = check_pattern(reinterpret_cast<void*>(a), s, 0);
      ASSERT_LT(bad, 0) << "step " << step << ": block of " << s << " at " << std::hex << a
                        << " corrupted at byte " << std::dec << bad;
    }
  };
  for (int step = 0; step < 600; ++step) {
    if (live.empty() || rng() % 100 < 60) {
      auto size = pick_size();
      auto p = pool.allocate(size);
      ASSERT_TRUE(p) << p.error().message;
      fill_pattern(*p, size, 0);
      live.emplace(addr(*p), size);
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      // Scribble over the block before freeing it: a neighbour that shared
      // its bytes would be caught by the next verification.
      std::memset(reinterpret_cast<void*>(it->first), 0xEE, it->second);
      MEMD_ASSERT_OK(pool.deallocate(reinterpret_cast<void*>(it->first)));
      live.erase(it);
    }
    if (step % 100 == 0) {
      verify_all(step);
      if (HasFatalFailure()) return;
    }
    // A trim in the middle unmaps free pages; live pages must keep their bytes.
    if (step == 300) pool.trim();
  }
  verify_all(600);
  MEMD_ASSERT_OK(pool.validate());
}

// ----- footprint -------------------------------------------------------------

TEST(DevicePool, FootprintFollowsLiveBytesAndTrimReturnsIt) {
  PoolEnv env = make_pool(1 * kGiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  const double retain = pool.options().retain_fraction;
  constexpr std::uint64_t kLive = 200 * kMiB;
  std::vector<void*> blocks;
  for (std::uint64_t done = 0; done < kLive; done += kMiB) {
    auto p = pool.allocate(kMiB);
    ASSERT_TRUE(p) << p.error().message;
    blocks.push_back(*p);
  }
  auto st = pool.stats();
  EXPECT_GE(st.reserved_bytes, kLive);
  EXPECT_LE(st.reserved_bytes, kLive + 4 * kPage) << "footprint after allocating " << kLive;
  EXPECT_EQ(st.reserved_bytes, pool.reserved_bytes());
  EXPECT_EQ(st.reserved_bytes, env.backend->physical_bytes(DeviceId::host(0)));
  const std::uint64_t peak = st.reserved_bytes;
  const auto bound = [&] { return static_cast<std::uint64_t>(static_cast<double>(peak) * (1 + retain)) + 4 * kPage; };

  // Free every other block: no live byte moves, footprint stays bounded.
  for (std::size_t i = 0; i < blocks.size(); i += 2) MEMD_ASSERT_OK(pool.deallocate(blocks[i]));
  EXPECT_LE(pool.reserved_bytes(), bound());
  // Re-allocating the same shape is served from the holes: no growth, and no
  // backend calls (steady workloads never pay for mapping).
  auto calls = pool.stats().device_calls;
  for (std::size_t i = 0; i < blocks.size(); i += 2) {
    auto p = pool.allocate(kMiB);
    ASSERT_TRUE(p) << p.error().message;
    blocks[i] = *p;
  }
  EXPECT_LE(pool.reserved_bytes(), bound());
  EXPECT_EQ(pool.stats().device_calls, calls) << "refilling holes below the peak called the backend";

  for (void* p : blocks) MEMD_ASSERT_OK(pool.deallocate(p));
  st = pool.stats();
  EXPECT_LE(st.reserved_bytes, bound());
  EXPECT_GE(st.peak_reserved_bytes, peak);
  MEMD_ASSERT_OK(pool.validate());

  auto released = pool.trim();
  EXPECT_GT(released, 0u);
  EXPECT_EQ(pool.reserved_bytes(), 0u) << "trim with nothing live left pages mapped";
  EXPECT_EQ(env.backend->physical_bytes(DeviceId::host(0)), 0u);
  MEMD_ASSERT_OK(pool.validate());

  // A smaller working set after the peak: the footprint follows it down once
  // the old peak's slack is trimmed.
  std::vector<void*> small;
  for (int i = 0; i < 20; ++i) {
    auto p = pool.allocate(kMiB);
    ASSERT_TRUE(p);
    small.push_back(*p);
  }
  EXPECT_LE(pool.reserved_bytes(), 20 * kMiB + 2 * kPage);
  for (void* p : small) MEMD_ASSERT_OK(pool.deallocate(p));
  pool.trim();
  EXPECT_EQ(pool.reserved_bytes(), 0u);
}

TEST(DevicePool, SmallBlocksShareSpansAndTrimReleasesThem) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::vector<void*> ptrs;
  for (int i = 0; i < 4096; ++i) {  // 4096 × 256 B = 1 MiB of slots
    auto p = pool.allocate(200);
    ASSERT_TRUE(p) << i << ": " << p.error().message;
    ptrs.push_back(*p);
  }
  // All of it fits in one page: slabs pack small blocks.
  EXPECT_LE(pool.reserved_bytes(), kPage);
  for (void* p : ptrs) MEMD_ASSERT_OK(pool.deallocate(p));
  MEMD_ASSERT_OK(pool.validate());
  pool.trim();
  EXPECT_EQ(pool.reserved_bytes(), 0u);
  EXPECT_EQ(pool.stats().active_bytes, 0u) << "empty slab spans survived trim";
  MEMD_ASSERT_OK(pool.validate());
}

// ----- out of memory ----------------------------------------------------------

TEST(DevicePool, OutOfMemoryCarriesNumbersAndLeavesThePoolValid) {
  PoolEnv env = make_pool(64 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(40 * kMiB);
  ASSERT_TRUE(a);
  fill_pattern(*a, 40 * kMiB, 1);
  auto b = pool.allocate(300);
  ASSERT_TRUE(b);
  fill_pattern(*b, 300, 2);
  auto before = pool.stats();

  auto big = pool.allocate(32 * kMiB);
  ASSERT_FALSE(big) << "32 MiB fit next to 40 MiB on a 64 MiB device";
  EXPECT_EQ(big.error().code, ErrorCode::out_of_memory);
  EXPECT_NE(big.error().message.find("32.0 MiB"), std::string::npos) << big.error().message;
  EXPECT_NE(big.error().message.find("host:0"), std::string::npos) << big.error().message;
  MEMD_ASSERT_OK(pool.validate());

  auto over = pool.allocate(65 * kMiB);
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code, ErrorCode::out_of_memory);
  EXPECT_NE(over.error().message.find("65.0 MiB"), std::string::npos) << over.error().message;
  EXPECT_NE(over.error().message.find("64.0 MiB"), std::string::npos) << over.error().message;
  MEMD_ASSERT_OK(pool.validate());

  auto after = pool.stats();
  EXPECT_EQ(after.failed_allocations, before.failed_allocations + 2);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.live_allocations, before.live_allocations);
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  EXPECT_LT(check_pattern(*a, 40 * kMiB, 1), 0);
  EXPECT_LT(check_pattern(*b, 300, 2), 0);

  // Later allocations still work: what fits, and the big one once room is made.
  auto c = pool.allocate(16 * kMiB);
  ASSERT_TRUE(c) << c.error().message;
  MEMD_ASSERT_OK(pool.deallocate(*c));
  MEMD_ASSERT_OK(pool.deallocate(*a));
  big = pool.allocate(32 * kMiB);
  ASSERT_TRUE(big) << big.error().message;
  fill_pattern(*big, 32 * kMiB, 3);
  EXPECT_LT(check_pattern(*big, 32 * kMiB, 3), 0);
  EXPECT_LT(check_pattern(*b, 300, 2), 0);
  MEMD_ASSERT_OK(pool.validate());
}

// Two pools share one 64 MiB device: the second has address space but the
// device has no pages left, so the failure comes from map() and must roll back.
TEST(DevicePool, MapFailureRollsBackAndThePoolRecovers) {
  auto catalog = alloc_test::host_catalog(64 * kMiB);
  ASSERT_TRUE(catalog);
  auto backend = catalog->backend_for(DeviceId::host(0), MemoryType::VRAM);
  ASSERT_TRUE(backend);
  auto first = DevicePool::create(**backend, PoolOptions{});
  auto second = DevicePool::create(**backend, PoolOptions{});
  ASSERT_TRUE(first && second);
  auto a = (*first)->allocate(48 * kMiB);
  ASSERT_TRUE(a) << a.error().message;
  auto small = (*second)->allocate(kMiB);
  ASSERT_TRUE(small) << small.error().message;
  fill_pattern(*small, kMiB, 9);
  auto before = (*second)->stats();

  auto b = (*second)->allocate(24 * kMiB);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, ErrorCode::out_of_memory) << b.error().message;
  EXPECT_NE(b.error().message.find("24.0 MiB"), std::string::npos) << b.error().message;
  MEMD_ASSERT_OK((*second)->validate());
  auto after = (*second)->stats();
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes) << "pages mapped for the failed block were kept";
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.failed_allocations, before.failed_allocations + 1);
  EXPECT_EQ((*first)->reserved_bytes() + (*second)->reserved_bytes(), (*backend)->physical_bytes(DeviceId::host(0)));
  EXPECT_LT(check_pattern(*small, kMiB, 9), 0);

  MEMD_ASSERT_OK((*first)->deallocate(*a));
  (*first)->trim();
  b = (*second)->allocate(24 * kMiB);
  ASSERT_TRUE(b) << b.error().message;
  fill_pattern(*b, 24 * kMiB, 10);
  EXPECT_LT(check_pattern(*b, 24 * kMiB, 10), 0);
  EXPECT_LT(check_pattern(*small, kMiB, 9), 0);
  MEMD_ASSERT_OK((*second)->validate());
}

// ----- bad frees -----------------------------------------------------------

TEST(DevicePool, DoubleAndForeignFreesAreRejectedAndChangeNothing) {
  PoolEnv env = make_pool(256 * kMiB, PoolOptions{.huge_threshold = 32 * kMiB});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto small = pool.allocate(100);
  auto large = pool.allocate(3 * kMiB);
  auto huge = pool.allocate(40 * kMiB);
  auto gone = pool.allocate(1000);
  ASSERT_TRUE(small && large && huge && gone);
  MEMD_ASSERT_OK(pool.deallocate(*gone));
  auto before = pool.stats();

  int on_stack = 0;
  std::vector<char> heap(4096);
  const std::vector<std::pair<const char*, void*>> bad = {
      {"double free", *gone},
      {"nullptr", nullptr},
      {"inside a slab slot", static_cast<char*>(*small) + 16},
      {"next slab slot (never handed out)", static_cast<char*>(*small) + 256},
      {"inside a large block", static_cast<char*>(*large) + 256},
      {"inside a huge range", static_cast<char*>(*huge) + kPage},
      {"a stack address", &on_stack},
      {"a heap address", heap.data()},
      {"the slab span base rounded down", reinterpret_cast<void*>(addr(*small) & ~(SlabAllocator::kSpanSize - 1))},
  };
  for (const auto& [what, p] : bad) {
    if (p == *small) continue;  // the span base may be the slot itself
    auto r = pool.deallocate(p);
    ASSERT_FALSE(r) << what << " was accepted";
    EXPECT_EQ(r.error().code, ErrorCode::invalid_argument) << what;
    expect_same_stats(before, pool.stats(), what);
    MEMD_ASSERT_OK(pool.validate());
  }
  EXPECT_TRUE(pool.block_size(*small));
  EXPECT_TRUE(pool.block_size(*large));
  EXPECT_TRUE(pool.block_size(*huge));
  MEMD_ASSERT_OK(pool.deallocate(*small));
  MEMD_ASSERT_OK(pool.deallocate(*large));
  MEMD_ASSERT_OK(pool.deallocate(*huge));
  for (void* p : {*small, *large, *huge}) {
    auto again = pool.deallocate(p);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code, ErrorCode::invalid_argument);
  }
  MEMD_ASSERT_OK(pool.validate());
  EXPECT_EQ(pool.stats().live_allocations, 0u);
}

// ----- huge ------------------------------------------------------------------

// Where good fit would need pages mapped, a mapped hole elsewhere is used
// instead: each map is a driver call costing tens of microseconds on CUDA.
TEST(DevicePool, PlacementPrefersAMappedHoleOverMapping) {
  PoolEnv env = make_pool(512 * kMiB, PoolOptions{.retain_fraction = 10, .map_ahead_max = 0});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  // [a 16 MiB][b 2 MiB][c 8 MiB][d 2 MiB][tail], each on pages of its own so
  // each hole's pages can be unmapped.
  auto a = pool.allocate(16 * kMiB), b = pool.allocate(2 * kMiB), c = pool.allocate(8 * kMiB),
       d = pool.allocate(2 * kMiB);
  ASSERT_TRUE(a && b && c && d);
  MEMD_ASSERT_OK(pool.deallocate(*a));
  MEMD_ASSERT_OK(pool.deallocate(*c));
  pool.trim();  // both holes unmapped
  auto a2 = pool.allocate(16 * kMiB);  // maps a's hole again
  ASSERT_TRUE(a2);
  EXPECT_EQ(*a2, *a);
  MEMD_ASSERT_OK(pool.deallocate(*a2));
  // Now: a's hole mapped (16 MiB), c's hole unmapped (8 MiB). Good fit picks
  // c's hole for 6 MiB; placement must take a's mapped pages instead.
  const auto before = pool.stats();
  auto e = pool.allocate(6 * kMiB);
  ASSERT_TRUE(e);
  const auto after = pool.stats();
  EXPECT_EQ(after.map_calls, before.map_calls) << "mapped when a mapped hole could hold the block";
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
  auto ea = reinterpret_cast<std::uintptr_t>(*e), aa = reinterpret_cast<std::uintptr_t>(*a);
  EXPECT_TRUE(ea >= aa && ea + 6 * kMiB <= aa + 16 * kMiB) << "not inside the mapped hole";
  MEMD_ASSERT_OK(pool.validate());
  // With no mapped hole that fits, it maps (and stays valid).
  auto f = pool.allocate(24 * kMiB);
  ASSERT_TRUE(f);
  EXPECT_GT(pool.stats().map_calls, after.map_calls);
  for (void* p : {*b, *d, *e, *f}) MEMD_ASSERT_OK(pool.deallocate(p));
  MEMD_ASSERT_OK(pool.validate());
}

// Small blocks allocated one after another (a model's tensors) at the end of
// mapped memory share map calls: growth maps idle pages ahead of them.
TEST(DevicePool, GrowthMapsAheadForSmallBlocksWithinTheBudget) {
  auto map_calls_for = [](std::uint64_t ahead) {
    PoolEnv env = make_pool(2 * kGiB, PoolOptions{.retain_fraction = 0.1, .map_ahead_max = ahead});
    EXPECT_TRUE(env.pool);
    auto& pool = *env.pool;
    std::vector<void*> blocks;
    for (int i = 0; i < 400; ++i) {  // 400 x 1.5 MiB = 600 MiB
      auto p = pool.allocate(3 * kMiB / 2);
      EXPECT_TRUE(p);
      if (p) blocks.push_back(*p);
    }
    auto st = pool.stats();
    // Slack mapped ahead stays within retain_fraction of the busy bytes.
    EXPECT_LE(st.reserved_bytes, static_cast<std::uint64_t>(1.1 * 600 * kMiB) + kPage);
    EXPECT_TRUE(pool.validate());
    for (void* p : blocks) EXPECT_TRUE(pool.deallocate(p));
    return st.map_calls;
  };
  const auto without = map_calls_for(0);
  const auto with = map_calls_for(32 * kMiB);
  EXPECT_GE(without, 250u);  // ~one per block (2 MiB pages, 1.5 MiB blocks)
  EXPECT_LE(with * 4, without) << "mapping ahead saved too few calls: " << with << " vs " << without;
}

// Virtual mode has no separate huge path: a 1 GiB block lives in the arena,
// and once freed its pages serve blocks of other sizes without mapping.
TEST(DevicePool, HugeBlocksShareTheArenaInVirtualMode) {
  PoolEnv env = make_pool(2 * kGiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto big = pool.allocate(kGiB);
  ASSERT_TRUE(big);
  for (const auto& seg : pool.snapshot()) EXPECT_EQ(seg.kind, "arena");
  MEMD_ASSERT_OK(pool.deallocate(*big));
  const auto calls = pool.stats().map_calls;
  auto half = pool.allocate(512 * kMiB);
  auto quarter = pool.allocate(256 * kMiB);
  ASSERT_TRUE(half && quarter);
  EXPECT_EQ(pool.stats().map_calls, calls) << "the freed 1 GiB was not reused";
  MEMD_ASSERT_OK(pool.deallocate(*half));
  MEMD_ASSERT_OK(pool.deallocate(*quarter));
  MEMD_ASSERT_OK(pool.validate());
}

// A freed large block is kept whole for an immediate re-allocation of its
// size; to every other caller it is simply free.
TEST(DevicePool, LastFreedLargeBlockIsReusedAndOtherwiseFree) {
  PoolEnv env = make_pool(1 * kGiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(100 * kMiB);
  ASSERT_TRUE(a);
  fill_pattern(*a, 100 * kMiB, 3);
  MEMD_ASSERT_OK(pool.deallocate(*a));
  // Freed means freed: a second free and a size query refuse it.
  auto again = pool.deallocate(*a);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::invalid_argument);
  EXPECT_FALSE(pool.block_size(*a).has_value());
  EXPECT_EQ(pool.stats().allocated_bytes, 0u);
  EXPECT_EQ(pool.stats().live_allocations, 0u);
  // The same size comes back at the same address without mapping.
  const auto calls = pool.stats().map_calls;
  auto b = pool.allocate(100 * kMiB);
  ASSERT_TRUE(b);
  EXPECT_EQ(*b, *a);
  EXPECT_EQ(pool.stats().map_calls, calls);
  EXPECT_EQ(pool.block_size(*b), std::optional<std::uint64_t>(100 * kMiB));
  MEMD_ASSERT_OK(pool.deallocate(*b));
  // Another size: the kept block goes back to TLSF first, so the new block
  // can take its place (good fit over the freed hole).
  auto c = pool.allocate(60 * kMiB);
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, *a) << "the kept block was not returned before placing another";
  MEMD_ASSERT_OK(pool.validate());
  MEMD_ASSERT_OK(pool.deallocate(*c));
  // Trim gives everything back, the kept block included.
  pool.trim();
  EXPECT_EQ(pool.reserved_bytes(), 0u);
  MEMD_ASSERT_OK(pool.validate());
}

TEST(DevicePool, HugeRangeIsCachedReusedAndTrimmed) {
  PoolEnv env = make_pool(512 * kMiB, PoolOptions{.huge_threshold = 32 * kMiB});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto p = pool.allocate(40 * kMiB);
  ASSERT_TRUE(p) << p.error().message;
  fill_pattern(*p, 40 * kMiB, 5);
  EXPECT_LT(check_pattern(*p, 40 * kMiB, 5), 0);
  auto st = pool.stats();
  EXPECT_EQ(st.segments, 2u) << "arena + one huge range";
  EXPECT_EQ(st.reserved_bytes, 40 * kMiB);
  EXPECT_EQ(pool.block_size(*p), 40 * kMiB);

  MEMD_ASSERT_OK(pool.deallocate(*p));
  EXPECT_EQ(pool.reserved_bytes(), 40 * kMiB) << "the freed huge range was not kept for reuse";
  auto calls = pool.stats().device_calls;
  auto q = pool.allocate(40 * kMiB);
  ASSERT_TRUE(q);
  EXPECT_EQ(*q, *p) << "the cached huge range was not reused";
  EXPECT_EQ(pool.stats().device_calls, calls) << "reusing the cached range called the backend";
  MEMD_ASSERT_OK(pool.deallocate(*q));
  // A slightly smaller request fits the cached range too.
  auto r = pool.allocate(38 * kMiB + 5);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, *p);
  fill_pattern(*r, 38 * kMiB + 5, 6);
  EXPECT_LT(check_pattern(*r, 38 * kMiB + 5, 6), 0);
  MEMD_ASSERT_OK(pool.validate());
  MEMD_ASSERT_OK(pool.deallocate(*r));
  MEMD_ASSERT_OK(pool.validate());

  pool.trim();
  st = pool.stats();
  EXPECT_EQ(st.reserved_bytes, 0u);
  EXPECT_EQ(st.segments, 1u) << "trim kept the cached huge range";
  EXPECT_EQ(env.backend->physical_bytes(DeviceId::host(0)), 0u);
  auto again = pool.allocate(40 * kMiB);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(pool.reserved_bytes(), 40 * kMiB);
  MEMD_ASSERT_OK(pool.deallocate(*again));
  MEMD_ASSERT_OK(pool.validate());
}

TEST(DevicePool, CachedHugeRangesAreGivenBackUnderPressure) {
  PoolEnv env = make_pool(128 * kMiB, PoolOptions{.huge_threshold = 32 * kMiB});
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto p = pool.allocate(80 * kMiB);
  ASSERT_TRUE(p);
  MEMD_ASSERT_OK(pool.deallocate(*p));
  EXPECT_EQ(pool.reserved_bytes(), 80 * kMiB);
  // 64 MiB does not fit the cached 80 MiB range (too wasteful) and the device
  // has 48 MiB left: the cached range must go for it.
  auto q = pool.allocate(64 * kMiB);
  ASSERT_TRUE(q) << q.error().message;
  EXPECT_LE(pool.reserved_bytes(), 64 * kMiB + kPage);
  fill_pattern(*q, 64 * kMiB, 1);
  EXPECT_LT(check_pattern(*q, 64 * kMiB, 1), 0);
  MEMD_ASSERT_OK(pool.validate());
  MEMD_ASSERT_OK(pool.deallocate(*q));
}

// ----- Segments mode -----------------------------------------------------------

class SegmentsMode : public ::testing::TestWithParam<std::pair<DeviceId, MemoryType>> {};

TEST_P(SegmentsMode, AllocatesKeepsContentsAndTrimReleasesEmptySegments) {
  auto [device, type] = GetParam();
  PoolOptions options;
  options.device = device;
  options.memory_type = type;
  options.mode = PoolMode::Segments;
  options.segment_size = 8 * kMiB;
  options.huge_threshold = 32 * kMiB;
  PoolEnv env = make_pool(512 * kMiB, options);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  std::mt19937_64 rng(99);
  Model model;
  std::map<std::uint64_t, std::uint64_t> live;
  const std::vector<std::uint64_t> sizes = {1, 300, 8 * kKiB, 100 * kKiB, kMiB, 3 * kMiB + 1, 9 * kMiB, 34 * kMiB};
  for (int round = 0; round < 4; ++round) {
    for (auto size : sizes) {
      auto p = pool.allocate(size);
      ASSERT_TRUE(p) << size << ": " << p.error().message;
      model.add(*p, size);
      stamp(*p, size, static_cast<std::uint64_t>(round));
      live.emplace(addr(*p), size);
    }
    MEMD_ASSERT_OK(pool.validate());
    // Free about half.
    for (auto it = live.begin(); it != live.end();) {
      if (rng() % 2) {
        model.remove(reinterpret_cast<void*>(it->first));
        MEMD_ASSERT_OK(pool.deallocate(reinterpret_cast<void*>(it->first)));
        it = live.erase(it);
      } else {
        ++it;
      }
    }
  }
  EXPECT_GT(pool.stats().segments, 1u);
  EXPECT_EQ(pool.reserved_bytes(), env.backend->physical_bytes(device));
  // Content check uses the salt recorded by round; recompute by trying all.
  for (auto [a, s] : live) {
    bool ok = false;
    for (int round = 0; round < 4 && !ok; ++round) ok = stamped(reinterpret_cast<void*>(a), s, static_cast<std::uint64_t>(round));
    EXPECT_TRUE(ok) << "block of " << s << " at " << std::hex << a << " lost its bytes";
  }
  for (auto [a, s] : live) MEMD_ASSERT_OK(pool.deallocate(reinterpret_cast<void*>(a)));
  MEMD_ASSERT_OK(pool.validate());
  auto held = pool.reserved_bytes();
  EXPECT_GT(held, 0u);
  auto released = pool.trim();
  EXPECT_GE(released, held);
  EXPECT_EQ(pool.reserved_bytes(), 0u) << "trim kept empty segments";
  EXPECT_EQ(pool.stats().segments, 0u);
  EXPECT_EQ(env.backend->physical_bytes(device), 0u);
  MEMD_ASSERT_OK(pool.validate());
  auto p = pool.allocate(5 * kMiB);
  ASSERT_TRUE(p) << p.error().message;
  MEMD_ASSERT_OK(pool.deallocate(*p));
}

INSTANTIATE_TEST_SUITE_P(HostAndCpu, SegmentsMode,
                         ::testing::Values(std::pair{DeviceId::host(0), MemoryType::VRAM},
                                           std::pair{DeviceId::cpu(), MemoryType::RAM}),
                         [](const auto& p) { return p.param.first.kind() == DeviceKind::Cpu ? "cpu" : "host0"; });

TEST(DevicePool, SegmentsModeOutOfMemoryLeavesPoolValid) {
  PoolOptions options;
  options.mode = PoolMode::Segments;
  options.segment_size = 16 * kMiB;
  PoolEnv env = make_pool(64 * kMiB, options);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(40 * kMiB);
  ASSERT_TRUE(a) << a.error().message;
  auto before = pool.stats();
  auto b = pool.allocate(30 * kMiB);
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code, ErrorCode::out_of_memory) << b.error().message;
  MEMD_ASSERT_OK(pool.validate());
  EXPECT_EQ(pool.stats().allocated_bytes, before.allocated_bytes);
  MEMD_ASSERT_OK(pool.deallocate(*a));
  // 50 MiB does not fit the now empty 42 MiB segment, and the device cannot
  // hold both: the pool says so once, and the ladder's trim gives the empty
  // segment back for the new one.
  b = pool.allocate(50 * kMiB);
  ASSERT_FALSE(b) << "the pool retried by itself";
  MEMD_ASSERT_OK(pool.validate());
  ReclaimLadder ladder;
  b = ladder.allocate(pool, 50 * kMiB);
  ASSERT_TRUE(b) << "an empty segment blocked a request that fits the device: " << b.error().message;
  EXPECT_EQ(ladder.counts().trim_retries, 1u);
  EXPECT_LE(pool.reserved_bytes(), 52 * kMiB);
  MEMD_ASSERT_OK(pool.deallocate(*b));
  MEMD_ASSERT_OK(pool.validate());
}

// ----- stream-ordered reuse --------------------------------------------------

PoolOptions without_home(PoolOptions o) {
  o.home_stream = false;
  return o;
}

struct StreamPool {
  PoolEnv env;
  Stream s1, s2;
  // Home mode off: these tests are of the pending rules every stream
  // follows once a pool has seen two (DevicePoolHomeStream tests home mode).
  explicit StreamPool(PoolOptions options = {}, bool home = false)
      : env(make_pool(512 * kMiB, home ? options : without_home(options))) {
    if (!env.pool) return;
    auto a = env.backend->create_stream(DeviceId::host(0));
    auto b = env.backend->create_stream(DeviceId::host(0));
    EXPECT_TRUE(a && b);
    if (a) s1 = *a;
    if (b) s2 = *b;
  }
  ~StreamPool() {
    if (!env.pool) return;
    env.pool.reset();  // waits for fenced frees before the streams go
    (void)env.backend->destroy_stream(s1);
    (void)env.backend->destroy_stream(s2);
  }
};

// Home mode: the first stream's frees serve it at once for any size (the
// pool does not grow while the host runs ahead); the host and other streams
// wait for it first; the second stream ends home mode.
TEST(DevicePoolHomeStream, FreesOnTheFirstStreamServeAnySizeWithoutGrowing) {
  for (bool home : {true, false}) {
    StreamPool sp({}, home);
    ASSERT_TRUE(sp.env.pool);
    auto& pool = *sp.env.pool;
    auto a = pool.allocate(6 * kMiB, sp.s1);
    ASSERT_TRUE(a);
    MEMD_ASSERT_OK(pool.deallocate(*a, sp.s1));
    const auto reserved = pool.reserved_bytes();
    auto b = pool.allocate(5 * kMiB, sp.s1);  // another size: pending blocks would not serve it
    ASSERT_TRUE(b);
    if (home) {
      EXPECT_EQ(pool.reserved_bytes(), reserved) << "the home stream's free did not serve its next allocation";
      EXPECT_EQ(*b, *a);
      EXPECT_EQ(pool.counters().stream_syncs, 0u);
    } else {
      EXPECT_GT(pool.reserved_bytes(), reserved) << "without home mode a pending block served another size";
    }
    MEMD_ASSERT_OK(pool.deallocate(*b, sp.s1));
    MEMD_ASSERT_OK(pool.validate());
  }
}

TEST(DevicePoolHomeStream, TheHostAndOtherStreamsWaitForTheHomeStream) {
  StreamPool sp({}, /*home=*/true);
  ASSERT_TRUE(sp.env.pool);
  auto& pool = *sp.env.pool;
  auto a = pool.allocate(kMiB, sp.s1);
  ASSERT_TRUE(a);
  MEMD_ASSERT_OK(pool.deallocate(*a, sp.s1));
  EXPECT_TRUE(pool.block_size(*a) == std::nullopt);
  auto host = pool.allocate(kMiB);  // may get the home stream's block: only after waiting for it
  ASSERT_TRUE(host);
  EXPECT_EQ(pool.counters().stream_syncs, 1u);
  auto host2 = pool.allocate(kMiB);  // nothing freed since: no second wait
  ASSERT_TRUE(host2);
  EXPECT_EQ(pool.counters().stream_syncs, 1u);
  MEMD_ASSERT_OK(pool.deallocate(*host));
  MEMD_ASSERT_OK(pool.deallocate(*host2));

  // A second stream ends home mode: one wait (the home stream freed since),
  // then the first stream's frees are pending for others again.
  auto c = pool.allocate(kMiB, sp.s1);
  ASSERT_TRUE(c);
  MEMD_ASSERT_OK(pool.deallocate(*c, sp.s1));
  auto other = pool.allocate(kMiB, sp.s2);
  ASSERT_TRUE(other);
  EXPECT_EQ(pool.counters().stream_syncs, 2u);
  auto d = pool.allocate(kMiB, sp.s1);
  ASSERT_TRUE(d);
  MEMD_ASSERT_OK(pool.deallocate(*d, sp.s1));
  EXPECT_TRUE(pool.block_size(*d) == std::nullopt);
  auto other2 = pool.allocate(kMiB, sp.s2);
  ASSERT_TRUE(other2);
  EXPECT_NE(*other2, *d) << "after home mode ended another stream got a block whose free is pending";
  MEMD_ASSERT_OK(pool.deallocate(*other, sp.s2));
  MEMD_ASSERT_OK(pool.deallocate(*other2, sp.s2));
  MEMD_ASSERT_OK(pool.validate());
}

TEST(DevicePoolStreams, SameStreamReusesAtOnceOtherStreamsWait) {
  StreamPool sp;
  ASSERT_TRUE(sp.env.pool);
  auto& pool = *sp.env.pool;
  auto a = pool.allocate(kMiB);
  auto p = pool.allocate(kMiB, sp.s1);
  auto b = pool.allocate(kMiB);
  ASSERT_TRUE(a && p && b);

  MEMD_ASSERT_OK(pool.deallocate(*p, sp.s1));
  EXPECT_FALSE(pool.block_size(*p)) << "a pending block reads as live";
  MEMD_ASSERT_OK(pool.validate());
  auto again = pool.allocate(kMiB, sp.s1);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *p) << "same-stream reuse did not return the block freed on that stream";
  MEMD_ASSERT_OK(pool.validate());

  MEMD_ASSERT_OK(pool.deallocate(*again, sp.s1));
  auto other = pool.allocate(kMiB, sp.s2);
  ASSERT_TRUE(other);
  EXPECT_NE(*other, *p) << "another stream got a block whose free is still pending";
  auto plain = pool.allocate(kMiB);
  ASSERT_TRUE(plain);
  EXPECT_NE(*plain, *p) << "a stream-less allocation got a pending block";
  MEMD_ASSERT_OK(pool.validate());

  // Double free of a pending block, on any path.
  auto d1 = pool.deallocate(*p, sp.s1);
  ASSERT_FALSE(d1);
  EXPECT_EQ(d1.error().code, ErrorCode::invalid_argument);
  auto d2 = pool.deallocate(*p, sp.s2);
  ASSERT_FALSE(d2);
  EXPECT_EQ(d2.error().code, ErrorCode::invalid_argument);
  auto d3 = pool.deallocate(*p);
  ASSERT_FALSE(d3);
  EXPECT_EQ(d3.error().code, ErrorCode::invalid_argument);
  MEMD_ASSERT_OK(pool.validate());

  // trim waits for the pending free; then anyone may have the memory.
  MEMD_ASSERT_OK(pool.deallocate(*other));
  MEMD_ASSERT_OK(pool.deallocate(*plain));
  pool.trim();
  MEMD_ASSERT_OK(pool.validate());
  for (const auto& seg : pool.snapshot())
    for (const auto& blk : seg.blocks) EXPECT_NE(blk.state, "pending") << "pending block survived trim";
  auto reused = pool.allocate(kMiB, sp.s2);
  ASSERT_TRUE(reused);
  EXPECT_EQ(*reused, *p) << "the exact-fit hole left by the drained free was not reused";
  MEMD_ASSERT_OK(pool.deallocate(*reused, sp.s2));
  MEMD_ASSERT_OK(pool.deallocate(*a));
  MEMD_ASSERT_OK(pool.deallocate(*b));
  pool.trim();
  MEMD_ASSERT_OK(pool.validate());
  EXPECT_EQ(pool.stats().live_allocations, 0u);
  EXPECT_EQ(pool.reserved_bytes(), 0u);
}

TEST(DevicePoolStreams, OtherStreamsReuseOnlyAfterTheEventCompletes) {
  StreamPool sp(PoolOptions{.stream_batch = 1});  // fence every free
  ASSERT_TRUE(sp.env.pool);
  auto& pool = *sp.env.pool;
  auto& backend = *sp.env.backend;
  auto work = pool.allocate(64 * kMiB);
  auto a = pool.allocate(kMiB);
  auto p = pool.allocate(kMiB, sp.s1);
  auto b = pool.allocate(kMiB);
  ASSERT_TRUE(work && a && p && b);
  // Keep s1 busy (1 GiB of fills) so the event recorded at the free is not
  // complete when s2 asks.
  for (int i = 0; i < 16; ++i) MEMD_ASSERT_OK(backend.fill(*work, static_cast<std::uint8_t>(i), 64 * kMiB, sp.s1));
  MEMD_ASSERT_OK(pool.deallocate(*p, sp.s1));
  auto early = pool.allocate(kMiB, sp.s2);
  ASSERT_TRUE(early);
  EXPECT_NE(*early, *p) << "s2 reused a block before s1's event completed";
  MEMD_ASSERT_OK(pool.deallocate(*early));
  MEMD_ASSERT_OK(backend.synchronize(sp.s1));
  // The event is complete: the next allocation on any stream drains it.
  auto late = pool.allocate(kMiB, sp.s2);
  ASSERT_TRUE(late);
  EXPECT_EQ(*late, *p) << "after the event completed the block was still withheld";
  auto* w = static_cast<unsigned char*>(*work);
  EXPECT_EQ(w[0], 15);
  EXPECT_EQ(w[64 * kMiB - 1], 15);
  MEMD_ASSERT_OK(pool.validate());
  for (void* q : {*late, *work, *a, *b}) MEMD_ASSERT_OK(pool.deallocate(q));
  MEMD_ASSERT_OK(pool.validate());
}

TEST(DevicePoolStreams, PendingBlocksAreUsedBeforeFailingForMemory) {
  // (With home mode the host's allocation would wait for the stream and
  // succeed at once: DevicePoolHomeStream.)
  PoolEnv env = make_pool(64 * kMiB, without_home({}));
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto s = env.backend->create_stream(DeviceId::host(0));
  ASSERT_TRUE(s);
  auto p = pool.allocate(48 * kMiB, *s);
  ASSERT_TRUE(p);
  MEMD_ASSERT_OK(pool.deallocate(*p, *s));
  // Another stream needs the space: the pool answers out of memory once, and
  // the ladder's trim waits for the pending free rather than fail.
  auto q = pool.allocate(40 * kMiB);
  ASSERT_FALSE(q) << "the pool retried by itself";
  EXPECT_EQ(q.error().code, ErrorCode::out_of_memory);
  ReclaimLadder ladder;
  q = ladder.allocate(pool, 40 * kMiB);
  ASSERT_TRUE(q) << q.error().message;
  EXPECT_EQ(ladder.counts().trim_retries, 1u);
  MEMD_ASSERT_OK(pool.validate());
  MEMD_ASSERT_OK(pool.deallocate(*q));
  env.pool.reset();
  (void)env.backend->destroy_stream(*s);
}

TEST(DevicePoolStreams, SmallAndHugeBlocksFollowTheSameRules) {
  StreamPool sp(PoolOptions{.huge_threshold = 32 * kMiB});
  ASSERT_TRUE(sp.env.pool);
  auto& pool = *sp.env.pool;
  for (std::uint64_t size : {std::uint64_t{100}, std::uint64_t{8000}, 40 * kMiB}) {
    auto p = pool.allocate(size, sp.s1);
    ASSERT_TRUE(p) << size;
    MEMD_ASSERT_OK(pool.deallocate(*p, sp.s1));
    auto other = pool.allocate(size, sp.s2);
    ASSERT_TRUE(other) << size;
    EXPECT_NE(*other, *p) << size << ": other stream got a pending block";
    auto same = pool.allocate(size, sp.s1);
    ASSERT_TRUE(same) << size;
    EXPECT_EQ(*same, *p) << size << ": same-stream reuse missed";
    MEMD_ASSERT_OK(pool.validate());
    MEMD_ASSERT_OK(pool.deallocate(*same, sp.s1));
    MEMD_ASSERT_OK(pool.deallocate(*other, sp.s2));
    MEMD_ASSERT_OK(pool.validate());
  }
  pool.trim();
  MEMD_ASSERT_OK(pool.validate());
  auto st = pool.stats();
  EXPECT_EQ(st.live_allocations, 0u);
  EXPECT_EQ(st.allocated_bytes, 0u);
  EXPECT_EQ(st.reserved_bytes, 0u);
}

// ----- snapshot vs stats -----------------------------------------------------

void expect_snapshot_matches_stats(DevicePool& pool, const std::string& where) {
  auto snap = pool.snapshot();
  auto st = pool.stats();
  EXPECT_EQ(snap.size(), st.segments) << where;
  std::uint64_t mapped = 0, busy = 0, free_blocks = 0;
  for (const auto& seg : snap) {
    mapped += seg.mapped_bytes;
    EXPECT_LE(seg.mapped_bytes, seg.size) << where;
    // Blocks tile the segment in address order.
    std::uint64_t cursor = seg.address;
    for (const auto& b : seg.blocks) {
      EXPECT_EQ(b.address, cursor) << where << ": gap or overlap in segment " << std::hex << seg.address;
      cursor = b.address + b.size;
      EXPECT_TRUE(b.state == "allocated" || b.state == "free" || b.state == "pending" || b.state == "slab")
          << where << ": state " << b.state;
      if (b.state == "free") free_blocks += b.size;
      else busy += b.size;
    }
    EXPECT_EQ(cursor, seg.address + seg.size) << where << ": blocks do not cover segment";
  }
  EXPECT_EQ(mapped, st.reserved_bytes) << where;
  EXPECT_EQ(busy, st.active_bytes) << where;
  EXPECT_GE(free_blocks, st.free_bytes) << where;  // free includes unmapped address space
}

TEST(DevicePool, SnapshotAgreesWithStats) {
  StreamPool sp(PoolOptions{.huge_threshold = 32 * kMiB});
  ASSERT_TRUE(sp.env.pool);
  auto& pool = *sp.env.pool;
  expect_snapshot_matches_stats(pool, "empty");
  std::vector<void*> ptrs;
  for (std::uint64_t size : {std::uint64_t{1}, std::uint64_t{300}, std::uint64_t{5000}, 64 * kKiB, 3 * kMiB,
                             20 * kMiB, 33 * kMiB, 50 * kMiB}) {
    auto p = pool.allocate(size);
    ASSERT_TRUE(p);
    ptrs.push_back(*p);
  }
  expect_snapshot_matches_stats(pool, "filled");
  MEMD_ASSERT_OK(pool.deallocate(ptrs[4]));
  MEMD_ASSERT_OK(pool.deallocate(ptrs[6]));  // huge → cached
  expect_snapshot_matches_stats(pool, "after frees");
  auto sp_block = pool.allocate(2 * kMiB, sp.s1);
  ASSERT_TRUE(sp_block);
  MEMD_ASSERT_OK(pool.deallocate(*sp_block, sp.s1));
  bool saw_pending = false;
  for (const auto& seg : pool.snapshot())
    for (const auto& b : seg.blocks) saw_pending |= b.address == addr(*sp_block) && b.state == "pending";
  EXPECT_TRUE(saw_pending) << "snapshot does not show the pending stream-ordered free";
  expect_snapshot_matches_stats(pool, "pending");
  std::size_t huge_segments = 0;
  for (const auto& seg : pool.snapshot()) huge_segments += seg.kind == "huge";
  EXPECT_EQ(huge_segments, 2u);  // one live, one cached
  for (std::size_t i = 0; i < ptrs.size(); ++i)
    if (i != 4 && i != 6) MEMD_ASSERT_OK(pool.deallocate(ptrs[i]));
  pool.trim();
  expect_snapshot_matches_stats(pool, "trimmed");
  EXPECT_EQ(pool.snapshot().size(), 1u) << "only the arena should remain";
}

// ----- statistics --------------------------------------------------------------

TEST(DevicePool, StatsCountersAndPeaks) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(10 * kMiB);
  auto b = pool.allocate(6 * kMiB);
  ASSERT_TRUE(a && b);
  MEMD_ASSERT_OK(pool.deallocate(*a));
  auto st = pool.stats();
  EXPECT_EQ(st.total_allocations, 2u);
  EXPECT_EQ(st.total_frees, 1u);
  EXPECT_EQ(st.live_allocations, 1u);
  EXPECT_EQ(st.peak_live_allocations, 2u);
  EXPECT_EQ(st.allocated_bytes, 6 * kMiB);
  EXPECT_EQ(st.peak_allocated_bytes, 16 * kMiB);
  EXPECT_GE(st.peak_reserved_bytes, 16 * kMiB);
  EXPECT_GE(st.peak_active_bytes, 16 * kMiB);
  EXPECT_LE(st.largest_free_block, st.free_bytes);
  EXPECT_GE(st.fragmentation, 0.0);
  EXPECT_LE(st.fragmentation, 1.0);
  if (st.free_bytes != 0) {
    EXPECT_DOUBLE_EQ(st.fragmentation, 1.0 - static_cast<double>(st.largest_free_block) /
                                                 static_cast<double>(st.free_bytes));
  }
  EXPECT_DOUBLE_EQ(st.footprint_ratio,
                   static_cast<double>(st.reserved_bytes) / static_cast<double>(st.allocated_bytes));
  auto bad = pool.allocate(0);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, ErrorCode::invalid_argument);
  MEMD_ASSERT_OK(pool.deallocate(*b));
}

// pool_stats.hpp: allocated = bytes of the blocks users hold (requests
// rounded to their blocks); active adds whole spans.
TEST(DevicePool, AllocatedBytesAreBlockBytes) {
  PoolEnv env = make_pool(256 * kMiB);
  ASSERT_TRUE(env.pool);
  auto& pool = *env.pool;
  auto a = pool.allocate(1);        // a 256-byte slab slot
  auto b = pool.allocate(100'000);  // a TLSF block rounded to 256
  ASSERT_TRUE(a && b);
  auto st = pool.stats();
  EXPECT_EQ(st.allocated_bytes, 256u + 100'096u);
  EXPECT_EQ(st.active_bytes, 64u * 1024 + 100'096u);
  MEMD_ASSERT_OK(pool.deallocate(*a));
  MEMD_ASSERT_OK(pool.deallocate(*b));
}

TEST(DevicePool, CreateRejectsBadOptions) {
  auto catalog = alloc_test::host_catalog(64 * kMiB);
  ASSERT_TRUE(catalog);
  auto backend = catalog->backend_for(DeviceId::host(0), MemoryType::VRAM);
  ASSERT_TRUE(backend);
  auto missing = DevicePool::create(**backend, PoolOptions{.device = DeviceId::host(3)});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ErrorCode::not_found);
  auto retain = DevicePool::create(**backend, PoolOptions{.retain_fraction = -1});
  ASSERT_FALSE(retain);
  EXPECT_EQ(retain.error().code, ErrorCode::invalid_argument);
  auto cpu_virtual = DevicePool::create(**backend, PoolOptions{.device = DeviceId::cpu(), .memory_type = MemoryType::RAM});
  ASSERT_FALSE(cpu_virtual) << "cpu has no virtual memory; Virtual mode must be refused";
  EXPECT_EQ(cpu_virtual.error().code, ErrorCode::invalid_argument);
}

}  // namespace
}  // namespace memd
