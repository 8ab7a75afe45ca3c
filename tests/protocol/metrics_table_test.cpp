// The metrics table (protocol/metrics_table.hpp) and its exposition: names
// Prometheus accepts with their units, every pool statistic expanded, and the
// readers' values from a snapshot written by hand.
#include <gtest/gtest.h>

#include <optional>
#include <regex>
#include <set>
#include <string>

#include "alloc/pool_stats.hpp"
#include "protocol/metrics_table.hpp"
#include "memd/size.hpp"
#include "protocol/metrics_text.hpp"

namespace memd {
namespace {

std::optional<double> sample(const std::string& text, const std::string& series) {
  std::size_t at = 0;
  while ((at = text.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
    at += series.size();
  }
  return std::nullopt;
}

TEST(MetricsTable, NamesCarryTheirUnitsAndAreUnique) {
  const std::regex valid("memd_[a-z0-9_]+");
  std::set<std::string> names;
  for (const auto& m : metric_table()) {
    EXPECT_TRUE(std::regex_match(m.name, valid)) << m.name;
    EXPECT_TRUE(names.insert(m.name).second) << "twice: " << m.name;
    EXPECT_FALSE(m.help.empty()) << m.name;
    EXPECT_TRUE(m.read) << m.name;
    // A counter's name ends in _total; nothing else's does (a gauge of a
    // count that only grows would mislead rate()).
    EXPECT_EQ(m.type == MetricType::Counter, m.name.ends_with("_total")) << m.name;
    if (m.name.find("bytes") != std::string::npos) {
      EXPECT_TRUE(m.name.ends_with("_bytes") || m.name.ends_with("_bytes_total")) << m.name;
    }
    if (m.type == MetricType::Histogram) {
      EXPECT_TRUE(m.name.ends_with("_seconds")) << m.name;
    }
  }
}

TEST(MetricsTable, EveryPoolStatisticIsExpanded) {
  std::size_t fields = 0;
#define MEMD_COUNT_FIELD(name, unit, help) ++fields;
  MEMD_POOL_STAT_FIELDS(MEMD_COUNT_FIELD)
#undef MEMD_COUNT_FIELD
  std::size_t pool_rows = 0;
  for (const auto& m : metric_table())
    if (m.name.starts_with("memd_pool_")) {
      ++pool_rows;
      EXPECT_EQ(m.labels, "device, memory_type") << m.name;
    }
  EXPECT_EQ(pool_rows, fields);
  std::set<std::string> names;
  for (const auto& m : metric_table()) names.insert(m.name);
  for (const char* expected : {"memd_pool_allocated_bytes", "memd_pool_allocations_total", "memd_pool_frees_total",
                               "memd_pool_failed_allocations_total", "memd_pool_mapping_seconds_total",
                               "memd_pool_largest_free_block_bytes", "memd_pool_fragmentation_ratio",
                               "memd_pool_live_allocations"})
    EXPECT_TRUE(names.contains(expected)) << expected;
  for (const auto& m : metric_table())
    if (m.name == "memd_pool_mapping_seconds_total") {
      EXPECT_TRUE(m.help.starts_with("Seconds ")) << "the help names the unit served: " << m.help;
    }
}

MetricsSnapshot hand_written() {
  MetricsSnapshot s;
  DeviceStatus d;
  d.info.id = DeviceId::host(0);
  d.total_bytes = 8 * kGiB;
  d.used_bytes = 3 * kGiB;
  d.free_bytes = 5 * kGiB;
  d.allocations = 7;
  d.limit_bytes = 6 * kGiB;
  d.pressure.level = PressureLevel::High;
  d.pressure.percent = 81.5;
  PoolStats vram;
  vram.total_allocations = 9;
  vram.mapping_ns = 2'500'000'000;
  d.pools[MemoryType::VRAM] = vram;
  s.status.devices.push_back(d);
  DeviceStatus cpu;
  cpu.info.id = DeviceId::cpu();
  s.status.devices.push_back(cpu);
  s.failures[DeviceId::host(0)] = FailureCounts{.out_of_memory = 2, .quota_exceeded = 1};
  s.status.transfers = TransferStats{.completed = 4, .bytes_copied = 1000, .timed = 3, .duration_ns = 1'500'000'000};
  // Two fine-tunes sharing one 100-byte VAE buffer, each with a 50-byte
  // UNet of its own; a third model on disk.
  const auto shared = AllocationId::generate();
  for (const char* name : {"a", "b"}) {
    ModelStatus m;
    m.name = name;
    m.state = ModelState::Loaded;
    m.components.push_back({.name = "vae", .bytes = 100, .tier = ModelTier::VRAM, .allocation = shared, .holders = 2});
    m.components.push_back(
        {.name = "unet", .bytes = 50, .tier = ModelTier::VRAM, .allocation = AllocationId::generate(), .holders = 1});
    s.models.push_back(m);
  }
  ModelStatus c;
  c.name = "c";
  c.state = ModelState::Failed;
  c.components.push_back({.name = "unet", .bytes = 70, .tier = ModelTier::Disk});
  s.models.push_back(c);
  s.model_counters = {.loads_completed = 2, .loads_failed = 1, .evictions = 5};
  s.predictor = {.uses = 10, .preloads = 4, .hits = 3, .misses = 1};
  s.sessions = 2;
  s.session_bytes = 4096;
  return s;
}

TEST(MetricsText, ReadsEachValueFromTheSnapshot) {
  const std::string text = metrics_text(hand_written());
  const std::string h0 = R"({device="host:0"})";
  EXPECT_EQ(sample(text, "memd_device_total_bytes" + h0), 8.0 * kGiB);
  EXPECT_EQ(sample(text, "memd_device_used_bytes" + h0), 3.0 * kGiB);
  EXPECT_EQ(sample(text, "memd_device_free_bytes" + h0), 5.0 * kGiB);
  EXPECT_EQ(sample(text, "memd_device_allocations" + h0), 7.0);
  EXPECT_EQ(sample(text, "memd_device_limit_bytes" + h0), 6.0 * kGiB);
  EXPECT_EQ(sample(text, R"(memd_device_limit_bytes{device="cpu"})"), std::nullopt) << "no limit, no sample";
  EXPECT_EQ(sample(text, "memd_device_pressure_level" + h0), 2.0);
  EXPECT_EQ(sample(text, "memd_device_pressure_ratio" + h0), 0.815);
  EXPECT_EQ(sample(text, R"(memd_device_pressure_state{device="host:0",level="High"})"), 1.0);
  EXPECT_EQ(sample(text, R"(memd_device_pressure_state{device="host:0",level="Low"})"), 0.0);
  EXPECT_EQ(sample(text, R"(memd_device_pressure_state{device="cpu",level="Low"})"), 1.0);
  EXPECT_EQ(sample(text, R"(memd_allocation_failures_total{code="out_of_memory",device="host:0"})"), 2.0);
  EXPECT_EQ(sample(text, R"(memd_allocation_failures_total{code="quota_exceeded",device="host:0"})"), 1.0);
  const std::string pool = R"({device="host:0",memory_type="VRAM"})";
  EXPECT_EQ(sample(text, "memd_pool_allocations_total" + pool), 9.0);
  EXPECT_EQ(sample(text, "memd_pool_mapping_seconds_total" + pool), 2.5);
  EXPECT_EQ(sample(text, R"(memd_transfers_finished_total{status="Completed"})"), 4.0);
  EXPECT_EQ(sample(text, "memd_transfer_bytes_total"), 1000.0);
  EXPECT_EQ(sample(text, "memd_transfer_duration_seconds_count"), 3.0);
  EXPECT_EQ(sample(text, "memd_transfer_duration_seconds_sum"), 1.5);
  EXPECT_EQ(sample(text, R"(memd_transfer_duration_seconds_bucket{le="+Inf"})"), 3.0);
  EXPECT_EQ(sample(text, R"(memd_models{state="Loaded"})"), 2.0);
  EXPECT_EQ(sample(text, R"(memd_models{state="Failed"})"), 1.0);
  EXPECT_EQ(sample(text, R"(memd_model_bytes{tier="VRAM"})"), 300.0) << "the shared VAE under each holder";
  EXPECT_EQ(sample(text, R"(memd_model_bytes{tier="Disk"})"), 70.0);
  EXPECT_EQ(sample(text, R"(memd_model_bytes{tier="RAM"})"), 0.0);
  EXPECT_EQ(sample(text, "memd_model_shared_savings_bytes"), 100.0) << "one VAE copy saved, counted once";
  EXPECT_EQ(sample(text, R"(memd_model_loads_total{result="completed"})"), 2.0);
  EXPECT_EQ(sample(text, R"(memd_model_loads_total{result="failed"})"), 1.0);
  EXPECT_EQ(sample(text, "memd_model_evictions_total"), 5.0);
  EXPECT_EQ(sample(text, "memd_model_preload_hits_total"), 3.0);
  EXPECT_EQ(sample(text, "memd_model_preload_misses_total"), 1.0);
  EXPECT_EQ(sample(text, "memd_sessions_open"), 2.0);
  EXPECT_EQ(sample(text, "memd_session_leased_bytes"), 4096.0);
}

}  // namespace
}  // namespace memd
