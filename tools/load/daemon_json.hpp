// load/daemon_json.hpp — the few things memd-load reads from the daemon's
// JSON answers, read defensively: an answer of any other shape is refused
// (nullopt), never trusted or thrown on.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace memd::load {

// Sum of devices[].allocatedBytes of a memory_status answer.
std::optional<std::uint64_t> allocated_bytes(const std::string& status_json);
// allocationId of a memory_allocate answer, only if it is a GUID (it goes
// into URLs).
std::optional<std::string> allocation_id(const std::string& allocate_json);
bool is_guid(const std::string& text);

}  // namespace memd::load
