#include "watchdog.hpp"

#include <fmt/format.h>

#include "memd/size.hpp"
#include "proc_stats.hpp"

namespace memd::load {

void Watchdog::start() { thread_ = std::thread([this] { loop(); }); }

void Watchdog::finish() {
  done_ = true;
  if (thread_.joinable()) thread_.join();
}

void Watchdog::loop() {
  for (unsigned tick = 0; !done_.load(); ++tick) {
    const auto mem = read_proc_memory(daemon_.pid());
    if (!mem || daemon_.exited()) {
      if (!done_.load() && stop_.request("the daemon exited during the run")) tripped_ = true;
      return;
    }
    rss_ = mem->rss_bytes;
    hwm_ = std::max(hwm_.load(), mem->hwm_bytes);
    if (mem->rss_bytes > max_rss_.load()) max_rss_ = mem->rss_bytes;
    if (mem->rss_bytes > rss_limit_) {
      daemon_.kill_now();
      tripped_ = true;
      stop_.request(fmt::format("watchdog: the daemon's RSS {} passed --rss-limit {}{}", format_size(mem->rss_bytes),
                                format_size(rss_limit_), daemon_.spawned() ? " (daemon killed)" : ""));
      return;
    }
    if (tick % 5 == 0) {
      if (const auto avail = read_mem_available()) {
        if (*avail < min_avail_seen_.load()) min_avail_seen_ = *avail;
        if (*avail < min_available_) {
          daemon_.kill_now();
          tripped_ = true;
          stop_.request(fmt::format("watchdog: MemAvailable {} fell under --min-available {}{}",
                                    format_size(*avail), format_size(min_available_),
                                    daemon_.spawned() ? " (daemon killed)" : ""));
          return;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace memd::load
