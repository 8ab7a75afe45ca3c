// load/proc_stats.hpp — what Linux says about a process's memory and the
// machine's.
//
// memd-load reads the daemon's resident set (VmRSS) and its high-water mark
// (VmHWM) from /proc/PID/status, and MemAvailable from /proc/meminfo, to
// report the daemon's peak and to stop a run before it hurts the machine.
// The parsers take the file's text, so tests feed them hostile text.
//
// Thread safety: pure functions and reads of /proc.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <sys/types.h>

namespace memd::load {

struct ProcMemory {
  std::uint64_t rss_bytes = 0;  // VmRSS
  std::uint64_t hwm_bytes = 0;  // VmHWM: the peak of VmRSS since the process started
};

// The value of a "Key:   123 kB" line in bytes; nullopt if absent or malformed.
std::optional<std::uint64_t> parse_kib_field(std::string_view text, std::string_view key);
std::optional<ProcMemory> parse_proc_status(std::string_view text);
// /proc/PID/status; nullopt when the process is gone (or not readable).
std::optional<ProcMemory> read_proc_memory(pid_t pid);
// MemAvailable from /proc/meminfo.
std::optional<std::uint64_t> read_mem_available();
// utime + stime (clock ticks) of a /proc/PID/stat line; nullopt if malformed.
std::optional<std::uint64_t> parse_proc_stat_cpu_ticks(std::string_view text);
// The CPU seconds (user + system) the process has used, from /proc/PID/stat.
std::optional<double> read_proc_cpu_seconds(pid_t pid);
// The soft "Max open files" of /proc/PID/limits.
std::optional<std::uint64_t> read_open_files_limit(pid_t pid);

}  // namespace memd::load
