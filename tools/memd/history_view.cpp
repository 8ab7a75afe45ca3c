// `memd history`: the recent-history table and the out-of-memory snapshot
// report (history_view.hpp).
#include "history_view.hpp"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "memd/size.hpp"
#include "table.hpp"

namespace memd::cli {
namespace {

using json = nlohmann::json;

// The daemon's answer is trusted to be JSON, not to have every key or type:
// these readers never throw, so a surprising answer prints "-", not a crash.
const json& field(const json& v, const char* key) {
  static const json none;
  if (!v.is_object()) return none;
  auto it = v.find(key);
  return it == v.end() ? none : *it;
}

json object_at(const json& v, const char* key) {
  const json& f = field(v, key);
  return f.is_object() ? f : json::object();
}

json array_at(const json& v, const char* key) {
  const json& f = field(v, key);
  return f.is_array() ? f : json::array();
}

bool flag(const json& v, const char* key) {
  const json& f = field(v, key);
  return f.is_boolean() && f.get<bool>();
}

std::string str(const json& v, const char* key) {
  if (!v.is_object()) return "-";
  auto it = v.find(key);
  if (it == v.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::uint64_t num(const json& v, const char* key) {
  const json& f = field(v, key);
  return f.is_number_unsigned() ? f.get<std::uint64_t>() : 0;
}

std::string size(const json& v, const char* key) {
  const json& f = field(v, key);
  return f.is_number_unsigned() ? format_size(f.get<std::uint64_t>()) : "-";
}

// "2026-12-06T21:04:02.123Z" → "21:04:02.123": a history spans minutes.
std::string clock_time(const json& v) {
  const std::string t = str(v, "time");
  return t.size() >= 23 ? t.substr(11, 12) : t;
}

std::string owner_of(const json& v) { return flag(v, "hidden") ? "(other)" : str(v, "owner"); }

std::string place(const json& p) { return str(p, "deviceId") + " " + str(p, "memoryType"); }

// What an entry's last column says: where a move went, why a request failed.
std::string note(const json& e) {
  std::string out;
  if (!field(e, "from").is_null() && !field(e, "to").is_null())
    out = place(field(e, "from")) + " -> " + place(field(e, "to"));
  if (flag(e, "deferred")) out = "deferred (held)";
  if (!field(e, "code").is_null()) {
    out += out.empty() ? "" : "; ";
    out += str(e, "code");
    if (!field(e, "snapshotId").is_null()) out += " snapshot " + str(e, "snapshotId");
  }
  return out;
}

void add_entries(Table& t, const json& entries) {
  for (const auto& e : entries)
    t.add({str(e, "sequence"), clock_time(e), str(e, "kind"), str(e, "deviceId"), str(e, "allocationId"),
           owner_of(e), str(e, "name"), size(e, "sizeBytes"), size(e, "reservedBytes"), size(e, "allocatedBytes"),
           str(e, "liveAllocations"), note(e)});
}

Table entry_table() {
  return Table({"SEQ", "TIME", "KIND", "DEVICE", "ALLOCATION", "OWNER", "NAME", "SIZE", "RESERVED", "ALLOCATED",
                "LIVE", "NOTE"});
}

std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::string render_history(const json& answer) {
  const json entries = array_at(answer, "entries");
  if (entries.empty()) return "no history yet\n";
  Table t = entry_table();
  add_entries(t, entries);
  return t.render() + std::to_string(entries.size()) + " entries (each device keeps its newest " +
         str(answer, "ringCapacity") + ")\n";
}

std::string render_snapshot(const json& s, std::size_t last_entries) {
  std::string out;
  const json request = object_at(s, "request");
  const std::uint64_t wanted = num(request, "sizeBytes");
  const std::uint64_t largest = num(s, "largestFreeBlockBytes");
  out += "snapshot " + str(s, "snapshotId") + " taken " + str(s, "time") + "\n";
  out += "request:  " + size(request, "sizeBytes") + " " + str(request, "memoryType") + " on " +
         str(request, "deviceId") + " for " + str(request, "owner");
  if (field(request, "name").is_string() && !field(request, "name").get<std::string>().empty()) out += " (\"" + str(request, "name") + "\")";
  out += ", priority " + str(request, "priority") + "\n";
  out += "refused:  " + str(request, "code") + " by the " +
         (str(request, "refusedBy") == "pressure" ? std::string("pressure policy (Low priority at Critical)")
                                                  : std::string("allocator (reclaim gave up)")) +
         "\n          " + str(request, "message") + "\n";

  // Device totals from the pool statistics.
  std::uint64_t reserved = 0, allocated = 0, free_bytes = 0;
  const json pools = object_at(s, "pools");  // named: items() of a temporary dangles in a range-for
  for (const auto& [type, p] : pools.items()) {
    reserved += num(p, "reservedBytes");
    allocated += num(p, "allocatedBytes");
    free_bytes += num(p, "freeBytes");
  }
  out += "device:   " + size(s, "deviceTotalBytes") + " total; memd reserved " + format_size(reserved) +
         ", allocated " + format_size(allocated) + ", free in its pools " + format_size(free_bytes) + "\n";
  out += "largest free block " + format_size(largest) + " vs the request's " + format_size(wanted) +
         (largest >= wanted ? " (a block would fit: a limit or the device's capacity refused it)\n"
                            : " (no mapped free block is large enough, and mapping more would pass the "
                              "device's capacity or limit)\n");

  const json holders = array_at(s, "holders");
  if (!holders.empty()) {
    out += "\ntop holders at that moment:\n";
    Table t({"OWNER", "BYTES", "ALLOCATIONS"});
    std::size_t shown = 0;
    for (const auto& h : holders) {
      if (shown++ == 10) break;
      t.add({flag(h, "hidden") ? "(other owners)" : str(h, "owner"), size(h, "bytes"),
             str(h, "allocations")});
    }
    out += t.render();
  }

  const json allocations = array_at(s, "allocations");
  if (!allocations.empty()) {
    out += "\nlargest allocations:\n";
    Table t({"ALLOCATION", "OWNER", "NAME", "SIZE", "TYPE", "PRIORITY"});
    std::size_t shown = 0;
    for (const auto& a : allocations) {
      if (shown++ == 10) break;
      t.add({str(a, "allocationId"), owner_of(a), str(a, "name"), size(a, "sizeBytes"), str(a, "memoryType"),
             str(a, "priority")});
    }
    out += t.render();
    if (allocations.size() > 10 || num(s, "allocationsOmitted") > 0)
      out += "(" + std::to_string(allocations.size() + num(s, "allocationsOmitted") - std::min<std::size_t>(10, allocations.size())) +
             " more; --json shows them)\n";
  }

  const json history = array_at(s, "history");
  out += "\nlast " + std::to_string(std::min(last_entries, history.size())) + " of " +
         std::to_string(history.size()) + " history entries";
  if (num(s, "historyDroppedEntries") > 0)
    out += " (" + std::to_string(num(s, "historyDroppedEntries")) + " older ones dropped from the ring)";
  out += ":\n";
  if (!history.empty() && last_entries > 0) {
    Table t = entry_table();
    const std::size_t first = history.size() > last_entries ? history.size() - last_entries : 0;
    json tail = json::array();
    for (std::size_t i = first; i < history.size(); ++i) tail.push_back(history[i]);
    add_entries(t, tail);
    out += t.render();
  }

  const json segments = array_at(s, "segments");
  out += "\nblock map: " + std::to_string(segments.size()) + " segments\n";
  if (!segments.empty()) {
    Table t({"SEGMENT", "TYPE", "KIND", "SIZE", "MAPPED", "LIVE", "FREE", "LARGEST HOLE", "BLOCKS"});
    for (const auto& seg : segments)
      t.add({hex(num(seg, "address")), str(seg, "memoryType"), str(seg, "kind"), size(seg, "sizeBytes"),
             size(seg, "mappedBytes"), size(seg, "liveBytes"), size(seg, "freeBytes"), size(seg, "largestFreeBytes"),
             str(seg, "blockCount")});
    out += t.render();
    out += "(an arena reserves address space: only MAPPED bytes are backed, so FREE and LARGEST HOLE count "
           "address ranges that may still need mapping)\n";
  }
  if (num(s, "blocksOmitted") > 0)
    out += std::to_string(num(s, "blocksOmitted")) + " blocks left out of the snapshot (its cap)\n";
  return out;
}

}  // namespace memd::cli
