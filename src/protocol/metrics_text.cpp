// The metrics table through prometheus-cpp's registry and text serializer.
#include "protocol/metrics_text.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace memd {

std::string metrics_text(const MetricsSnapshot& snapshot) {
  // A fresh registry per scrape: the values are read from memd's own state
  // each time, so nothing is kept between scrapes, and a metric whose labels
  // went away (a model unloaded) leaves no stale sample behind.
  prometheus::Registry registry;
  std::vector<MetricSample> samples;
  for (const auto& spec : metric_table()) {
    samples.clear();
    spec.read(snapshot, samples);
    switch (spec.type) {
      case MetricType::Gauge: {
        auto& family = prometheus::BuildGauge().Name(spec.name).Help(spec.help).Register(registry);
        for (const auto& s : samples) family.Add(s.labels).Set(s.value);
        break;
      }
      case MetricType::Counter: {
        auto& family = prometheus::BuildCounter().Name(spec.name).Help(spec.help).Register(registry);
        for (const auto& s : samples) family.Add(s.labels).Increment(s.value);
        break;
      }
      case MetricType::Histogram: {
        // No bucket boundaries: memd keeps each histogram's count and sum,
        // which is what the +Inf bucket, _count and _sum are.
        auto& family = prometheus::BuildHistogram().Name(spec.name).Help(spec.help).Register(registry);
        for (const auto& s : samples)
          family.Add(s.labels, prometheus::Histogram::BucketBoundaries{})
              .ObserveMultiple({static_cast<double>(s.count)}, s.value);
        break;
      }
    }
  }
  return prometheus::TextSerializer{}.Serialize(registry.Collect());
}

Result<std::string> metrics_text(MemoryService& service) {
  auto snapshot = gather_metrics(service);
  if (!snapshot) return fail(snapshot.error());
  return metrics_text(*snapshot);
}

}  // namespace memd
