// memd::Engine, the in-process C++ facade (include/memd/engine.hpp), tested
// through libmemd.so and the public headers only, as a downstream program
// uses it: allocation round trips, the errors of the closed list, copies,
// statistics, stream-ordered blocks and models.
#include "memd/engine.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "memd/size.hpp"

namespace memd {
namespace {

Engine open_engine(std::vector<std::string> model_roots = {}) {
  EngineOptions options;
  options.host_device_sizes = {64 * kMiB, 64 * kMiB};
  options.enable_cuda = false;
  options.owner = "engine-test";
  options.model_roots = std::move(model_roots);
  auto engine = Engine::open(options);
  EXPECT_TRUE(engine) << engine.error().message;
  return std::move(*engine);
}

std::vector<std::byte> pattern(std::size_t n, unsigned seed) {
  std::vector<std::byte> bytes(n);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  return bytes;
}

TEST(EngineTest, OpensOnTheChosenHostDevices) {
  Engine engine = open_engine();
  std::vector<std::string> ids;
  for (const auto& d : engine.devices()) ids.push_back(d.id.to_string());
  EXPECT_EQ(ids, (std::vector<std::string>{"host:0", "host:1", "cpu"}));
}

TEST(EngineTest, RefusesBadOptions) {
  EngineOptions bad_owner;
  bad_owner.owner = "";
  bad_owner.enable_cuda = false;
  auto engine = Engine::open(bad_owner);
  ASSERT_FALSE(engine);
  EXPECT_EQ(engine.error().code, ErrorCode::invalid_argument);

  EngineOptions bad_root;
  bad_root.enable_cuda = false;
  bad_root.model_roots = {"/nonexistent/memd-engine-test"};
  engine = Engine::open(bad_root);
  ASSERT_FALSE(engine);
  EXPECT_EQ(engine.error().code, ErrorCode::invalid_argument);
}

TEST(EngineTest, AllocatesWritesReadsAndFrees) {
  Engine engine = open_engine();
  auto a = engine.allocate({.size_bytes = 1 * kMiB, .device = DeviceId::host(1), .name = "weights"});
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->device, DeviceId::host(1));
  EXPECT_EQ(a->memory_type, MemoryType::VRAM);
  EXPECT_EQ(a->size_bytes, 1 * kMiB);
  EXPECT_EQ(a->owner, "engine-test");
  EXPECT_EQ(a->name, "weights");
  ASSERT_NE(a->pointer, nullptr);

  const auto bytes = pattern(4096, 7);
  ASSERT_TRUE(engine.write(a->id, 8192, bytes));
  std::vector<std::byte> back(bytes.size());
  ASSERT_TRUE(engine.read(a->id, 8192, back));
  EXPECT_EQ(back, bytes);
  // A host device's pointer is this process's memory: the bytes are there.
  EXPECT_EQ(std::memcmp(static_cast<std::byte*>(a->pointer) + 8192, bytes.data(), bytes.size()), 0);

  auto seen = engine.allocation(a->id);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->pointer, a->pointer);
  EXPECT_EQ(seen->status, MemoryAllocationStatus::Allocated);

  ASSERT_TRUE(engine.free(a->id));
  auto again = engine.free(a->id);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, ErrorCode::not_found);
  EXPECT_EQ(engine.allocation(a->id).error().code, ErrorCode::not_found);
  EXPECT_EQ(engine.read(a->id, 0, back).error().code, ErrorCode::not_found);
}

TEST(EngineTest, ReturnsTheClosedListsErrors) {
  Engine engine = open_engine();
  EXPECT_EQ(engine.allocate({.size_bytes = 0, .device = DeviceId::host(0)}).error().code,
            ErrorCode::invalid_argument);
  EXPECT_EQ(engine.allocate({.size_bytes = 4096, .device = DeviceId::host(9)}).error().code, ErrorCode::not_found);
  EXPECT_EQ(engine.allocate({.size_bytes = 4096, .memory_type = MemoryType::Unknown}).error().code,
            ErrorCode::invalid_argument);
  auto too_big = engine.allocate({.size_bytes = 1 * kGiB, .device = DeviceId::host(0)});
  ASSERT_FALSE(too_big);
  EXPECT_TRUE(too_big.error().code == ErrorCode::out_of_memory || too_big.error().code == ErrorCode::quota_exceeded)
      << to_string(too_big.error().code);

  auto a = engine.allocate({.size_bytes = 4096, .device = DeviceId::host(0)});
  ASSERT_TRUE(a);
  std::vector<std::byte> buffer(16);
  EXPECT_EQ(engine.read(a->id, 4090, buffer).error().code, ErrorCode::out_of_range);
  EXPECT_EQ(engine.write(a->id, 4096, buffer).error().code, ErrorCode::out_of_range);
  EXPECT_EQ(engine.free(AllocationId::generate()).error().code, ErrorCode::not_found);
}

