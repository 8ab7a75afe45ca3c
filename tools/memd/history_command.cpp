// memd history: the recent allocation history, or one out-of-memory
// snapshot (memory_history, memory_history_snapshot).
#include <iostream>

#include "commands.hpp"
#include "history_view.hpp"

namespace memd::cli {

int run_history(const ClientFlags& c, const HistoryFlags& f) {
  ApiClient api(c.client);
  Result<nlohmann::json> result;
  if (f.snapshot_id.empty()) {
    std::string target = "/api/memory/history?limit=" + std::to_string(f.limit.value_or(100));
    if (!f.device.empty()) target += "&deviceId=" + url_encode(f.device);
    if (!f.owner.empty()) target += "&owner=" + url_encode(f.owner);
    result = api.get(target);
  } else {
    result = api.get("/api/memory/history/" + url_encode(f.snapshot_id));
  }
  if (!result) {
    std::cerr << "memd: " << to_string(result.error().code) << ": " << result.error().message << "\n";
    return 1;
  }
  try {
    if (c.json) std::cout << result->dump(2) << "\n";
    else if (f.snapshot_id.empty()) std::cout << render_history(*result);
    else std::cout << render_snapshot(*result, f.limit.value_or(20));
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "memd: unexpected answer from the daemon: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace memd::cli
