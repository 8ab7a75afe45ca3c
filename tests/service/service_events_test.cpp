// What the service publishes on the bus: refusals (allocation_failed,
// limit_reached), transfers finishing, defragmentation (on request and on
// its schedule), in order and with the numbers a subscriber needs.
#include <gtest/gtest.h>

#include <thread>

#include <nlohmann/json.hpp>

#include "memd/size.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
const Caller kAdmin = Caller::host("admin");

std::unique_ptr<MemoryService> make_service(std::optional<DefragScheduleOptions> schedule = std::nullopt) {
  ServiceOptions options;
  options.backends.host_device_sizes = {256 * kMiB};
  options.backends.enable_cuda = false;
  options.monitor.interval = 0ms;
  options.scheduled_defrag = schedule;
  auto s = MemoryService::create(options);
  EXPECT_TRUE(s) << s.error().message;
  return std::move(*s);
}

AllocationRecord allocate(MemoryService& s, std::uint64_t bytes, const std::string& owner = "w") {
  AllocationRequest r;
  r.size_bytes = bytes;
  r.device = DeviceId::host(0);
  auto a = s.allocate(Caller::as(owner), r);
  EXPECT_TRUE(a) << a.error().message;
  return a.value_or(AllocationRecord{});
}

std::vector<json> lines(Subscription& sub) {
  std::vector<json> out;
  for (const auto& e : sub.poll()) out.push_back(json::parse(e->line));
  return out;
}

// Every other block of 64 KiB – 1 MiB freed: holes that stay mapped.
std::vector<AllocationRecord> fragment(MemoryService& s) {
  std::vector<AllocationRecord> all, kept;
  for (int i = 0; i < 96; ++i) all.push_back(allocate(s, (64 + 37 * (i % 25)) * 1024));
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (i % 2 == 0) EXPECT_TRUE(s.deallocate(kAdmin, all[i].id));
    else kept.push_back(all[i]);
  }
  return kept;
}

TEST(ServiceEvents, AQuotaRefusalIsALimitReachedAndAnAllocationFailed) {
  auto s = make_service();
  auto sub = s->events().subscribe({});
  LimitUpdate limit;
  limit.owner = "small";
  limit.bytes = kMiB;
  ASSERT_TRUE(s->update_limits(kAdmin, limit));
  AllocationRequest r;
  r.size_bytes = 2 * kMiB;
  r.device = DeviceId::host(0);
  r.name = "too-big";
  auto refused = s->allocate(Caller::as("small"), r);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, ErrorCode::quota_exceeded);
  auto seen = lines(*sub);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0]["event"], "limit_reached");
  EXPECT_EQ(seen[1]["event"], "allocation_failed");
  for (const auto& e : seen) {
    EXPECT_EQ(e["deviceId"], "host:0");
    EXPECT_EQ(e["data"]["owner"], "small");
    EXPECT_EQ(e["data"]["name"], "too-big");
    EXPECT_EQ(e["data"]["sizeBytes"], 2 * kMiB);
    EXPECT_EQ(e["data"]["code"], "quota_exceeded");
  }
  EXPECT_EQ(seen[1]["sequence"].get<std::uint64_t>(), seen[0]["sequence"].get<std::uint64_t>() + 1);
  // Invalid requests are no event: nothing was refused for lack of memory.
  r.size_bytes = 0;
  EXPECT_FALSE(s->allocate(Caller::as("small"), r));
  EXPECT_TRUE(lines(*sub).empty());
}

TEST(ServiceEvents, FinishedTransfersArePublished) {
  auto s = make_service();
  auto a = allocate(*s, kMiB), b = allocate(*s, kMiB);
  EventFilter f;
  f.add(EventKind::transfer_completed);
  f.add(EventKind::transfer_failed);
  auto sub = s->events().subscribe(f);
  TransferSpec spec;
  spec.source = a.id;
  spec.destination = b.id;
  auto t = s->transfer(kAdmin, spec);
  ASSERT_TRUE(t) << t.error().message;
  auto got = sub->wait(10s);
  ASSERT_EQ(got.size(), 1u);
  const json e = json::parse(got[0]->line);
  EXPECT_EQ(e["event"], "transfer_completed");
  EXPECT_EQ(e["data"]["transferId"], t->id.to_string());
  EXPECT_EQ(e["data"]["status"], "Completed");
  EXPECT_EQ(e["data"]["bytesDone"], kMiB);
}

TEST(ServiceEvents, DefragmentationIsStartedThenFinishedWithItsReport) {
  auto s = make_service();
  auto kept = fragment(*s);
  EventFilter f;
  f.add(EventKind::defragment_started);
  f.add(EventKind::defragment_finished);
  auto sub = s->events().subscribe(f);
  DefragOptions options;
  options.device = DeviceId::host(0);
  auto report = s->defragment(kAdmin, options);
  ASSERT_TRUE(report) << report.error().message;
  auto seen = lines(*sub);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0]["event"], "defragment_started");
  EXPECT_GT(seen[0]["data"]["plannedMoves"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(seen[1]["event"], "defragment_finished");
  EXPECT_EQ(seen[1]["data"]["moves"], report->moves);
  EXPECT_EQ(seen[1]["data"]["bytesMoved"], report->bytes_moved);
}

TEST(ServiceEvents, ScheduledDefragmentationRunsOnAFragmentedIdleDevice) {
  auto s = make_service(DefragScheduleOptions{.fragmentation_threshold = 0.3, .min_idle = 0s});
  auto kept = fragment(*s);
  s->monitor().sample_now();  // reads the fragmentation; the hook defragments
  const auto frag = [&] {
    s->monitor().sample_now();
    for (const auto& d : s->monitor().cached_status()->devices)
      if (d.info.id == DeviceId::host(0)) return d.fragmentation;
    return 1.0;
  };
  EXPECT_LE(frag(), 0.05);
  // Not idle long enough: nothing runs.
  auto busy = make_service(DefragScheduleOptions{.fragmentation_threshold = 0.3, .min_idle = 1h});
  auto kept2 = fragment(*busy);
  auto sub = busy->events().subscribe({});
  busy->monitor().sample_now();
  for (const auto& e : lines(*sub)) EXPECT_NE(e["event"], "defragment_started");
}

}  // namespace
}  // namespace memd