TEST(EngineTest, CopiesBetweenAllocationsOnTwoDevices) {
  Engine engine = open_engine();
  auto source = engine.allocate({.size_bytes = 256 * kKiB, .device = DeviceId::host(0)});
  auto target = engine.allocate({.size_bytes = 256 * kKiB, .device = DeviceId::host(1)});
  ASSERT_TRUE(source && target);
  const auto bytes = pattern(64 * kKiB, 3);
  ASSERT_TRUE(engine.write(source->id, 0, bytes));
  auto copied = engine.copy(source->id, 0, target->id, 1024, bytes.size());
  ASSERT_TRUE(copied) << copied.error().message;
  EXPECT_EQ(copied->bytes, bytes.size());
  std::vector<std::byte> back(bytes.size());
  ASSERT_TRUE(engine.read(target->id, 1024, back));
  EXPECT_EQ(back, bytes);
  EXPECT_EQ(engine.copy(source->id, 0, target->id, 256 * kKiB - 10, 64).error().code, ErrorCode::out_of_range);
}

TEST(EngineTest, StatsFollowAllocations) {
  Engine engine = open_engine();
  auto before = engine.stats(DeviceId::host(0));
  ASSERT_TRUE(before);
  ASSERT_EQ(before->size(), 1u);
  EXPECT_EQ(before->front().device, DeviceId::host(0));
  EXPECT_EQ(before->front().total_bytes, 64 * kMiB);
  EXPECT_TRUE(before->front().simulated);
  EXPECT_EQ(before->front().allocations, 0u);

  auto a = engine.allocate({.size_bytes = 3 * kMiB, .device = DeviceId::host(0)});
  ASSERT_TRUE(a);
  auto during = engine.stats(DeviceId::host(0));
  ASSERT_TRUE(during);
  EXPECT_EQ(during->front().allocations, 1u);
  EXPECT_GE(during->front().allocated_bytes, 3 * kMiB);
  EXPECT_GE(during->front().reserved_bytes, during->front().allocated_bytes);
  EXPECT_GE(during->front().peak_allocated_bytes, 3 * kMiB);

  ASSERT_TRUE(engine.free(a->id));
  auto after = engine.stats(DeviceId::host(0));
  ASSERT_TRUE(after);
  EXPECT_EQ(after->front().allocations, 0u);
  EXPECT_EQ(after->front().allocated_bytes, 0u);

  auto all = engine.stats();
  ASSERT_TRUE(all);
  EXPECT_EQ(all->size(), 3u);
  EXPECT_EQ(engine.stats(DeviceId::host(5)).error().code, ErrorCode::not_found);
}

TEST(EngineTest, StreamOrderedBlocksAreReusedOnTheirStream) {
  Engine engine = open_engine();
  auto stream = engine.create_stream(DeviceId::host(0));
  ASSERT_TRUE(stream) << stream.error().message;
  auto first = engine.allocate_async(128 * kKiB, *stream);
  ASSERT_TRUE(first) << first.error().message;
  ASSERT_TRUE(engine.free_async(*first, *stream));
  // Freed on this stream: the next block of that size on it is the same one,
  // with no wait (the stream orders the reuse).
  auto second = engine.allocate_async(128 * kKiB, *stream);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, *first);
  auto stats = engine.stats(DeviceId::host(0));
  ASSERT_TRUE(stats);
  EXPECT_GE(stats->front().allocated_bytes, 128 * kKiB);

  ASSERT_TRUE(engine.free_async(*second, *stream));
  EXPECT_EQ(engine.free_async(*second, *stream).error().code, ErrorCode::invalid_argument);  // double free
  int not_ours = 0;
  EXPECT_EQ(engine.free_async(&not_ours, *stream).error().code, ErrorCode::invalid_argument);
  // A tracked allocation's pointer is in the same pool, but not the stream
  // path's to free: refused, and the allocation lives on.
  auto tracked = engine.allocate({.size_bytes = 128 * kKiB, .device = DeviceId::host(0)});
  ASSERT_TRUE(tracked);
  EXPECT_EQ(engine.free_async(tracked->pointer, *stream).error().code, ErrorCode::invalid_argument);
  const auto bytes = pattern(1024, 9);
  ASSERT_TRUE(engine.write(tracked->id, 0, bytes));
  ASSERT_TRUE(engine.free(tracked->id));
  // Freed on the wrong device: refused by the pool, and still freeable on the right one.
  auto third = engine.allocate_async(4096, *stream);
  ASSERT_TRUE(third);
  EXPECT_FALSE(engine.free_async(*third, StreamHandle{DeviceId::host(1), 0}));
  EXPECT_TRUE(engine.free_async(*third, *stream));
  EXPECT_EQ(engine.allocate_async(0, *stream).error().code, ErrorCode::invalid_argument);
  ASSERT_TRUE(engine.synchronize(*stream));
  ASSERT_TRUE(engine.destroy_stream(*stream));

  // The default stream (handle 0) needs no creating; cpu has no streams.
  auto on_default = engine.allocate_async(4096, StreamHandle{DeviceId::host(1), 0});
  ASSERT_TRUE(on_default);
  EXPECT_TRUE(engine.free_async(*on_default, StreamHandle{DeviceId::host(1), 0}));
  EXPECT_EQ(engine.create_stream(DeviceId::cpu()).error().code, ErrorCode::invalid_argument);
  EXPECT_EQ(engine.create_stream(DeviceId::host(7)).error().code, ErrorCode::not_found);
}

