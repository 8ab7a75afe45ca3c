#include "daemon_json.hpp"

#include <cctype>

#include <nlohmann/json.hpp>

namespace memd::load {

std::optional<std::uint64_t> allocated_bytes(const std::string& status_json) {
  const auto doc = nlohmann::json::parse(status_json, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return std::nullopt;
  const auto devices = doc.find("devices");
  if (devices == doc.end() || !devices->is_array()) return std::nullopt;
  std::uint64_t sum = 0;
  for (const auto& d : *devices) {
    if (!d.is_object()) return std::nullopt;
    const auto a = d.find("allocatedBytes");
    if (a == d.end() || !a->is_number_unsigned()) return std::nullopt;
    const auto v = a->get<std::uint64_t>();
    if (v > (std::uint64_t{1} << 62) || sum > (std::uint64_t{1} << 62)) return std::nullopt;
    sum += v;
  }
  return sum;
}

bool is_guid(const std::string& s) {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

std::optional<std::string> allocation_id(const std::string& allocate_json) {
  const auto doc = nlohmann::json::parse(allocate_json, nullptr, false);
  if (!doc.is_object()) return std::nullopt;
  const auto id = doc.find("allocationId");
  if (id == doc.end() || !id->is_string()) return std::nullopt;
  auto text = id->get<std::string>();
  if (!is_guid(text)) return std::nullopt;
  return text;
}

}  // namespace memd::load
