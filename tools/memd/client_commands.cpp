// Client verbs: one REST call each, a table or the raw JSON out.
#include <algorithm>
#include <cctype>
#include <iostream>

#include "commands.hpp"
#include "memd/memory_types.hpp"
#include "memd/size.hpp"
#include "table.hpp"

namespace memd::cli {
namespace {

// The wire takes memory types in one spelling ("VRAM"); a person typing
// `--type vram` means the same, so the client spells it the wire's way.
// Anything else goes as typed, for the daemon to refuse with its message.
std::string wire_type(const std::string& typed) {
  for (auto t : {MemoryType::RAM, MemoryType::VRAM, MemoryType::SharedMemory, MemoryType::UnifiedMemory}) {
    const std::string_view name = to_string(t);
    if (name.size() == typed.size() &&
        std::equal(name.begin(), name.end(), typed.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        }))
      return std::string(name);
  }
  return typed;
}

int report(const Error& error) {
  std::cerr << "memd: " << to_string(error.code) << ": " << error.message << "\n";
  return 1;
}

std::string bytes_text(const nlohmann::json& v) {
  return v.is_number_unsigned() ? format_size(v.get<std::uint64_t>()) : (v.is_null() ? "-" : v.dump());
}

std::string text(const nlohmann::json& v, const char* key) {
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// Runs a call; prints JSON when asked, else hands the result to `human`.
template <typename Human>
int finish(const ClientFlags& c, Result<nlohmann::json> result, Human human) {
  if (!result) return report(result.error());
  try {
    if (c.json) std::cout << result->dump(2) << "\n";
    else human(*result);
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "memd: unexpected answer from the daemon: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

void add_query(std::string& target, const char* key, const std::string& value) {
  if (value.empty()) return;
  target += (target.find('?') == std::string::npos ? "?" : "&");
  target += key;
  target += "=" + url_encode(value);
}

void print_allocation(const nlohmann::json& r, const char* verb) {
  std::cout << verb << " " << text(r, "allocationId") << ": " << bytes_text(r["sizeBytes"]) << " "
            << text(r, "memoryType") << " on " << text(r, "deviceId") << " (owner "
            << text(r, "owner") << ")\n";
}

}  // namespace

int run_status(const ClientFlags& c, const std::string& device) {
  ApiClient api(c.client);
  const std::string target = device.empty() ? "/api/memory/status" : "/api/memory/status/" + url_encode(device);
  return finish(c, api.get(target), [](const nlohmann::json& r) {
    Table t({"DEVICE", "NAME", "TOTAL", "USED", "FREE", "RESERVED", "ALLOCATED", "ALLOCS", "FRAG",
             "LIMIT", "HEALTH"});
    for (const auto& d : r["devices"]) {
      char frag[16];
      std::snprintf(frag, sizeof frag, "%.0f%%", d.value("fragmentation", 0.0) * 100);
      t.add({text(d, "deviceId"), text(d, "name"), bytes_text(d["totalBytes"]), bytes_text(d["usedBytes"]),
             bytes_text(d["freeBytes"]), bytes_text(d["reservedBytes"]), bytes_text(d["allocatedBytes"]),
             text(d, "allocations"), frag, bytes_text(d["limitBytes"]), text(d, "health")});
    }
    std::cout << t.render() << "health: " << text(r, "health") << "\n";
  });
}

int run_allocations(const ClientFlags& c, const AllocationsFlags& f) {
  ApiClient api(c.client);
  std::string target = "/api/memory/allocations";
  add_query(target, "deviceId", f.device);
  add_query(target, "memoryType", wire_type(f.type));
  add_query(target, "owner", f.owner);
  add_query(target, "status", f.status);
  add_query(target, "tag", f.tag);
  add_query(target, "limit", std::to_string(f.limit));
  add_query(target, "offset", std::to_string(f.offset));
  return finish(c, api.get(target), [](const nlohmann::json& r) {
    Table t({"ID", "DEVICE", "TYPE", "SIZE", "OWNER", "PRIORITY", "STATUS", "NAME"});
    for (const auto& a : r["items"])
      t.add({text(a, "allocationId"), text(a, "deviceId"), text(a, "memoryType"), bytes_text(a["sizeBytes"]),
             text(a, "owner"), text(a, "priority"), text(a, "status"), text(a, "name")});
    std::cout << t.render() << r["items"].size() << " of " << text(r, "total") << " allocations\n";
  });
}

int run_allocate(const ClientFlags& c, const AllocateFlags& f) {
  ApiClient api(c.client);
  nlohmann::json body = {{"sizeBytes", f.size}};
  if (!f.type.empty()) body["memoryType"] = wire_type(f.type);
  if (!f.device.empty()) body["deviceId"] = f.device;
  if (!f.name.empty()) body["name"] = f.name;
  if (!f.priority.empty()) body["priority"] = f.priority;
  if (!f.allocation_type.empty()) body["allocationType"] = f.allocation_type;
  if (!f.tags.empty()) body["tags"] = f.tags;
  if (f.pinned) body["pinned"] = true;
  return finish(c, api.post("/api/memory/allocations", body),
                [](const nlohmann::json& r) { print_allocation(r, "allocated"); });
}

int run_free(const ClientFlags& c, const std::string& id) {
  ApiClient api(c.client);
  return finish(c, api.del("/api/memory/allocations/" + url_encode(id)),
                [](const nlohmann::json& r) { print_allocation(r, "freed"); });
}

int run_limits(const ClientFlags& c, const LimitsFlags& f) {
  ApiClient api(c.client);
  Result<nlohmann::json> result;
  if (f.device.empty() && f.type.empty() && f.owner.empty()) {
    result = api.get("/api/memory/limits");
  } else {
    if (f.bytes.empty() && !f.remove)
      return report({ErrorCode::invalid_argument, "give --bytes N to set the limit or --remove to drop it"});
    nlohmann::json body = {{"bytes", f.remove ? nlohmann::json(nullptr) : nlohmann::json(f.bytes)}};
    if (!f.device.empty()) body["deviceId"] = f.device;
    if (!f.type.empty()) body["memoryType"] = wire_type(f.type);
    if (!f.owner.empty()) body["owner"] = f.owner;
    result = api.put("/api/memory/limits", body);
  }
  return finish(c, std::move(result), [](const nlohmann::json& r) {
    Table t({"SCOPE", "NAME", "LIMIT"});
    for (const auto& [scope, key] : {std::pair{"device", "perDevice"}, std::pair{"memory type", "perMemoryType"},
                                     std::pair{"owner", "perOwner"}})
      for (const auto& [name, bytes] : r[key].items()) t.add({scope, name, bytes_text(bytes)});
    if (t.empty()) std::cout << "no limits set\n";
    else std::cout << t.render();
  });
}

int run_clear(const ClientFlags& c, const ClearFlags& f) {
  ApiClient api(c.client);
  nlohmann::json body = nlohmann::json::object();
  if (!f.owner.empty()) body["owner"] = f.owner;
  if (!f.type.empty()) body["memoryType"] = wire_type(f.type);
  if (!f.device.empty()) body["deviceId"] = f.device;
  if (!f.below_priority.empty()) body["belowPriority"] = f.below_priority;
  if (f.include_pinned) body["includePinned"] = true;
  return finish(c, api.post("/api/memory/clear", body), [](const nlohmann::json& r) {
    std::cout << "freed " << text(r, "freedAllocations") << " allocations (" << bytes_text(r["freedBytes"])
              << "), released " << bytes_text(r["releasedBytes"]) << " of cached memory\n";
  });
}

namespace {

void print_session(const nlohmann::json& r, const char* verb) {
  std::cout << verb << " session " << text(r, "sessionId") << " of " << text(r, "owner") << ": lease "
            << text(r, "ttlSeconds") << " s, expires " << text(r, "expiresAt") << "\n";
}

}  // namespace

int run_sessions(const ClientFlags& c) {
  ApiClient api(c.client);
  return finish(c, api.get("/api/sessions"), [](const nlohmann::json& r) {
    Table t({"SESSION", "OWNER", "TTL", "EXPIRES", "ALLOCS", "BYTES"});
    for (const auto& s : r["sessions"])
      t.add({text(s, "sessionId"), text(s, "owner"), text(s, "ttlSeconds") + " s", text(s, "expiresAt"),
             text(s, "allocations"), bytes_text(s["allocatedBytes"])});
    if (t.empty()) std::cout << "no open sessions\n";
    else std::cout << t.render();
  });
}

int run_session_open(const ClientFlags& c, std::optional<std::uint64_t> ttl_seconds) {
  ApiClient api(c.client);
  nlohmann::json body = nlohmann::json::object();
  if (ttl_seconds) body["ttlSeconds"] = *ttl_seconds;
  return finish(c, api.post("/api/sessions", body), [](const nlohmann::json& r) { print_session(r, "opened"); });
}

int run_session_heartbeat(const ClientFlags& c, const std::string& id) {
  ApiClient api(c.client);
  return finish(c, api.put("/api/sessions/" + url_encode(id), nlohmann::json::object()),
                [](const nlohmann::json& r) { print_session(r, "renewed"); });
}

int run_session_close(const ClientFlags& c, const std::string& id) {
  ApiClient api(c.client);
  return finish(c, api.del("/api/sessions/" + url_encode(id)), [](const nlohmann::json& r) {
    std::cout << "closed session " << text(r, "sessionId") << " of " << text(r, "owner") << ": released "
              << text(r, "releasedAllocations") << " allocations (" << bytes_text(r["releasedBytes"]) << ")\n";
  });
}

int run_optimize(const ClientFlags& c) {
  ApiClient api(c.client);
  return finish(c, api.post("/api/memory/optimize", nlohmann::json::object()), [](const nlohmann::json& r) {
    std::cout << "released " << bytes_text(r["releasedBytes"]) << " (reserved "
              << bytes_text(r["reservedBeforeBytes"]) << " -> " << bytes_text(r["reservedAfterBytes"]) << ")\n";
  });
}

}  // namespace memd::cli
