// load/report.hpp — memd-load's report, for people and as JSON.
//
// Thread safety: pure functions of a finished RunReport.
#pragma once

#include <string>

#include "load_options.hpp"
#include "load_run.hpp"

namespace memd::load {

std::string report_text(const LoadOptions& options, const RunReport& report);
std::string report_json(const LoadOptions& options, const RunReport& report);

}  // namespace memd::load
