// The C ABI (include/memd/memd.h) through libmemd.so: the round trip, then
// hostile input — null handles and pointers, zero and huge sizes, bogus and
// freed ids, bad device strings and memory types — each an error code with a
// message, never a crash; the status enum against the closed error list; and
// the last-error message kept per thread while threads share one engine.
#include "memd/memd.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "memd/error.hpp"

namespace {

struct EngineFixture : ::testing::Test {
  memd_engine* engine = nullptr;
  void SetUp() override {
    const uint64_t sizes[] = {64ull << 20, 64ull << 20};
    memd_engine_options options{sizes, 2, 0, "capi-test"};
    ASSERT_EQ(memd_engine_open(&options, &engine), MEMD_OK) << memd_last_error_message();
    ASSERT_NE(engine, nullptr);
  }
  void TearDown() override { memd_engine_close(engine); }

  memd_allocation_id allocate(uint64_t size, const char* device = "host:0") {
    memd_allocate_request request{size, MEMD_MEMORY_VRAM, device, 0};
    memd_allocation_id id{};
    EXPECT_EQ(memd_allocate(engine, &request, &id), MEMD_OK) << memd_last_error_message();
    return id;
  }
};

// A failing call's status, and that it left a message naming the problem.
#define EXPECT_FAILS(call, status)                                  \
  do {                                                              \
    EXPECT_EQ((call), (status));                                    \
    EXPECT_STRNE(memd_last_error_message(), "") << #call;           \
  } while (0)

memd_allocation_id bogus_id(uint8_t fill) {
  memd_allocation_id id;
  std::memset(id.bytes, fill, sizeof id.bytes);
  return id;
}

TEST_F(EngineFixture, AllocatesWritesReadsAndFrees) {
  const memd_allocation_id id = allocate(1 << 20);
  void* pointer = nullptr;
  uint64_t size = 0;
  ASSERT_EQ(memd_allocation_pointer(engine, id, &pointer, &size), MEMD_OK);
  EXPECT_NE(pointer, nullptr);
  EXPECT_EQ(size, 1u << 20);
  ASSERT_EQ(memd_allocation_pointer(engine, id, nullptr, nullptr), MEMD_OK);  // both out-params optional

  const char message[] = "bytes through the C ABI";
  ASSERT_EQ(memd_write(engine, id, 100, message, sizeof message), MEMD_OK);
  char back[sizeof message] = {};
  ASSERT_EQ(memd_read(engine, id, 100, back, sizeof back), MEMD_OK);
  EXPECT_STREQ(back, message);
  // host:0's memory is this process's: the pointer shows the same bytes.
  EXPECT_EQ(std::memcmp(static_cast<char*>(pointer) + 100, message, sizeof message), 0);

  memd_stats stats{};
  ASSERT_EQ(memd_get_stats(engine, "host:0", &stats), MEMD_OK);
  EXPECT_EQ(stats.total_bytes, 64u << 20);
  EXPECT_EQ(stats.allocations, 1u);
  EXPECT_GE(stats.allocated_bytes, 1u << 20);
  EXPECT_GE(stats.reserved_bytes, stats.allocated_bytes);
  EXPECT_GE(stats.peak_allocated_bytes, 1u << 20);
  memd_stats all{};
  ASSERT_EQ(memd_get_stats(engine, nullptr, &all), MEMD_OK);
  EXPECT_GT(all.total_bytes, stats.total_bytes);  // host:1 and cpu too
  EXPECT_EQ(all.allocations, 1u);

  ASSERT_EQ(memd_free(engine, id), MEMD_OK);
  ASSERT_EQ(memd_get_stats(engine, "host:0", &stats), MEMD_OK);
  EXPECT_EQ(stats.allocations, 0u);
  EXPECT_EQ(stats.allocated_bytes, 0u);
}

TEST_F(EngineFixture, DoubleFreeAndBogusIdsAreNotFound) {
  const memd_allocation_id id = allocate(4096);
  ASSERT_EQ(memd_free(engine, id), MEMD_OK);
  EXPECT_FAILS(memd_free(engine, id), MEMD_NOT_FOUND);
  char byte = 0;
  EXPECT_FAILS(memd_read(engine, id, 0, &byte, 1), MEMD_NOT_FOUND);
  EXPECT_FAILS(memd_write(engine, id, 0, &byte, 1), MEMD_NOT_FOUND);
  void* pointer = reinterpret_cast<void*>(0x1);
  EXPECT_FAILS(memd_allocation_pointer(engine, id, &pointer, nullptr), MEMD_NOT_FOUND);
  EXPECT_EQ(pointer, reinterpret_cast<void*>(0x1));  // untouched on failure
  for (uint8_t fill : {0x00, 0xff, 0x5a}) {
    EXPECT_FAILS(memd_free(engine, bogus_id(fill)), MEMD_NOT_FOUND);
    EXPECT_FAILS(memd_read(engine, bogus_id(fill), 0, &byte, 1), MEMD_NOT_FOUND);
  }
}

TEST_F(EngineFixture, NullHandlesAndPointersAreInvalidArguments) {
  const memd_allocation_id id = allocate(4096);
  memd_allocate_request request{4096, MEMD_MEMORY_VRAM, "host:0", 0};
  memd_allocation_id out{};
  memd_stats stats{};
  char byte = 0;
  EXPECT_FAILS(memd_allocate(nullptr, &request, &out), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocate(engine, nullptr, &out), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocate(engine, &request, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_free(nullptr, id), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocation_pointer(nullptr, id, nullptr, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_write(nullptr, id, 0, &byte, 1), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_read(nullptr, id, 0, &byte, 1), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_write(engine, id, 0, nullptr, 1), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_read(engine, id, 0, nullptr, 1), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_get_stats(nullptr, nullptr, &stats), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_get_stats(engine, nullptr, nullptr), MEMD_INVALID_ARGUMENT);
  memd_engine_close(nullptr);  // a no-op
  // The allocation is untouched by all of that.
  ASSERT_EQ(memd_free(engine, id), MEMD_OK);
}

TEST_F(EngineFixture, BadRequestsAreRefusedWithTheirCodes) {
  memd_allocation_id out{};
  memd_allocate_request zero{0, MEMD_MEMORY_VRAM, "host:0", 0};
  EXPECT_FAILS(memd_allocate(engine, &zero, &out), MEMD_INVALID_ARGUMENT);
  memd_allocate_request huge{UINT64_MAX, MEMD_MEMORY_VRAM, "host:0", 0};
  EXPECT_FAILS(memd_allocate(engine, &huge, &out), MEMD_OUT_OF_MEMORY);
  memd_allocate_request over{128ull << 20, MEMD_MEMORY_VRAM, "host:0", 0};  // twice host:0
  const memd_status status = memd_allocate(engine, &over, &out);
  EXPECT_TRUE(status == MEMD_OUT_OF_MEMORY || status == MEMD_QUOTA_EXCEEDED) << memd_status_name(status);
  memd_allocate_request bad_type{4096, 99, "host:0", 0};
  EXPECT_FAILS(memd_allocate(engine, &bad_type, &out), MEMD_INVALID_ARGUMENT);
  memd_allocate_request bad_device{4096, MEMD_MEMORY_VRAM, "gpu:zero", 0};
  EXPECT_FAILS(memd_allocate(engine, &bad_device, &out), MEMD_INVALID_ARGUMENT);
  memd_allocate_request no_device{4096, MEMD_MEMORY_VRAM, "host:7", 0};
  EXPECT_FAILS(memd_allocate(engine, &no_device, &out), MEMD_NOT_FOUND);
  memd_allocate_request vram_on_cpu{4096, MEMD_MEMORY_VRAM, "cpu", 0};
  EXPECT_FAILS(memd_allocate(engine, &vram_on_cpu, &out), MEMD_NOT_FOUND);
  memd_stats stats{};
  EXPECT_FAILS(memd_get_stats(engine, "host:7", &stats), MEMD_NOT_FOUND);
  EXPECT_FAILS(memd_get_stats(engine, "nonsense", &stats), MEMD_INVALID_ARGUMENT);

  // Defaults: type 0 is VRAM, a NULL device the default one (host:0 here).
  memd_allocate_request defaults{4096, 0, nullptr, 1};
  ASSERT_EQ(memd_allocate(engine, &defaults, &out), MEMD_OK) << memd_last_error_message();
  ASSERT_EQ(memd_get_stats(engine, "host:0", &stats), MEMD_OK);
  EXPECT_EQ(stats.allocations, 1u);
  // RAM on cpu.
  memd_allocate_request ram{4096, MEMD_MEMORY_RAM, "", 0};
  memd_allocation_id ram_id{};
  ASSERT_EQ(memd_allocate(engine, &ram, &ram_id), MEMD_OK) << memd_last_error_message();
  ASSERT_EQ(memd_get_stats(engine, "cpu", &stats), MEMD_OK);
  EXPECT_EQ(stats.allocations, 1u);
}

TEST_F(EngineFixture, ByteAccessIsBoundsChecked) {
  const memd_allocation_id id = allocate(4096);
  char buffer[64] = {};
  EXPECT_FAILS(memd_write(engine, id, 4090, buffer, sizeof buffer), MEMD_OUT_OF_RANGE);
  EXPECT_FAILS(memd_read(engine, id, 4096, buffer, 1), MEMD_OUT_OF_RANGE);
  EXPECT_FAILS(memd_read(engine, id, UINT64_MAX, buffer, 2), MEMD_OUT_OF_RANGE);
  EXPECT_FAILS(memd_write(engine, id, UINT64_MAX - 1, buffer, 4), MEMD_OUT_OF_RANGE);
  EXPECT_EQ(memd_write(engine, id, 4032, buffer, sizeof buffer), MEMD_OK);  // exactly to the end
}

TEST(CapiOpenTest, RefusesBadOptions) {
  memd_engine* engine = reinterpret_cast<memd_engine*>(0x1);
  EXPECT_FAILS(memd_engine_open(nullptr, &engine), MEMD_INVALID_ARGUMENT);
  memd_engine_options options{nullptr, 0, 0, nullptr};
  EXPECT_FAILS(memd_engine_open(&options, nullptr), MEMD_INVALID_ARGUMENT);
  options.host_device_count = 3;  // and no array
  EXPECT_FAILS(memd_engine_open(&options, &engine), MEMD_INVALID_ARGUMENT);
  const uint64_t sizes[] = {64ull << 20};
  options.host_device_sizes = sizes;
  options.host_device_count = 1000;  // refused before the array is read
  EXPECT_FAILS(memd_engine_open(&options, &engine), MEMD_INVALID_ARGUMENT);
  options.host_device_count = 1;
  options.owner = "";  // breaks the owner rule
  EXPECT_FAILS(memd_engine_open(&options, &engine), MEMD_INVALID_ARGUMENT);
  options.owner = "bad\nowner";
  EXPECT_FAILS(memd_engine_open(&options, &engine), MEMD_INVALID_ARGUMENT);
  const uint64_t tiny[] = {4096};  // under one mapping granule
  options.host_device_sizes = tiny;
  options.owner = nullptr;
  EXPECT_FAILS(memd_engine_open(&options, &engine), MEMD_INVALID_ARGUMENT);
  EXPECT_EQ(engine, reinterpret_cast<memd_engine*>(0x1));  // never written on failure

  // No host devices at all is an engine too (cpu only, and GPUs if any).
  options.host_device_sizes = nullptr;
  options.host_device_count = 0;
  ASSERT_EQ(memd_engine_open(&options, &engine), MEMD_OK) << memd_last_error_message();
  memd_engine_close(engine);
}

TEST(CapiStatusTest, MatchesTheClosedErrorList) {
  EXPECT_STREQ(memd_status_name(MEMD_OK), "ok");
  for (memd::ErrorCode code : memd::kAllErrorCodes) {
    const int status = static_cast<int>(code) + 1;
    EXPECT_EQ(std::string(memd_status_name(status)), std::string(memd::to_string(code)));
  }
  EXPECT_EQ(MEMD_NOT_FOUND, static_cast<int>(memd::ErrorCode::not_found) + 1);
  EXPECT_EQ(MEMD_OUT_OF_RANGE, static_cast<int>(memd::ErrorCode::out_of_range) + 1);
  EXPECT_STREQ(memd_status_name(MEMD_RATE_LIMITED), "rate_limited");
  EXPECT_STREQ(memd_status_name(MEMD_RATE_LIMITED + 1), "unknown");
  EXPECT_STREQ(memd_status_name(-3), "unknown");
  EXPECT_EQ(memd_abi_version(), MEMD_ABI_VERSION);
  EXPECT_STRNE(memd_version(), "");
}

TEST(CapiIdTest, FormatsAndParses) {
  memd_allocation_id id{};
  ASSERT_EQ(memd_allocation_id_parse("0123abcd-4567-89ef-0123-456789ABCDEF", &id), MEMD_OK);
  char text[MEMD_ALLOCATION_ID_TEXT];
  ASSERT_EQ(memd_allocation_id_format(id, text, sizeof text), MEMD_OK);
  EXPECT_STREQ(text, "0123abcd-4567-89ef-0123-456789abcdef");
  EXPECT_EQ(id.bytes[0], 0x01);
  EXPECT_EQ(id.bytes[15], 0xef);
  EXPECT_FAILS(memd_allocation_id_format(id, text, 36), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocation_id_format(id, nullptr, 64), MEMD_INVALID_ARGUMENT);
  for (const char* bad : {"", "0123abcd", "0123abcd-4567-89ef-0123-456789abcdeg", "0123abcd+4567-89ef-0123-456789abcdef",
                          "0123abcd-4567-89ef-0123-456789abcdef0"})
    EXPECT_FAILS(memd_allocation_id_parse(bad, &id), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocation_id_parse(nullptr, &id), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocation_id_parse("0123abcd-4567-89ef-0123-456789abcdef", nullptr), MEMD_INVALID_ARGUMENT);
}

TEST_F(EngineFixture, LastErrorIsPerThreadWhileThreadsShareTheEngine) {
  // This thread's failure stays its own while others fail differently.
  EXPECT_FAILS(memd_free(engine, bogus_id(1)), MEMD_NOT_FOUND);
  const std::string mine = memd_last_error_message();
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      int& failed = failures[static_cast<std::size_t>(t)];
      if (std::string(memd_last_error_message()) != "") ++failed;  // fresh thread: none yet
      for (int i = 0; i < 40; ++i) {
        memd_allocate_request request{4096u * static_cast<uint64_t>(1 + i % 3), MEMD_MEMORY_VRAM,
                                      t % 2 ? "host:1" : "host:0", 0};
        memd_allocation_id id{};
        if (memd_allocate(engine, &request, &id) != MEMD_OK) { ++failed; continue; }
        const uint32_t word = static_cast<uint32_t>(t * 1000 + i);
        uint32_t back = 0;
        if (memd_write(engine, id, 8, &word, sizeof word) != MEMD_OK ||
            memd_read(engine, id, 8, &back, sizeof back) != MEMD_OK || back != word)
          ++failed;
        if (memd_free(engine, id) != MEMD_OK) ++failed;
        if (memd_free(engine, id) != MEMD_NOT_FOUND) ++failed;
        memd_allocate_request zero{0, MEMD_MEMORY_VRAM, nullptr, 0};
        if (memd_allocate(engine, &zero, &id) != MEMD_INVALID_ARGUMENT) ++failed;
        if (std::string(memd_last_error_message()).find("sizeBytes") == std::string::npos &&
            std::string(memd_last_error_message()).find("size") == std::string::npos)
          ++failed;
      }
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
  EXPECT_EQ(mine, memd_last_error_message());
  memd_stats stats{};
  ASSERT_EQ(memd_get_stats(engine, nullptr, &stats), MEMD_OK);
  EXPECT_EQ(stats.allocations, 0u);
}

}  // namespace

namespace {

// Stream-ordered blocks through the C ABI on a host device: a block from
// memd_allocate_async is usable memory, the pool's counters follow it, a
// free is refused twice; adopting a native stream is a CUDA matter
// (MEMD_UNAVAILABLE on a host device); forged streams and null pointers
// are errors, never crashes.
TEST_F(EngineFixture, StreamOrderedBlocksAndTheirRefusals) {
  memd_stream stream{};
  ASSERT_EQ(memd_stream_create(engine, "host:0", &stream), MEMD_OK) << memd_last_error_message();
  void* block = nullptr;
  ASSERT_EQ(memd_allocate_async(engine, 3 << 20, stream, &block), MEMD_OK) << memd_last_error_message();
  ASSERT_NE(block, nullptr);
  std::memset(block, 0x5a, 3 << 20);  // host:0 memory is this process's
  memd_pool_usage usage{};
  ASSERT_EQ(memd_get_pool_usage(engine, "host:0", &usage), MEMD_OK);
  EXPECT_GE(usage.allocated_bytes, 3u << 20);
  EXPECT_GE(usage.reserved_bytes, usage.allocated_bytes);
  EXPECT_GE(usage.peak_reserved_bytes, usage.reserved_bytes);
  EXPECT_EQ(usage.live_allocations, 1u);
  ASSERT_EQ(memd_free_async(engine, block, stream), MEMD_OK) << memd_last_error_message();
  EXPECT_FAILS(memd_free_async(engine, block, stream), MEMD_INVALID_ARGUMENT);  // twice
  int local = 0;
  EXPECT_FAILS(memd_free_async(engine, &local, stream), MEMD_INVALID_ARGUMENT);  // never handed out
  EXPECT_FAILS(memd_free_async(engine, nullptr, stream), MEMD_INVALID_ARGUMENT);
  ASSERT_EQ(memd_get_pool_usage(engine, "host:0", &usage), MEMD_OK);
  EXPECT_EQ(usage.live_allocations, 0u);
  EXPECT_GE(usage.peak_allocated_bytes, 3u << 20);

  memd_stream adopted{};
  EXPECT_FAILS(memd_stream_adopt(engine, "host:0", &local, &adopted), MEMD_UNAVAILABLE);
  EXPECT_FAILS(memd_stream_adopt(engine, "cpu", &local, &adopted), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_stream_adopt(engine, "host:0", &local, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_stream_create(engine, "nonsense", &adopted), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocate_async(engine, 0, stream, &block), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocate_async(engine, 1 << 20, stream, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_allocate_async(nullptr, 1 << 20, stream, &block), MEMD_INVALID_ARGUMENT);
  memd_stream forged{};
  forged.opaque[0] = ~0ull;  // no such device kind
  EXPECT_FAILS(memd_allocate_async(engine, 1 << 20, forged, &block), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_stream_destroy(engine, forged), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_get_pool_usage(engine, "host:9", &usage), MEMD_NOT_FOUND);
  ASSERT_EQ(memd_stream_destroy(engine, stream), MEMD_OK) << memd_last_error_message();
  EXPECT_FAILS(memd_stream_destroy(engine, stream), MEMD_NOT_FOUND);  // gone
}

}  // namespace

namespace {

// Regions through the C ABI on host devices: two named regions and the
// device's pool side by side, blocks of each freed by memd_free_async,
// sleep giving the region's memory back (the pool usage says 0 reserved)
// while the default pool's blocks are untouched, wake bringing the bytes
// back at the same addresses, the refusals while asleep and the conflicts;
// then null and forged regions, never a crash.
TEST_F(EngineFixture, RegionsSleepAndWake) {
  memd_stream stream{};
  ASSERT_EQ(memd_stream_create(engine, "host:0", &stream), MEMD_OK) << memd_last_error_message();
  memd_region weights{}, kv{};
  ASSERT_EQ(memd_region_create(engine, "host:0", "weights", &weights), MEMD_OK) << memd_last_error_message();
  ASSERT_EQ(memd_region_create(engine, "host:0", "kv_cache", &kv), MEMD_OK) << memd_last_error_message();
  memd_region other_device{};
  ASSERT_EQ(memd_region_create(engine, "host:1", "weights", &other_device), MEMD_OK);  // names are per device
  memd_region twice{};
  EXPECT_FAILS(memd_region_create(engine, "host:0", "weights", &twice), MEMD_CONFLICT);

  std::vector<void*> blocks;
  std::vector<uint64_t> sizes = {256, 5000, 64 << 10, 1 << 20, 3 << 20};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    void* p = nullptr;
    ASSERT_EQ(memd_region_allocate_async(engine, weights, sizes[i], stream, &p), MEMD_OK) << memd_last_error_message();
    std::memset(p, static_cast<int>(0x11 * (i + 1)), sizes[i]);
    blocks.push_back(p);
  }
  void* kv_block = nullptr;
  ASSERT_EQ(memd_region_allocate_async(engine, kv, 2 << 20, stream, &kv_block), MEMD_OK);
  std::memset(kv_block, 0x77, 2 << 20);
  void* plain = nullptr;
  ASSERT_EQ(memd_allocate_async(engine, 1 << 20, stream, &plain), MEMD_OK);
  std::memset(plain, 0x33, 1 << 20);

  memd_pool_usage usage{};
  int asleep = -1;
  ASSERT_EQ(memd_region_usage(engine, weights, &usage, &asleep), MEMD_OK);
  EXPECT_EQ(asleep, 0);
  EXPECT_EQ(usage.live_allocations, sizes.size());
  const uint64_t reserved = usage.reserved_bytes;
  ASSERT_GT(reserved, 0u);

  memd_sleep_report slept{};
  ASSERT_EQ(memd_region_sleep(engine, weights, 1, &slept), MEMD_OK) << memd_last_error_message();
  EXPECT_EQ(slept.bytes, reserved);
  EXPECT_EQ(slept.kept_contents, 1);
  ASSERT_EQ(memd_region_usage(engine, weights, &usage, &asleep), MEMD_OK);
  EXPECT_EQ(asleep, 1);
  EXPECT_EQ(usage.reserved_bytes, 0u);
  void* refused = nullptr;
  EXPECT_FAILS(memd_region_allocate_async(engine, weights, 4096, stream, &refused), MEMD_UNAVAILABLE);
  EXPECT_NE(std::string(memd_last_error_message()).find("weights"), std::string::npos);
  EXPECT_FAILS(memd_region_sleep(engine, weights, 1, nullptr), MEMD_CONFLICT);
  // The other region and the device's pool are awake and intact.
  EXPECT_EQ(static_cast<unsigned char*>(kv_block)[12345], 0x77);
  EXPECT_EQ(static_cast<unsigned char*>(plain)[777], 0x33);
  void* more = nullptr;
  ASSERT_EQ(memd_region_allocate_async(engine, kv, 4096, stream, &more), MEMD_OK);
  ASSERT_EQ(memd_free_async(engine, more, stream), MEMD_OK);
  // A block of the sleeping region may be freed.
  ASSERT_EQ(memd_free_async(engine, blocks.back(), stream), MEMD_OK) << memd_last_error_message();
  blocks.pop_back();
  sizes.pop_back();

  memd_wake_report woken{};
  ASSERT_EQ(memd_region_wake(engine, weights, &woken), MEMD_OK) << memd_last_error_message();
  EXPECT_EQ(woken.bytes, reserved);
  EXPECT_EQ(woken.kept_contents, 1);
  EXPECT_FAILS(memd_region_wake(engine, weights, nullptr), MEMD_CONFLICT);
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const auto* bytes = static_cast<const unsigned char*>(blocks[i]);
    const auto want = static_cast<unsigned char>(0x11 * (i + 1));
    EXPECT_EQ(bytes[0], want);
    EXPECT_EQ(bytes[sizes[i] - 1], want);
    EXPECT_EQ(bytes[sizes[i] / 2], want);
  }
  // Dropped contents: the same addresses read zero after the wake.
  ASSERT_EQ(memd_region_sleep(engine, kv, 0, &slept), MEMD_OK);
  EXPECT_EQ(slept.kept_contents, 0);
  ASSERT_EQ(memd_region_wake(engine, kv, &woken), MEMD_OK);
  EXPECT_EQ(static_cast<unsigned char*>(kv_block)[12345], 0);

  // Every block goes back through memd_free_async, whichever pool it is of.
  for (void* p : blocks) ASSERT_EQ(memd_free_async(engine, p, stream), MEMD_OK) << memd_last_error_message();
  ASSERT_EQ(memd_free_async(engine, kv_block, stream), MEMD_OK);
  ASSERT_EQ(memd_free_async(engine, plain, stream), MEMD_OK);
  EXPECT_FAILS(memd_free_async(engine, kv_block, stream), MEMD_INVALID_ARGUMENT);
  ASSERT_EQ(memd_region_usage(engine, weights, &usage, nullptr), MEMD_OK);
  EXPECT_EQ(usage.live_allocations, 0u);

  // Hostile input.
  memd_region forged{};
  EXPECT_FAILS(memd_region_sleep(engine, forged, 1, nullptr), MEMD_INVALID_ARGUMENT);  // all zero
  forged.opaque[0] = ~0ull;
  forged.opaque[1] = 1;
  EXPECT_FAILS(memd_region_wake(engine, forged, nullptr), MEMD_INVALID_ARGUMENT);
  memd_region unknown = weights;
  unknown.opaque[1] = 999;
  EXPECT_FAILS(memd_region_sleep(engine, unknown, 1, nullptr), MEMD_NOT_FOUND);
  EXPECT_FAILS(memd_region_usage(engine, unknown, &usage, nullptr), MEMD_NOT_FOUND);
  memd_region moved = weights;
  moved.opaque[0] = other_device.opaque[0] + 5;  // host:6: a real kind, no such region there
  EXPECT_FAILS(memd_region_allocate_async(engine, moved, 4096, stream, &refused), MEMD_NOT_FOUND);
  memd_stream other_stream{};
  ASSERT_EQ(memd_stream_create(engine, "host:1", &other_stream), MEMD_OK);
  EXPECT_FAILS(memd_region_allocate_async(engine, weights, 4096, other_stream, &refused), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_allocate_async(engine, weights, 0, stream, &refused), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_allocate_async(engine, weights, 4096, stream, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_allocate_async(nullptr, weights, 4096, stream, &refused), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_sleep(nullptr, weights, 1, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_wake(nullptr, weights, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_usage(engine, weights, nullptr, nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_create(engine, "host:0", "", &twice), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_create(engine, "host:0", nullptr, &twice), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_create(engine, nullptr, "x", &twice), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_create(engine, "host:0", "x", nullptr), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_create(engine, "cpu", "x", &twice), MEMD_INVALID_ARGUMENT);
  EXPECT_FAILS(memd_region_create(engine, "host:9", "x", &twice), MEMD_NOT_FOUND);
  EXPECT_FAILS(memd_region_create(engine, "host:0", std::string(129, 'a').c_str(), &twice), MEMD_INVALID_ARGUMENT);
  ASSERT_EQ(memd_stream_destroy(engine, other_stream), MEMD_OK);
  ASSERT_EQ(memd_stream_destroy(engine, stream), MEMD_OK);
}

// A region closed while asleep: the engine frees its host copy and ranges.
TEST_F(EngineFixture, ClosesWithARegionAsleep) {
  memd_stream stream{};
  ASSERT_EQ(memd_stream_create(engine, "host:0", &stream), MEMD_OK);
  memd_region r{};
  ASSERT_EQ(memd_region_create(engine, "host:0", "weights", &r), MEMD_OK);
  void* p = nullptr;
  ASSERT_EQ(memd_region_allocate_async(engine, r, 1 << 20, stream, &p), MEMD_OK);
  ASSERT_EQ(memd_region_sleep(engine, r, 1, nullptr), MEMD_OK);
  ASSERT_EQ(memd_stream_destroy(engine, stream), MEMD_OK);
}

}  // namespace