TEST(EngineTest, ManyThreadsShareOneEngine) {
  Engine engine = open_engine();
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        auto a = engine.allocate({.size_bytes = 4096u * static_cast<unsigned>(1 + i % 5),
                                  .device = DeviceId::host(static_cast<int>(t % 2))});
        if (!a) { ++failures[static_cast<std::size_t>(t)]; continue; }
        const auto bytes = pattern(512, static_cast<unsigned>(t * 100 + i));
        std::vector<std::byte> back(bytes.size());
        if (!engine.write(a->id, 0, bytes) || !engine.read(a->id, 0, back) || back != bytes || !engine.free(a->id))
          ++failures[static_cast<std::size_t>(t)];
      }
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
  auto stats = engine.stats();
  ASSERT_TRUE(stats);
  for (const auto& s : *stats) EXPECT_EQ(s.allocations, 0u) << s.device.to_string();
}

// A safetensors file of one F32 tensor: 8 bytes of header length (little
// endian), the header padded with spaces to 8 bytes, then the data.
void write_model(const std::filesystem::path& path, std::size_t floats) {
  std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(floats) +
                       "],\"data_offsets\":[0," + std::to_string(floats * 4) + "]}}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (std::size_t i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  file += header;
  for (std::size_t i = 0; i < floats * 4; ++i) file.push_back(static_cast<char>(i & 0xff));
  std::ofstream(path, std::ios::binary) << file;
}

TEST(EngineTest, LoadsReportsAndUnloadsAModel) {
  char tmpl[] = "/tmp/memd-engine-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::filesystem::path root = tmpl;
  write_model(root / "tiny.safetensors", 64 * 1024);

  {
    Engine engine = open_engine({root.string()});
    auto started = engine.load_model({.name = "tiny", .path = (root / "tiny.safetensors").string(),
                                      .device = DeviceId::host(0)});
    ASSERT_TRUE(started) << started.error().message;
    auto loaded = engine.wait_model("tiny");
    ASSERT_TRUE(loaded) << loaded.error().message;
    EXPECT_EQ(loaded->state, ModelLoadState::Loaded) << loaded->error;
    EXPECT_EQ(loaded->residency, ModelResidency::VRAM);
    EXPECT_EQ(loaded->device, DeviceId::host(0));
    EXPECT_EQ(loaded->bytes, 256 * kKiB);
    EXPECT_EQ(loaded->tensors, 1u);
    ASSERT_EQ(engine.models().size(), 1u);
    auto device = engine.stats(DeviceId::host(0));
    ASSERT_TRUE(device);
    EXPECT_GE(device->front().allocated_bytes, 256 * kKiB);

    auto unloaded = engine.unload_model("tiny");
    ASSERT_TRUE(unloaded) << unloaded.error().message;
    EXPECT_EQ(engine.model("tiny").error().code, ErrorCode::not_found);
    // Outside every root: refused, as the daemon refuses it.
    EXPECT_EQ(engine.load_model({.name = "etc", .path = "/etc/passwd"}).error().code,
              ErrorCode::permission_denied);
  }
  {
    // No roots: loading is off.
    Engine engine = open_engine();
    EXPECT_EQ(engine.load_model({.name = "tiny", .path = (root / "tiny.safetensors").string()}).error().code,
              ErrorCode::permission_denied);
  }
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace memd
