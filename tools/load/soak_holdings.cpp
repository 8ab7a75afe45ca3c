#include "soak_holdings.hpp"

#include <span>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "pattern.hpp"

namespace memd::load {
namespace {

using json = nlohmann::json;
constexpr std::uint64_t kCountMax = std::uint64_t{1} << 62;

// A non-negative integer member under the bound, or nullopt.
std::optional<std::uint64_t> count_of(const json& object, const char* key) {
  if (!object.is_object()) return std::nullopt;
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number_unsigned()) return std::nullopt;
  const auto v = it->get<std::uint64_t>();
  if (v > kCountMax) return std::nullopt;
  return v;
}

bool add(std::uint64_t& sum, std::optional<std::uint64_t> v) {
  if (!v || sum > kCountMax) return false;
  sum += *v;
  return true;
}

}  // namespace

std::optional<DaemonHoldings> parse_holdings(const std::string& status_json, const std::string& usage_json,
                                             const std::string& sessions_json, const std::string& models_json,
                                             std::string& why) {
  DaemonHoldings h;
  const auto status = json::parse(status_json, nullptr, false);
  const auto devices = status.is_object() ? status.find("devices") : status.end();
  if (!status.is_object() || devices == status.end() || !devices->is_array()) {
    why = "memory_status: no devices array";
    return std::nullopt;
  }
  for (const auto& d : *devices) {
    if (!add(h.allocations, count_of(d, "allocations")) || !add(h.allocated_bytes, count_of(d, "allocatedBytes"))) {
      why = "memory_status: a device without allocations / allocatedBytes";
      return std::nullopt;
    }
    const auto pools = d.find("pools");
    if (pools == d.end() || !pools->is_array()) {
      why = "memory_status: a device without a pools array";
      return std::nullopt;
    }
    for (const auto& p : *pools)
      if (!add(h.pool_bytes, count_of(p, "allocatedBytes"))) {
        why = "memory_status: a pool without allocatedBytes";
        return std::nullopt;
      }
  }
  const auto transfers = status.find("transfers");
  if (transfers == status.end() || !add(h.transfers_open, count_of(*transfers, "pending")) ||
      !add(h.transfers_open, count_of(*transfers, "inProgress"))) {
    why = "memory_status: no transfers.pending / transfers.inProgress";
    return std::nullopt;
  }

  // memory_status has no pinned block where there is no pinned pool.
  std::uint64_t staging_size = 0;
  if (const auto pinned = status.find("pinned"); pinned != status.end() && !pinned->is_null()) {
    const auto size = count_of(*pinned, "stagingBufferBytes");
    const auto in_use = count_of(*pinned, "stagingBuffersInUse");
    const auto idle = count_of(*pinned, "stagingIdleBuffers");
    if (!size || !in_use || !idle || *size > (std::uint64_t{1} << 40) || *in_use + *idle > (1u << 20)) {
      why = "memory_status: pinned without stagingBufferBytes / stagingBuffersInUse / stagingIdleBuffers";
      return std::nullopt;
    }
    staging_size = *size;
    h.staging_in_use = *in_use;
    h.staging_idle = *idle;
  }
  std::uint64_t staging_bytes = 0;
  const std::uint64_t staging_count = h.staging_in_use + h.staging_idle;
  if (staging_count > 0) {
    staging_bytes = staging_count * staging_size;
    if (staging_count > h.allocations || staging_bytes > h.allocated_bytes || staging_bytes > h.pool_bytes) {
      why = "memory_status: more staging buffers than allocations";
      return std::nullopt;
    }
    h.allocations -= staging_count;
    h.allocated_bytes -= staging_bytes;
    h.pool_bytes -= staging_bytes;
  }

  const auto usage = json::parse(usage_json, nullptr, false);
  const auto total = usage.is_object() ? usage.find("total") : usage.end();
  if (!usage.is_object() || total == usage.end() || !add(h.usage_allocations, count_of(*total, "allocations")) ||
      !add(h.requested_bytes, count_of(*total, "requestedBytes"))) {
    why = "memory_usage: no total.allocations / total.requestedBytes";
    return std::nullopt;
  }
  if (staging_count > h.usage_allocations) {
    why = "memory_usage: fewer allocations than staging buffers";
    return std::nullopt;
  }
  h.usage_allocations -= staging_count;

  const auto sessions = json::parse(sessions_json, nullptr, false);
  const auto list = sessions.is_object() ? sessions.find("sessions") : sessions.end();
  if (!sessions.is_object() || list == sessions.end() || !list->is_array()) {
    why = "memory_sessions: no sessions array";
    return std::nullopt;
  }
  h.sessions = list->size();

  const auto models = json::parse(models_json, nullptr, false);
  const auto mlist = models.is_object() ? models.find("models") : models.end();
  const auto cache = count_of(models, "ramCacheBytes");
  if (!models.is_object() || mlist == models.end() || !mlist->is_array() || !cache) {
    why = "memory_model_status: no models array / ramCacheBytes";
    return std::nullopt;
  }
  h.model_cache_bytes = *cache;
  for (const auto& m : *mlist) {
    std::uint64_t bytes = 0;
    if (!add(bytes, count_of(m, "vramBytes")) || !add(bytes, count_of(m, "ramBytes"))) {
      why = "memory_model_status: a model without vramBytes / ramBytes";
      return std::nullopt;
    }
    if (bytes > 0) ++h.models_holding;
  }
  return h;
}

std::vector<std::string> compare_holdings(const DaemonHoldings& start, const DaemonHoldings& end) {
  std::vector<std::string> leaks;
  auto check = [&](const char* what, std::uint64_t a, std::uint64_t b) {
    if (b > a) leaks.push_back(fmt::format("{} {} -> {}", what, a, b));
  };
  check("allocations", start.allocations, end.allocations);
  check("allocatedBytes", start.allocated_bytes, end.allocated_bytes);
  check("pool allocatedBytes", start.pool_bytes, end.pool_bytes);
  check("usage allocations", start.usage_allocations, end.usage_allocations);
  check("usage requestedBytes", start.requested_bytes, end.requested_bytes);
  check("open sessions", start.sessions, end.sessions);
  check("transfers pending or in progress", start.transfers_open, end.transfers_open);
  check("models holding bytes", start.models_holding, end.models_holding);
  check("model ramCacheBytes", start.model_cache_bytes, end.model_cache_bytes);
  check("staging buffers in use", start.staging_in_use, end.staging_in_use);
  return leaks;
}

std::string safetensors_file(std::uint64_t seed, std::uint64_t n) {
  std::string header = fmt::format(R"({{"weight":{{"dtype":"U8","shape":[{}],"data_offsets":[0,{}]}}}})", n, n);
  // The data starts 8-aligned, as writers pad the header with spaces.
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');
  std::string out(8, '\0');
  const std::uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  out += header;
  const std::size_t at = out.size();
  out.resize(at + n);
  fill_pattern(seed, 0, std::as_writable_bytes(std::span(out.data() + at, n)));
  return out;
}

}  // namespace memd::load
