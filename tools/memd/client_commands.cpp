// Client verbs: one REST call each, a table or the raw JSON out; transfer
// and move then wait on what they started (transfer_wait.hpp).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>
#include <chrono>

#include <fmt/format.h>

#include "commands.hpp"
#include "memd/memory_types.hpp"
#include "memd/size.hpp"
#include "table.hpp"
#include "transfer_wait.hpp"

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
  return finish(c, api.get(target), [&](const nlohmann::json& r) {
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
    // The whole machine: how each GPU-like device (row) reaches each other
    // one (column), as the daemon's memory_devices has it (memd devices
    // prints the same matrix from local discovery).
    if (!device.empty()) return;
    auto devices = api.get("/api/memory/devices");
    if (!devices) return;
    std::vector<const nlohmann::json*> gpu_like;
    for (const auto& d : (*devices)["devices"])
      if (text(d, "deviceId") != "cpu") gpu_like.push_back(&d);
    if (gpu_like.size() < 2) return;
    std::vector<std::string> headers{"PEERS"};
    for (const auto* d : gpu_like) headers.push_back(text(*d, "deviceId"));
    Table peers(std::move(headers));
    for (const auto* row : gpu_like) {
      std::vector<std::string> cells{text(*row, "deviceId")};
      for (const auto* column : gpu_like) {
        std::string access = "-";
        if (row == column) access = "self";
        else if (auto p = row->find("peers"); p != row->end())
          for (const auto& peer : *p)
            if (text(peer, "deviceId") == text(*column, "deviceId")) access = text(peer, "access");
        cells.push_back(std::move(access));
      }
      peers.add(std::move(cells));
    }
    std::cout << "\n" << peers.render();
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
  if (f.exportable) body["exportable"] = true;
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

int run_defragment(const ClientFlags& c, const DefragmentFlags& f) {
  ApiClient api(c.client);
  nlohmann::json body = nlohmann::json::object();
  if (!f.device.empty()) body["deviceId"] = f.device;
  if (!f.max_bytes.empty()) body["maxBytesPerPass"] = f.max_bytes;
  if (f.max_moves != 0) body["maxMovesPerPass"] = f.max_moves;
  if (f.max_passes != 0) body["maxPasses"] = f.max_passes;
  if (f.no_remap) body["allowRemap"] = false;
  if (f.dry_run) body["dryRun"] = true;
  return finish(c, api.post("/api/memory/defragment", body), [](const nlohmann::json& r) {
    auto ratio = [](const nlohmann::json& v) { return v.is_number() ? fmt::format("{:.3f}", v.get<double>()) : "-"; };
    Table t({"DEVICE", "TYPE", "FRAG BEFORE", "FRAG AFTER", "RESERVED BEFORE", "RESERVED AFTER", "MOVES"});
    for (const auto& d : r["devices"])
      t.add({text(d, "deviceId"), text(d, "memoryType"), ratio(d["fragmentationBefore"]), ratio(d["fragmentationAfter"]),
             bytes_text(d["reservedBytesBefore"]), bytes_text(d["reservedBytesAfter"]), text(d, "moves")});
    if (!t.empty()) std::cout << t.render();
    if (r.value("dryRun", false)) {
      std::uint64_t bytes = 0;
      for (const auto& m : r["plan"]) bytes += m.value("sizeBytes", std::uint64_t{0});
      std::cout << "dry run: " << r["plan"].size() << " moves planned (" << format_size(bytes) << ") in "
                << text(r, "passes") << " passes; nothing moved\n";
      return;
    }
    std::cout << "moved " << text(r, "moves") << " allocations: " << bytes_text(r["bytesMoved"]) << " copied, "
              << bytes_text(r["bytesRemapped"]) << " remapped (" << text(r, "remaps") << " remaps), "
              << text(r, "skipped") << " skipped (in use), " << text(r, "passes") << " passes, "
              << ratio(r["durationMs"]) << " ms\n";
  });
}

// ---- Transfers (issue 13) ------------------------------------------------

namespace {

std::string rate_text(const nlohmann::json& v) {
  if (!v.is_number() || !(v.get<double>() > 0)) return "-";
  return format_size(static_cast<std::uint64_t>(v.get<double>())) + "/s";
}

void add_transfer_row(Table& t, const nlohmann::json& r) {
  t.add({text(r, "transferId"), text(r, "kind"), text(r, "status"),
         text(r, "sourceDeviceId") + " " + text(r, "sourceMemoryType"),
         text(r, "destinationDeviceId") + " " + text(r, "destinationMemoryType"),
         bytes_text(r["bytesDone"]) + " / " + bytes_text(r["sizeBytes"]), rate_text(r["rateBytesPerSecond"]),
         text(r, "path")});
}

// A transfer's report is one row; a batch's is a row per member and a line
// for the batch.
void print_transfer(const nlohmann::json& r) {
  Table t({"TRANSFER", "KIND", "STATUS", "FROM", "TO", "DONE", "RATE", "PATH"});
  if (is_batch_report(r)) {
    for (const auto& m : r["transfers"]) add_transfer_row(t, m);
    std::cout << t.render() << "batch " << text(r, "batchId") << " " << text(r, "status") << ": "
              << r["transfers"].size() << " transfers, " << bytes_text(r["bytesDone"]) << " of "
              << bytes_text(r["sizeBytes"]) << "\n";
  } else {
    add_transfer_row(t, r);
    std::cout << t.render();
  }
}

std::string error_text(const nlohmann::json& r) {
  auto it = r.find("error");
  if (it == r.end() || !it->is_object()) return "ended " + text(r, "status");
  return text(*it, "code") + ": " + text(*it, "message");
}

// Why a finished transfer did not complete, on stderr. A batch lists every
// member that did not complete, so a script sees which ids to retry.
void explain_unfinished(const nlohmann::json& r, bool interrupted) {
  const char* lead = interrupted ? "memd: interrupted: " : "memd: ";
  if (!is_batch_report(r)) {
    // Our own Ctrl-C needs no code: the message says how far it got.
    const bool ours = interrupted && r.value("status", "") == "Cancelled" && r.contains("error") &&
                      r["error"].is_object();
    std::cerr << lead << (ours ? text(r["error"], "message") : error_text(r)) << "\n";
    return;
  }
  std::size_t bad = 0;
  for (const auto& m : r["transfers"]) bad += m.value("status", "") != "Completed";
  std::cerr << lead << "batch " << text(r, "batchId") << " " << text(r, "status") << ": " << bad << " of "
            << r["transfers"].size() << " transfers did not complete\n";
  for (const auto& m : r["transfers"])
    if (m.value("status", "") != "Completed")
      std::cerr << "  " << text(m, "transferId") << " " << text(m, "status") << ": " << error_text(m) << "\n";
}

// Prints a report (JSON or table) and maps its status to the exit code.
int print_outcome(const ClientFlags& c, const nlohmann::json& r, bool interrupted) {
  try {
    if (c.json) std::cout << r.dump(2) << "\n";
    else print_transfer(r);
    std::cout.flush();
    const std::string status = r.value("status", "");
    if (status == "Completed") return 0;
    explain_unfinished(r, interrupted);
    // 128 + SIGINT, as a shell reports a command Ctrl-C ended. One that
    // completed before the cancel landed reports its real outcome, 0.
    return interrupted && status == "Cancelled" ? 130 : 1;
  } catch (const nlohmann::json::exception& e) {
    std::cerr << "memd: unexpected answer from the daemon: " << e.what() << "\n";
    return 1;
  }
}

// Submits (the caller's `submit`) and, unless --no-wait, waits for the end.
// The Ctrl-C guard is up before the request goes, so an interrupt that
// lands while it is in flight still cancels what it started instead of
// leaving it to run with nobody watching.
template <typename Submit>
int submit_and_wait(const ClientFlags& c, bool no_wait, Submit submit) {
  ApiClient api(c.client);
  if (no_wait) return finish(c, submit(api), print_transfer);
  InterruptGuard guard;
  auto submitted = submit(api);
  if (!submitted) return report(submitted.error());
  auto waited = wait_for_transfer(api, std::move(*submitted), {.show_progress = ::isatty(STDERR_FILENO) == 1});
  if (!waited) return report(waited.error());
  return print_outcome(c, waited->report, waited->interrupted);
}

void put_size(nlohmann::json& body, const char* key, const std::string& typed) {
  if (!typed.empty()) body[key] = typed;
}

// --batch FILE: a JSON array of transfer objects, passed on as they are (the
// daemon checks each member and names it, "transfers[2]: ...").
Result<nlohmann::json> read_batch(const std::string& file) {
  std::string content;
  if (file == "-") {
    content.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) return fail(ErrorCode::invalid_argument, "cannot read {}: {}", file, std::strerror(errno));
    content.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string name = file == "-" ? "stdin" : file;
  auto json = nlohmann::json::parse(content, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return fail(ErrorCode::invalid_argument, "{} is not JSON", name);
  if (!json.is_array())
    return fail(ErrorCode::invalid_argument,
                "{} must hold a JSON array of transfers ({{\"sourceAllocationId\": ..., "
                "\"destinationAllocationId\": ...}})",
                name);
  for (std::size_t i = 0; i < json.size(); ++i)
    if (!json[i].is_object()) return fail(ErrorCode::invalid_argument, "{}: item {} is not an object", name, i);
  return json;
}

std::string duration_text(const nlohmann::json& us_json) {
  if (!us_json.is_number()) return "-";
  const double us = us_json.get<double>();
  char buf[32];
  if (us < 1000) std::snprintf(buf, sizeof buf, "%.0f µs", us);
  else if (us < 1e6) std::snprintf(buf, sizeof buf, "%.1f ms", us / 1e3);
  else std::snprintf(buf, sizeof buf, "%.2f s", us / 1e6);
  return buf;
}

}  // namespace

int run_transfer(const ClientFlags& c, const TransferFlags& f) {
  nlohmann::json body = nlohmann::json::object();
  if (!f.batch_file.empty()) {
    if (!f.source.empty() || !f.destination.empty())
      return report({ErrorCode::invalid_argument, "give SRC DST or --batch FILE, not both"});
    auto batch = read_batch(f.batch_file);
    if (!batch) return report(batch.error());
    body["transfers"] = std::move(*batch);
  } else {
    if (f.source.empty() || f.destination.empty())
      return report({ErrorCode::invalid_argument, "give SRC DST (allocation ids) or --batch FILE"});
    body["sourceAllocationId"] = f.source;
    body["destinationAllocationId"] = f.destination;
    put_size(body, "sourceOffset", f.source_offset);
    put_size(body, "destinationOffset", f.destination_offset);
    put_size(body, "sizeBytes", f.size);
  }
  put_size(body, "maxBytesPerSecond", f.max_rate);
  return submit_and_wait(c, f.no_wait, [&](ApiClient& api) { return api.post("/api/memory/transfers", body); });
}

int run_move(const ClientFlags& c, const MoveFlags& f) {
  nlohmann::json body = {{"deviceId", f.device}};
  if (!f.type.empty()) body["memoryType"] = wire_type(f.type);
  put_size(body, "maxBytesPerSecond", f.max_rate);
  return submit_and_wait(c, f.no_wait, [&](ApiClient& api) {
    return api.post("/api/memory/allocations/" + url_encode(f.id) + "/move", body);
  });
}

int run_copy(const ClientFlags& c, const TransferFlags& f) {
  ApiClient api(c.client);
  nlohmann::json body = {{"sourceAllocationId", f.source}, {"destinationAllocationId", f.destination}};
  put_size(body, "sourceOffset", f.source_offset);
  put_size(body, "destinationOffset", f.destination_offset);
  put_size(body, "sizeBytes", f.size);
  return finish(c, api.post("/api/memory/copy", body), [](const nlohmann::json& r) {
    std::cout << "copied " << bytes_text(r["bytesCopied"]) << " from " << text(r, "sourceAllocationId") << "+"
              << text(r, "sourceOffset") << " to " << text(r, "destinationAllocationId") << "+"
              << text(r, "destinationOffset") << " via " << text(r, "path") << " in "
              << duration_text(r["durationUs"]) << " (" << rate_text(r["rateBytesPerSecond"]) << ")\n";
  });
}

int run_transfer_status(const ClientFlags& c, const std::string& id) {
  ApiClient api(c.client);
  return finish(c, api.get("/api/memory/transfers/" + url_encode(id)), print_transfer);
}

int run_transfer_cancel(const ClientFlags& c, const std::string& id) {
  ApiClient api(c.client);
  return finish(c, api.del("/api/memory/transfers/" + url_encode(id)), print_transfer);
}

namespace {

void print_export(const nlohmann::json& r) {
  std::string owners;
  for (const auto& o : r.value("owners", nlohmann::json::array())) owners += (owners.empty() ? "" : ", ") + o.get<std::string>();
  std::cout << (r.value("released", false) ? "released" : "exported") << " " << text(r, "allocationId") << " as "
            << text(r, "exportId") << " for " << owners;
  if (r.contains("socket") && r["socket"].is_string())
    std::cout << "\nimport it over unix:" << r["socket"].get<std::string>()
              << " (memory_import, e.g. python3 tools/memd_import.py --socket " << r["socket"].get<std::string>()
              << " " << text(r, "exportId") << ")";
  std::cout << "\n";
}

}  // namespace

int run_export(const ClientFlags& c, const std::string& id, const std::vector<std::string>& owners) {
  ApiClient api(c.client);
  return finish(c, api.post("/api/memory/allocations/" + url_encode(id) + "/export", {{"owners", owners}}),
                print_export);
}

int run_export_release(const ClientFlags& c, const std::string& id, const std::string& export_id) {
  ApiClient api(c.client);
  return finish(c, api.del("/api/memory/allocations/" + url_encode(id) + "/export/" + url_encode(export_id)),
                print_export);
}

// ---- Models (issue 15) ---------------------------------------------------

namespace {

void print_models(const nlohmann::json& models) {
  Table t({"NAME", "STATE", "TIER", "DEVICE", "SIZE", "VRAM", "RAM", "SHARED", "TENSORS", "HITS", "PRIORITY"});
  for (const auto& m : models)
    t.add({text(m, "name"), text(m, "state"), text(m, "tier"), text(m, "deviceId"), bytes_text(m["sizeBytes"]),
           bytes_text(m["vramBytes"]), bytes_text(m["ramBytes"]), bytes_text(m["sharedBytes"]), text(m, "tensors"),
           text(m, "hits"), text(m, "priority") + (m.value("pinned", false) ? ", pinned" : "")});
  if (t.empty()) std::cout << "no models\n";
  else std::cout << t.render();
}

void print_model(const nlohmann::json& m) {
  print_models(nlohmann::json::array({m}));
  Table t({"COMPONENT", "SIZE", "TENSORS", "TIER", "SHARED WITH", "ALLOCATION"});
  for (const auto& c : m["components"])
    t.add({text(c, "name"), bytes_text(c["sizeBytes"]), text(c, "tensors"), text(c, "tier"), text(c, "sharedWith"),
           text(c, "allocationId")});
  if (!t.empty()) std::cout << t.render();
  if (m.contains("error")) std::cout << "error: " << text(m, "error") << "\n";
}

}  // namespace

int run_load_model(const ClientFlags& c, const LoadModelFlags& f) {
  ApiClient api(c.client);
  nlohmann::json body{{"name", f.name}, {"path", f.path}};
  if (!f.device.empty()) body["deviceId"] = f.device;
  if (!f.placement.empty()) body["placement"] = f.placement;
  if (!f.priority.empty()) body["priority"] = f.priority;
  if (!f.dtype.empty()) body["dtype"] = f.dtype;
  if (f.keep_alive_seconds) body["keepAliveSeconds"] = *f.keep_alive_seconds;
  if (f.pin) body["pinned"] = true;
  auto started = api.post("/api/memory/models", body);
  if (!started) return report(started.error());
  // Polls the model's status until its job ends, drawing the progress line
  // on a terminal (bytes landed of the model's bytes, the rate seen).
  const std::string target = "/api/memory/models/" + url_encode(f.name);
  ProgressLine line(!c.json && ::isatty(STDERR_FILENO) == 1);
  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json status = *started;
  auto interval = std::chrono::milliseconds(50);
  while (status.value("state", "") == "Loading") {
    std::this_thread::sleep_for(interval);
    interval = std::min(interval * 2, std::chrono::milliseconds(500));
    auto now = api.get(target);
    if (!now) return report(now.error());
    status = *now;
    const auto& p = status["progress"];
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ProgressSample sample;
    sample.bytes_done = p.value("bytesDone", std::uint64_t{0});
    sample.total_bytes = p.value("bytesTotal", std::uint64_t{0});
    sample.rate_bytes_per_second = secs > 0 ? static_cast<double>(sample.bytes_done) / secs : 0;
    sample.finished = status.value("state", "") != "Loading";
    line.draw(format_progress(sample) + "  " + p.value("stage", ""));
  }
  line.finish();
  const bool failed = status.value("state", "") == "Failed";
  if (c.json) std::cout << status.dump(2) << "\n";
  else if (failed) std::cerr << "memd: load of '" << f.name << "' failed: " << text(status, "error") << "\n";
  else {
    std::cout << "loaded " << text(status, "name") << ": " << bytes_text(status["sizeBytes"]) << " in "
              << text(status, "tier") << " on " << text(status, "deviceId");
    if (status.contains("loadGBps"))
      std::cout << fmt::format(" ({:.2f} s, {:.2f} GB/s)", status.value("loadSeconds", 0.0),
                               status.value("loadGBps", 0.0));
    std::cout << "\n";
  }
  return failed ? 1 : 0;
}

int run_models(const ClientFlags& c, const std::string& name) {
  ApiClient api(c.client);
  if (!name.empty()) return finish(c, api.get("/api/memory/models/" + url_encode(name)), print_model);
  return finish(c, api.get("/api/memory/models"), [](const nlohmann::json& r) {
    print_models(r["models"]);
    std::cout << "RAM cache: " << bytes_text(r["ramCacheBytes"]) << "\n";
  });
}

int run_unload(const ClientFlags& c, const std::string& name) {
  ApiClient api(c.client);
  return finish(c, api.del("/api/memory/models/" + url_encode(name)), [](const nlohmann::json& r) {
    std::cout << "unloaded " << text(r, "name") << " (" << bytes_text(r["sizeBytes"]) << ")\n";
  });
}

int run_optimize_models(const ClientFlags& c, const std::string& device, bool dry_run) {
  ApiClient api(c.client);
  nlohmann::json body = nlohmann::json::object();
  if (!device.empty()) body["deviceId"] = device;
  if (dry_run) body["dryRun"] = true;
  return finish(c, api.post("/api/memory/models/optimize", body), [](const nlohmann::json& r) {
    const bool dry = r.value("dryRun", false);
    Table moved({"MODEL", "DEVICE", "FROM", "TO", "SIZE"});
    for (const auto& m : r["moved"])
      moved.add({text(m, "name"), text(m, "deviceId"), text(m, "fromTier"), text(m, "toTier"),
                 bytes_text(m["sizeBytes"])});
    if (moved.empty()) std::cout << (dry ? "no model would move\n" : "no model moved\n");
    else std::cout << moved.render();
    for (const auto& f : r["freed"])
      std::cout << (dry ? "would free " : "freed ") << bytes_text(f["bytes"]) << " of " << text(f, "tier") << " on "
                << text(f, "deviceId") << "\n";
    std::cout << "RAM cache: " << bytes_text(r["ramCacheBytes"]) << "\n";
  });
}

}  // namespace memd::cli
