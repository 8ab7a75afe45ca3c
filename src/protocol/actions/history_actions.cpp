// The allocation history's actions and their JSON.
#include "protocol/actions/history_actions.hpp"

#include "protocol/action_helpers.hpp"
#include "protocol/params.hpp"
#include "protocol/wire_encoding.hpp"
#include "service/memory_service.hpp"

namespace memd {
namespace {

using K = ParamKind;

nlohmann::json nullable(const std::string& text, bool hidden) {
  return hidden ? nlohmann::json(nullptr) : nlohmann::json(text);
}

nlohmann::json to_json(const HistoryPlace& p) {
  return {{"deviceId", p.device.to_string()}, {"memoryType", std::string(to_string(p.memory_type))}};
}

nlohmann::json to_json(const SnapshotAllocation& a) {
  return {{"allocationId", a.id ? nlohmann::json(a.id->to_string()) : nlohmann::json(nullptr)},
          {"owner", nullable(a.owner, a.hidden)},
          {"name", nullable(a.name, a.hidden)},
          {"memoryType", std::string(to_string(a.memory_type))},
          {"priority", std::string(to_string(a.priority))},
          {"sizeBytes", a.size_bytes},
          {"address", a.address},
          {"pinned", a.pinned},
          {"exportable", a.exportable},
          {"hidden", a.hidden}};
}

Result<Outcome> memory_history(MemoryService& s, const Params& p, const CallContext& ctx) {
  HistoryQuery q;
  MEMD_ASSIGN_OR_RETURN(q.device, p.device("deviceId"));
  MEMD_ASSIGN_OR_RETURN(q.owner, p.owner("owner"));
  MEMD_ASSIGN_OR_RETURN(auto limit, p.count("limit", kMaxHistoryLimit, 1));
  q.limit = limit.value_or(kDefaultHistoryLimit);
  MEMD_ASSIGN_OR_RETURN(auto entries, s.history(ctx.caller, q));
  nlohmann::json out = nlohmann::json::array();
  for (const auto& e : entries) out.push_back(to_json(e));
  return ok({{"entries", std::move(out)}, {"ringCapacity", s.history().history().capacity()}});
}

Result<Outcome> memory_history_snapshot(MemoryService& s, const Params& p, const CallContext& ctx) {
  MEMD_ASSIGN_OR_RETURN(auto id, required(p.snapshot_id("snapshotId"), "snapshotId"));
  MEMD_ASSIGN_OR_RETURN(auto snapshot, s.history_snapshot(ctx.caller, id));
  return ok(to_json(snapshot));
}

constexpr std::string_view kEntryExample =
    R"({"sequence": 7, "kind": "allocate", "time": "2026-01-01T00:00:00.000Z", "deviceId": "host:0", "allocationId": "a1b2c3d4-e5f6-4890-abcd-ef1234567890", "owner": "alice", "name": "kv-cache", "memoryType": "VRAM", "priority": "Normal", "sizeBytes": 16777216, "blockBytes": 16777216, "reservedBytes": 33554432, "allocatedBytes": 33554432, "liveAllocations": 2, "hidden": false})";

}  // namespace

nlohmann::json to_json(const HistoryEntry& e) {
  nlohmann::json j = {{"sequence", e.sequence},
                      {"kind", std::string(to_string(e.kind))},
                      {"time", iso8601(e.time)},
                      {"deviceId", e.device.to_string()},
                      {"allocationId", e.allocation ? nlohmann::json(e.allocation->to_string()) : nlohmann::json(nullptr)},
                      {"owner", nullable(e.owner, e.hidden)},
                      {"name", nullable(e.name, e.hidden)},
                      {"memoryType", std::string(to_string(e.memory_type))},
                      {"priority", std::string(to_string(e.priority))},
                      {"sizeBytes", e.size_bytes},
                      {"blockBytes", e.block_bytes ? nlohmann::json(*e.block_bytes) : nlohmann::json(nullptr)},
                      {"reservedBytes", e.reserved_bytes},
                      {"allocatedBytes", e.allocated_bytes},
                      {"liveAllocations", e.live_allocations},
                      {"hidden", e.hidden}};
  if (e.from) j["from"] = to_json(*e.from);
  if (e.to) j["to"] = to_json(*e.to);
  if (e.kind == HistoryKind::free) j["deferred"] = e.deferred;
  if (e.error) j["code"] = std::string(to_string(*e.error));
  if (e.snapshot) j["snapshotId"] = e.snapshot->to_string();
  return j;
}

nlohmann::json to_json(const OomSnapshot& s) {
  nlohmann::json history = nlohmann::json::array();
  for (const auto& e : s.history) history.push_back(to_json(e));
  nlohmann::json holders = nlohmann::json::array();
  for (const auto& h : s.holders)
    holders.push_back(
        {{"owner", nullable(h.owner, h.hidden)}, {"bytes", h.bytes}, {"allocations", h.allocations}, {"hidden", h.hidden}});
  nlohmann::json allocations = nlohmann::json::array();
  for (const auto& a : s.allocations) allocations.push_back(to_json(a));
  nlohmann::json segments = nlohmann::json::array();
  for (const auto& seg : s.segments) {
    nlohmann::json blocks = nlohmann::json::array();
    for (const auto& b : seg.blocks) {
      nlohmann::json block = {{"address", b.address}, {"sizeBytes", b.size}, {"state", b.state}};
      block["allocation"] = b.allocation ? to_json(*b.allocation) : nlohmann::json(nullptr);
      if (b.state == "slab") block["slabAllocations"] = b.slab_allocations;
      blocks.push_back(std::move(block));
    }
    segments.push_back({{"memoryType", std::string(to_string(seg.memory_type))},
                        {"address", seg.address},
                        {"sizeBytes", seg.size},
                        {"mappedBytes", seg.mapped_bytes},
                        {"kind", seg.kind},
                        {"liveBytes", seg.live_bytes},
                        {"freeBytes", seg.free_bytes},
                        {"largestFreeBytes", seg.largest_free},
                        {"blockCount", seg.block_count},
                        {"blocks", std::move(blocks)}});
  }
  nlohmann::json pools = nlohmann::json::object();
  for (const auto& [type, stats] : s.pools) pools[std::string(to_string(type))] = to_json(stats);
  const auto& r = s.request;
  return {{"snapshotId", s.id.to_string()},
          {"time", iso8601(s.time)},
          {"request",
           {{"owner", r.owner},
            {"name", r.name},
            {"deviceId", r.device.to_string()},
            {"memoryType", std::string(to_string(r.memory_type))},
            {"priority", std::string(to_string(r.priority))},
            {"sizeBytes", r.size_bytes},
            {"code", std::string(to_string(r.error.code))},
            {"message", r.error.message},
            {"refusedBy", r.refused_by}}},
          {"deviceTotalBytes", s.device_total_bytes},
          {"largestFreeBlockBytes", s.largest_free_block()},
          {"holders", std::move(holders)},
          {"allocations", std::move(allocations)},
          {"allocationsOmitted", s.allocations_omitted},
          {"history", std::move(history)},
          {"historyDroppedEntries", s.history_dropped},
          {"segments", std::move(segments)},
          {"blocksOmitted", s.blocks_omitted},
          {"pools", std::move(pools)}};
}

void append_history_actions(std::vector<Action>& t) {
  constexpr auto Get = HttpMethod::Get;
  static const std::string history_example = std::string(R"({"entries": [)") + std::string(kEntryExample) +
                                             R"(], "ringCapacity": 4096})";
  t.push_back(Action{
      "memory_history",
      "Recent allocator events, oldest first: allocate, free (deferred: true while a transfer or an importer still "
      "holds the memory), move (from/to), evict (the model manager) and failed (code; an out_of_memory names its "
      "snapshotId). Each entry carries the device's pool state just after it: reservedBytes, allocatedBytes "
      "(block-rounded), liveAllocations — the pools' running counters, so a small block freed into a thread's "
      "cache shows there once the cache gives it back. sizeBytes is as requested, blockBytes the block that holds it (null when "
      "not from a pool). Each device keeps its newest entries in a ring of ringCapacity (memd serve "
      "--history-ring); without deviceId the rings are merged by sequence. Only your own owner's entries, unless "
      "you are the admin, who may also name an owner.",
      {{Get, "/api/memory/history"}},
      {{"deviceId", K::DeviceId, false, "Only this device (cuda:N, host:N or cpu)."},
       {"owner", K::Owner, false, "Only this owner's entries (another owner's: the admin only)."},
       {"limit", K::Count, false, "The newest this many entries (1..4096, default 100).", false, kMaxHistoryLimit, 1}},
      R"({"deviceId": "host:0", "limit": 20})",
      history_example,
      memory_history});
  t.push_back(Action{
      "memory_history_snapshot",
      "What a device looked like when a request failed with out_of_memory (the error's snapshotId; memd history "
      "ID): the request and who refused it (refusedBy: pool — the reclaim ladder gave up — or pressure — a "
      "Low-priority request at Critical), the device's history ring then (the failed entry last), its live "
      "allocations largest first and the bytes each owner held (holders), the block map of its pools (segments "
      "with liveBytes, freeBytes, largestFreeBytes and their first blocks; each allocated block names the "
      "allocation that starts there, a slab span counts those inside it) and pool statistics. Caps: 4096 blocks "
      "and 4096 allocations (allocationsOmitted, blocksOmitted say how many were left out); memd keeps the newest "
      "16 snapshots (64 MiB at most), older ids answer not_found. Only the failing request's owner or the admin "
      "may read it; the owner sees other owners' allocations, blocks and entries by size only (hidden: true, "
      "owner, name and allocationId null, their holders folded into one hidden row).",
      {{Get, "/api/memory/history/{snapshotId}"}},
      {{"snapshotId", K::OomSnapshotId, true, "The snapshotId of an out_of_memory error."}},
      R"({"snapshotId": "c0ffee00-1234-4abc-8def-0123456789ab"})",
      R"({"snapshotId": "c0ffee00-1234-4abc-8def-0123456789ab", "time": "2026-01-01T00:00:00.000Z", "request": {"owner": "alice", "name": "activations", "deviceId": "host:0", "memoryType": "VRAM", "priority": "Normal", "sizeBytes": 67108864, "code": "out_of_memory", "message": "…", "refusedBy": "pool"}, "deviceTotalBytes": 67108864, "largestFreeBlockBytes": 2097152, "holders": [{"owner": "alice", "bytes": 33554432, "allocations": 2, "hidden": false}], "allocations": [], "allocationsOmitted": 0, "history": [], "historyDroppedEntries": 0, "segments": [{"memoryType": "VRAM", "address": 140000000000000, "sizeBytes": 67108864, "mappedBytes": 35651584, "kind": "arena", "liveBytes": 33554432, "freeBytes": 2097152, "largestFreeBytes": 2097152, "blockCount": 3, "blocks": []}], "blocksOmitted": 0, "pools": {}})",
      memory_history_snapshot});
}

}  // namespace memd
