// protocol/metrics_text.hpp — the Prometheus text exposition of the metrics
// table (protocol/metrics_table.hpp): what GET /metrics answers.
//
// Each scrape builds a prometheus::Registry from the table's rows and a
// snapshot, and prometheus-cpp's TextSerializer writes it: the format's
// escaping, HELP/TYPE lines and number formatting come from the library, not
// from memd. Only prometheus-cpp's core is used; memd's own HTTP server
// serves the text (never prometheus-cpp's exposer).
//
// Thread safety: pure functions of their arguments.
#pragma once

#include <string>
#include <string_view>

#include "memd/error.hpp"
#include "protocol/metrics_table.hpp"

namespace memd {

// The exposition format's version 0.0.4, as Prometheus asks for it.
inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string metrics_text(const MetricsSnapshot& snapshot);
// gather_metrics, then metrics_text.
Result<std::string> metrics_text(MemoryService& service);

}  // namespace memd
