// memd/iso8601.hpp — times on the wire: "2026-12-06T21:04:02.123Z" (UTC,
// milliseconds), the one format every door and log line uses.
//
// Thread safety: pure function.
#pragma once

#include <chrono>
#include <string>

namespace memd {

std::string iso8601(std::chrono::system_clock::time_point t);

}  // namespace memd
